"""The systemd unit for ``fleetcast-agent run``, and the files ``install-service`` writes.

The agent runs as its own system user (``fleetcast`` by default), keeps its
state in ``/var/lib/fleetcast-agent`` (systemd's StateDirectory, 0700), serves
its local scoring API on ``/run/fleetcast-agent/agent.sock`` (RuntimeDirectory,
0750: members of the user's group may score), logs to the journal, and is
restarted whatever ends it. Its settings come from an environment file
(``/etc/fleetcast/agent.env``, FLEETCAST_AGENT_* variables).

There is no reload: the agent reads its settings once at start, and models
change through deploy commands or ``fleetcast-agent install``, never through a
signal. So the unit has no ExecReload; ``systemctl restart`` is the way to apply
a new environment file, and a SIGHUP, like SIGTERM, ends the process (systemd
then restarts it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "fleetcast-agent.service"
STATE_DIR = Path("/var/lib/fleetcast-agent")
SOCKET = Path("/run/fleetcast-agent/agent.sock")
ENV_FILE = Path("/etc/fleetcast/agent.env")


def default_executable() -> Path:
    """The ``fleetcast-agent`` entry point beside the running interpreter (absolute path)."""
    return Path(sys.executable).absolute().parent / "fleetcast-agent"


@dataclass(frozen=True)
class ServiceOptions:
    executable: Path
    user: str = "fleetcast"
    env_file: Path = ENV_FILE


def render_unit(options: ServiceOptions) -> str:
    """The unit file's text."""
    return f"""\
# Fleetcast edge agent; written by `fleetcast-agent install-service`.
# Settings: {options.env_file} (FLEETCAST_AGENT_* variables). No reload: the agent
# reads its settings once, so `systemctl restart fleetcast-agent` applies changes.
[Unit]
Description=Fleetcast edge agent
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={options.user}
Group={options.user}
ExecStart={options.executable} run
EnvironmentFile={options.env_file}
Environment=FLEETCAST_AGENT_STATE_DIR={STATE_DIR}
Environment=FLEETCAST_AGENT_LISTEN=unix:{SOCKET}
Environment=PYTHONUNBUFFERED=1
StateDirectory={STATE_DIR.name}
StateDirectoryMode=0700
RuntimeDirectory={SOCKET.parent.name}
RuntimeDirectoryMode=0750
Restart=always
RestartSec=5
TimeoutStopSec=30
StandardOutput=journal
StandardError=journal
SyslogIdentifier=fleetcast-agent
UMask=0077

# Hardening. Devices stay visible (PrivateDevices=no): accelerators such as a
# Coral Edge TPU or a Jetson GPU are device nodes. No MemoryDenyWriteExecute:
# runtimes may generate kernels at run time.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=multi-user.target
"""


def render_env(values: Mapping[str, str]) -> str:
    """The environment file: one FLEETCAST_AGENT_<NAME>=value line per setting."""
    lines = ["# fleetcast-agent settings (see docs/install.md); read at start."]
    lines += [f"FLEETCAST_AGENT_{name.upper()}={value}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def next_steps(options: ServiceOptions, unit_path: Path) -> str:
    """What the operator runs after the files are written (as root)."""
    user = options.user
    return f"""\
wrote {unit_path} and {options.env_file}; then, as root:
  id {user} >/dev/null 2>&1 || useradd --system --user-group --no-create-home \\
      --shell /usr/sbin/nologin {user}
  install -d -o {user} -g {user} -m 0700 {STATE_DIR}
  sudo -u {user} {options.executable} enroll --server HOST:PORT --token TOKEN \\
      --device-id DEVICE_ID --state-dir {STATE_DIR}
  systemctl daemon-reload && systemctl enable --now {UNIT_NAME}
  journalctl -u {UNIT_NAME} -f"""
