"""Run every ``benchmarks/bench_*.py`` (or the ones named) and print their markdown."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import pkgutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import benchmarks

logger = logging.getLogger("benchmarks")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def discover() -> list[str]:
    """The benchmark names, ``compile`` for ``bench_compile.py``, sorted."""
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"which to run (default: all of {available})")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("-v", "--verbose", action="store_true", help="log the tool chains' steps")
    args, extra = parser.parse_known_args(argv)  # the rest: the one named benchmark's options
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    unknown = [n for n in args.names if n.removeprefix("bench_") not in available]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    selected = [n.removeprefix("bench_") for n in args.names] or available
    if extra and len(selected) != 1:
        parser.error(f"options {extra} need exactly one benchmark named")
    for name in selected:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        logger.info("running %s", name)
        if extra and "argv" not in inspect.signature(module.run).parameters:
            parser.error(f"unrecognized arguments: {' '.join(extra)} ({name} takes no options)")
        markdown = module.run(args.results_dir, extra) if extra else module.run(args.results_dir)
        logger.info("%s done in %.0f s", name, time.perf_counter() - started)
        print(markdown, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
