"""Re-run only issue #8's real-world part of the compile benchmark and splice it into
the last full results (``python -m benchmarks.realworld_only``): for iterating on the
transformer without the hour of issue #2's models on a loaded host. The issue #2
tables keep the figures (and date) of the run that made them."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_compile import PROFILES_DIR, render
from benchmarks.common import write_results
from benchmarks.realworld_score import render as render_realworld
from benchmarks.realworld_score import run_realworld
from control_plane.core.hardware import load_profiles
from control_plane.signing import generate_keypair
from edge_agent.host import detect_host

RESULTS = Path(__file__).resolve().parent / "results"


def main(results_dir: Path = RESULTS) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = json.loads((results_dir / "compile.json").read_text())
    host = detect_host()
    profiles = {
        p.id: p for p in load_profiles(PROFILES_DIR).values() if not p.host_mismatches(host)
    }
    with tempfile.TemporaryDirectory(prefix="fleetcast-bench-") as tmp:
        key, _ = generate_keypair(Path(tmp) / "keys")
        data["realworld"] = run_realworld(profiles, key)
    markdown = render(data) + "\n\n" + "\n\n".join(render_realworld(data["realworld"]))
    write_results(results_dir, "compile", markdown, data)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
