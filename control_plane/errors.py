"""Errors of the control plane.

ControlPlaneError
├── InvalidInput      a request, file or argument is malformed (names what and where)
│   └── ProfileError  a hardware profile file does not load (names file and field)
├── NotFound          a named thing does not exist
├── Conflict          the request clashes with current state
├── Unauthenticated   no, unknown or revoked credential
├── PermissionDenied  a credential acting beyond its rights (another device, operator routes)
├── ResourceExhausted a device over its quota or call limit (retry later)
├── Unavailable       the store is busy or locked (retry later)
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
