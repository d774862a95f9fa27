"""The on-device library and the handlers built on it never import the agent daemon
(nor the control plane, nor torch): a function ships the library only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DAEMON = (
    "edge_agent.agent",
    "edge_agent.install",
    "edge_agent.slots",
    "edge_agent.watchlist",
    "edge_agent.commands",
    "edge_agent.local_api",
    "edge_agent.cli",
    "control_plane",
    "torch",
)
LIBRARY = (
    "edge_agent.runtime",
    "edge_agent.package",
    "edge_agent.reporting",
    "edge_agent.core.telemetry",
    "functions.core",
    "functions.aws_lambda",
    "functions.openfaas",
    "functions.gcf",
    "functions.knative",
)


def _imported_after(modules: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout))


def test_library_imports_nothing_of_the_daemon() -> None:
    loaded = _imported_after(LIBRARY)
    assert "edge_agent.reporting" in loaded and "functions.aws_lambda" in loaded
    bad = [m for m in loaded if m.split(".")[0] in DAEMON or m in DAEMON]
    bad += [m for m in loaded if any(m == d or m.startswith(d + ".") for d in DAEMON)]
    assert not bad, f"the on-device library imported daemon modules: {sorted(set(bad))}"
