"""Size limits of what a device sends up, written once for both transports (no I/O).

The control plane refuses an upload over :data:`MAX_UPLOAD_BYTES` (the gRPC
server's message limit; the MQTT broker's ``message_size_limit`` is set from
the same number). An outbox message travels as a JSON string inside the
upload, which on MQTT is JSON again, so every byte may be escaped once: a
message of at most :data:`MAX_MESSAGE_BYTES`, and a batch of at most
:data:`BATCH_BYTES` of messages, always fits in one upload with room for the
envelope. Windows over the message limit are trimmed by :func:`fit_window`,
captures first, and say so in ``captures_dropped`` and ``trimmed``.
"""

from __future__ import annotations

import json
from typing import Any

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
"""The most the control plane accepts in one upload (gRPC message, MQTT payload)."""
ENVELOPE_BYTES = 64 * 1024
"""Room for the upload's own framing (item keys, sequence numbers, topic)."""
BATCH_BYTES = (MAX_UPLOAD_BYTES - ENVELOPE_BYTES) // 2
"""Sum of the outbox messages' sizes in one upload (each byte may be escaped once)."""
MAX_MESSAGE_BYTES = BATCH_BYTES
"""The largest outbox message: one that always fits in an upload on its own."""
MAX_BATCH_MESSAGES = 100

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
"""Cap on a package's manifest entry, read (and signature-checked) before anything else."""
MAX_MODEL_BYTES = 1024 * 1024 * 1024
"""Cap on a package's model entry; it must also equal the signed manifest's ``size_bytes``."""
MAX_PACKAGE_BYTES = MAX_MODEL_BYTES + MAX_MANIFEST_BYTES + 1024 * 1024
"""Cap on a whole package file, downloaded or handed to ``LoadModel``."""


def encoded_size(payload: dict[str, Any]) -> int:
    """Bytes of ``payload`` as the outbox stores it (compact JSON, UTF-8)."""
    return len(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def fit_window(window: dict[str, Any], limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """``window`` cut down to ``limit`` bytes: captures go first (newest first), counted.

    A window still over the limit without captures (histograms of a model with
    an enormous signature) loses its histograms, and ``trimmed`` names what went.
    """
    size = encoded_size(window)
    if size <= limit:
        return window
    out = dict(window)
    captures = list(out.get("captures") or [])
    dropped = 0
    trimmed: list[str] = []
    while captures and size > limit:
        # drop enough at once: each capture's share, not one re-encode per capture
        excess = size - limit
        cut = 0
        freed = 0
        while captures and freed < excess:
            freed += encoded_size(captures.pop())
            cut += 1
        dropped += cut
        out["captures"] = captures
        size = encoded_size(out)
    if dropped:
        out["captures_dropped"] = int(out.get("captures_dropped", 0)) + dropped
        trimmed.append("captures")
    for key in ("inputs", "outputs"):
        if size > limit and out.get(key):
            out[key] = []
            trimmed.append(key)
            size = encoded_size(out)
    out["trimmed"] = trimmed
    return out
