"""Fleetcast's benchmarks: ``python -m benchmarks [name ...]`` (what ``make bench`` runs).

Each ``benchmarks/bench_<name>.py`` exposes ``run(results_dir: Path) -> str``:
it writes its figures to ``results_dir/<name>.{md,json}`` and returns the
markdown, which the runner prints.
"""
