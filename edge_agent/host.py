"""Detect this host's OS, architecture, CPU features and installed runtimes."""

from __future__ import annotations

import functools
import importlib.util
import logging
import platform
from pathlib import Path

from edge_agent.core.host import HostInfo, normalise_arch, parse_cpuinfo_flags

logger = logging.getLogger(__name__)


@functools.cache
def detect_host() -> HostInfo:
    cpuinfo = Path("/proc/cpuinfo")
    flags = (
        parse_cpuinfo_flags(cpuinfo.read_text().splitlines()) if cpuinfo.exists() else frozenset()
    )
    runtimes: set[str] = set()
    providers: frozenset[str] = frozenset()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        runtimes.add("onnxruntime")
        providers = frozenset(onnxruntime.get_available_providers())
    if importlib.util.find_spec("ai_edge_litert") is not None:
        runtimes.add("litert")
    accelerators = {"none"}
    if "CUDAExecutionProvider" in providers:
        accelerators.add("cuda")
    return HostInfo(
        os=platform.system().lower(),
        arch=normalise_arch(platform.machine()),
        cpu_features=flags,
        runtimes=frozenset(runtimes),
        execution_providers=providers,
        accelerators=frozenset(accelerators),
    )
