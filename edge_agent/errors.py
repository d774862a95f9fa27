"""Errors raised on the device side.

EdgeError
├── PackageError          a package failed a check (``check`` names which)
├── IncompatibleProfile   the package targets another kind of host
├── InvalidInput          a scoring request does not match the model's signature
├── ScoringError          the runtime failed while scoring valid inputs
├── RuntimeUnavailable    the runtime a package needs is not installed here
├── InstallError          an install step failed (``step`` names which)
└── NotFound              no such model on this device
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the edge agent raises on purpose."""


class PackageError(EdgeError):
    """A package failed one of its checks: format, hash, signature, profile or release."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check} check failed: {message}")
        self.check = check
        self.detail = message


class IncompatibleProfile(PackageError):
    def __init__(self, message: str) -> None:
        super().__init__("profile", message)


class InvalidInput(EdgeError):
    """A prediction request does not match the manifest's input signature."""


class RuntimeUnavailable(EdgeError):
    """The runtime named by a package cannot be loaded on this host."""


class ScoringError(EdgeError):
    """The runtime raised while scoring inputs that passed validation."""


class InstallError(EdgeError):
    """An install step failed; the active slot keeps serving."""

    def __init__(self, step: str, message: str, check: str | None = None) -> None:
        which = f" ({check} check)" if check and check != step else ""
        super().__init__(f"install failed at {step}{which}: {message}")
        self.step = step
        self.check = check
        self.detail = message


class NotFound(EdgeError):
    """No model of that name is installed or loaded here."""
