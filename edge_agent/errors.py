"""Errors raised on the device side.

EdgeError
├── PackageError          a package failed a check (``check`` names which)
├── IncompatibleProfile   the package targets another kind of host
├── InvalidInput          a scoring request does not match the model's signature
└── RuntimeUnavailable    the runtime a package needs is not installed here
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
