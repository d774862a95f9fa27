"""MQTT names both sides agree on: the topic tree and the broker login of a device.

A device logs in to the broker as ``devices/<device id>``. Device ids never
contain ``/``, so no device login can equal an operator-side login such as the
control plane's own (which has no ``devices/`` prefix), and the broker's ACL
pattern ``fleetcast/v1/%u/...`` expands to the device's own topics under
``fleetcast/v1/devices/<device id>/``.
"""

from __future__ import annotations

TOPIC_ROOT = "fleetcast/v1/devices"
DEVICE_LOGIN_PREFIX = "devices/"
ACL_ROOT = TOPIC_ROOT.removesuffix("/devices")  # + "/%u" == TOPIC_ROOT + "/<device id>"


def device_login(device_id: str) -> str:
    """The broker username of a device."""
    return DEVICE_LOGIN_PREFIX + device_id


def device_prefix(device_id: str) -> str:
    """The topic prefix under which everything of one device lives."""
    return f"{TOPIC_ROOT}/{device_id}"
