"""The key-rotation message: how a fleet learns a new package signing key (pure, no I/O).

The control plane sends every device a ``rotate_key`` command whose body is

```
{"rotation": {"key_id": …, "public_key_pem": …, "previous_key_id": …, "issued_at": …},
 "signed_by": "<key id of the signing key>", "signature": "<hex ed25519 signature>"}
```

The signature covers :meth:`KeyRotation.signed_bytes` (the canonical JSON of
``rotation``) and is made with the *old* private key: a device accepts the new
key only if a key it already trusts signed the message
(``edge_agent/trust.py``), so a stolen broker login cannot plant a key.
Both sides import this module (the control plane to sign, the agent to check).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.errors import EdgeError

COMMAND_KIND = "rotate_key"
KEY_ID = r"^[0-9a-f]{16}$"


class KeyRotationRefused(EdgeError):
    """A rotation message the device does not accept; the message says why."""


class KeyRotation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str = Field(pattern=KEY_ID, description="the new key's id (sha256 of its raw bytes)")
    public_key_pem: str = Field(min_length=1, max_length=4096)
    previous_key_id: str = Field(pattern=KEY_ID)
    issued_at: float

    def signed_bytes(self) -> bytes:
        """What the old key signs: canonical JSON (sorted keys, no spaces)."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()


class SignedRotation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rotation: KeyRotation
    signed_by: str = Field(pattern=KEY_ID)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="ed25519, hex")

    def command_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_rotation(body: Any) -> SignedRotation:
    """A command body as a :class:`SignedRotation`; KeyRotationRefused naming the bad field."""
    try:
        return SignedRotation.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise KeyRotationRefused(f"key rotation refused: field {where}: {first['msg']}") from None
