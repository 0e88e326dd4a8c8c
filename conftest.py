"""Test-wide settings. Hypothesis runs without per-example deadlines: CI machines are shared and noisy."""

from hypothesis import settings

settings.register_profile("recis", deadline=None, print_blob=True)
settings.load_profile("recis")


def pytest_configure(config):
    """pytest-benchmark: each benchmark runs warm-up calls before it calibrates and is timed. Cold, a
    first call (first allocations, lazy initialisation) can take several times a warm one, and
    pytest-benchmark then sets the number of rounds from it. `--benchmark-warmup` given wins."""
    given = any(a.startswith("--benchmark-warmup") for a in config.invocation_params.args)
    if hasattr(config.option, "benchmark_warmup") and not given:
        config.option.benchmark_warmup = True
        config.option.benchmark_warmup_iterations = 5


def pytest_terminal_summary(terminalreporter, config):
    """After a pytest-benchmark run, print each group's speed-up over its baseline (medians).

    A benchmark marks its role with `benchmark.extra_info["role"] = "baseline" | "ours"`.
    """
    session = getattr(config, "_benchmarksession", None)
    benches = [b for b in getattr(session, "benchmarks", []) if b]
    groups: dict[str, list] = {}
    for b in benches:
        groups.setdefault(b.group, []).append(b)
    lines = []
    for group, members in groups.items():
        base = [b for b in members if b.extra_info.get("role") == "baseline"]
        if len(base) != 1:
            continue
        for b in members:
            if b is not base[0]:
                ratio = base[0].stats.median / b.stats.median
                lines.append(f"{group}: {b.name} is {ratio:.2f}x the baseline {base[0].name} (median)")
    if lines:
        terminalreporter.section("speed-up vs baseline, same run")
        for line in lines:
            terminalreporter.write_line(line)
