"""Prints what the adversarial cases came to, per area, after the run."""

from .harness import LONG, summary_lines


def pytest_terminal_summary(terminalreporter, config):
    lines = summary_lines()
    if lines:
        terminalreporter.section("adversarial cases (" + ("long" if LONG else "quick; make fuzz runs more") + ")")
        for line in lines:
            terminalreporter.write_line(line)
