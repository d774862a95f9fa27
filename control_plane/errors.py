"""Errors of the control plane.

ControlPlaneError
├── InvalidInput      a request, file or argument is malformed (names what and where)
│   └── ProfileError  a hardware profile file does not load (names file and field)
├── NotFound          a named thing does not exist
├── Conflict          the request clashes with current state
│   └── LifecycleError  a version's stage cannot move that way (names from → to)
├── Unauthenticated   no, unknown or revoked credential
├── PermissionDenied  a credential acting beyond its rights (another device, operator routes)
├── ResourceExhausted a device over its quota or call limit (retry later)
├── Unavailable       the store is busy or locked (retry later)
│   └── StoreUnavailable  the database cannot be reached, or stays locked (names the server)
└── CompileError      a model cannot be compiled for a target (names the op or step)
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base of every error the control plane raises on purpose."""


class InvalidInput(ControlPlaneError):
    pass


class ProfileError(InvalidInput):
    pass


class NotFound(ControlPlaneError):
    pass


class Conflict(ControlPlaneError):
    pass


class Unauthenticated(ControlPlaneError):
    pass


class PermissionDenied(ControlPlaneError):
    pass


class ResourceExhausted(ControlPlaneError):
    pass


class Unavailable(ControlPlaneError):
    pass


class CompileError(ControlPlaneError):
    pass


class LifecycleError(Conflict):
    """A lifecycle transition that is not allowed; ``current`` and ``target`` name it."""

    def __init__(self, current: str, target: str, message: str) -> None:
        super().__init__(message)
        self.current = current
        self.target = target


class StoreUnavailable(Unavailable):
    """The store's database cannot be reached or stays busy; the request may be retried."""
