"""Test-wide settings. Hypothesis runs without per-example deadlines: CI machines are shared and noisy."""

from hypothesis import settings

settings.register_profile("recis", deadline=None, print_blob=True)
settings.load_profile("recis")
