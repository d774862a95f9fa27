"""What a host is, and whether a package's profile fits it (pure logic)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.core.device_manifest import AnyProfileRef

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def normalise_arch(arch: str) -> str:
    arch = arch.lower()
    return _ARCH_ALIASES.get(arch, arch)


@dataclass(frozen=True)
class HostInfo:
    """The facts about this device that a package must fit.

    ``cpu_features`` uses the Linux /proc/cpuinfo flag names (avx2, avx512_vnni,
    asimd, asimddp, ...). ``accelerators`` always contains "none" (the CPU).
    """

    os: str
    arch: str
    cpu_features: frozenset[str]
    runtimes: frozenset[str]
    execution_providers: frozenset[str] = frozenset()
    accelerators: frozenset[str] = field(default_factory=lambda: frozenset({"none"}))


def profile_mismatches(profile: AnyProfileRef, host: HostInfo, runtime: str) -> list[str]:
    """Every reason the package built for ``profile`` cannot run on ``host``; empty if it can."""
    problems: list[str] = []
    if profile.os != host.os:
        problems.append(f"os {profile.os!r} != host {host.os!r}")
    if normalise_arch(profile.arch) != normalise_arch(host.arch):
        problems.append(f"arch {profile.arch!r} != host {host.arch!r}")
    missing = sorted(set(profile.cpu_features) - host.cpu_features)
    if missing:
        problems.append(f"host lacks CPU features {', '.join(missing)}")
    if profile.accelerator not in host.accelerators:
        problems.append(f"host has no {profile.accelerator!r} accelerator")
    if runtime not in host.runtimes:
        problems.append(f"runtime {runtime!r} is not installed on this host")
    if profile.execution_providers and runtime == "onnxruntime":
        if not set(profile.execution_providers) & host.execution_providers:
            problems.append(
                "none of the execution providers "
                f"{', '.join(profile.execution_providers)} is available"
            )
    return problems


def parse_cpuinfo_flags(lines: Iterable[str]) -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo text (x86 'flags', arm 'Features')."""
    flags: set[str] = set()
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)
