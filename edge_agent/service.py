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

import click

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


@click.command("install-service")
@click.option(
    "--unit-dir",
    default="/etc/systemd/system",
    show_default=True,
    type=click.Path(path_type=Path),
)
@click.option("--env-file", default=str(ENV_FILE), show_default=True,
              type=click.Path(path_type=Path))  # fmt: skip
@click.option("--user", default="fleetcast", show_default=True, help="The service's own user.")
@click.option("--executable", type=click.Path(path_type=Path),
              help="fleetcast-agent to run (default: the one beside this Python).")  # fmt: skip
@click.option("--server", help="grpc://HOST:PORT or mqtt://HOST:PORT")
@click.option("--device-id")
@click.option("--public-key", type=click.Path(path_type=Path), help="Trusted package key (PEM).")
@click.option("--print", "print_only", is_flag=True, help="Print the unit; write nothing.")
@click.option("--force", is_flag=True, help="Replace an existing environment file.")
def install_service(
    unit_dir: Path,
    env_file: Path,
    user: str,
    executable: Path | None,
    server: str | None,
    device_id: str | None,
    public_key: Path | None,
    print_only: bool,
    force: bool,
) -> None:
    """Write the systemd unit (and its environment file) that runs `fleetcast-agent run`."""
    options = ServiceOptions(
        executable=(executable or default_executable()).absolute(),
        user=user,
        env_file=env_file.absolute(),
    )
    unit = render_unit(options)
    if print_only:
        click.echo(unit, nl=False)
        return
    unit_path = unit_dir / UNIT_NAME
    unit_path.parent.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(unit)
    if env_file.exists() and not force:
        click.echo(f"kept the existing {env_file} (--force replaces it)", err=True)
    else:
        values = {"server": server, "device_id": device_id,
                  "public_key": str(public_key.absolute()) if public_key else None}  # fmt: skip
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text(render_env({k: v for k, v in values.items() if v}))
        env_file.chmod(0o644)
    click.echo(next_steps(options, unit_path))
