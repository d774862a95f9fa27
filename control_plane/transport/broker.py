"""An embedded mosquitto broker with per-device credentials and ACLs.

The control plane writes the broker's files itself (``mosquitto.conf``,
``passwd``, ``acl``) in a directory of its data
dir and starts mosquitto on a loopback port. Enrolling a device adds its
login; revoking removes it and sends SIGHUP, on which mosquitto re-checks every
connected client and drops the ones whose login is gone.

Device logins live in their own namespace: a device's username is
``devices/<device id>`` (``edge_agent/core/topics.py``). Device ids never
contain ``/``, so no enrollment can produce an operator-side login such as the
control plane's own; :meth:`MosquittoBroker.add_device` also refuses to replace
any login that exists, and :meth:`check_login_free` lets enrollment refuse such
an id up front. The ACL pattern ``fleetcast/v1/%u/<leaf>`` expands to the
device's own topics only:

    fleetcast/v1/devices/<id>/commands        read   (control plane -> device)
    fleetcast/v1/devices/<id>/acks            write
    fleetcast/v1/devices/<id>/status          read/write (retained, last will)
    fleetcast/v1/devices/<id>/telemetry       write
    fleetcast/v1/devices/<id>/telemetry/ack   read
    fleetcast/v1/devices/<id>/blocks/request  write
    fleetcast/v1/devices/<id>/blocks/data     read

Device logins are hashed here, in mosquitto's own format (``$7$``: PBKDF2-SHA512,
101 iterations, a 12-byte salt, as ``mosquitto_passwd`` writes them), and appended
under one lock: enrollments arrive concurrently on gRPC worker threads, and one
``mosquitto_passwd`` run per device both cost a process per enrollment (rewriting
the whole file) and lost logins when two runs rewrote the file at once.

mosquitto applies a SIGHUP in its main loop and clears its reload flag only after
re-reading the files, so a SIGHUP that arrives during a reload is lost (measured:
the last of 1,000 enrollments in a burst stayed "Not authorized"). Changes
therefore ask :class:`Reloader` for a reload: it signals at once when idle, at most
once per ``RELOAD_GAP`` seconds in a burst, and always once more after the last
change, when the previous reload is long done.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from control_plane.errors import Conflict, ControlPlaneError
from control_plane.files import make_private_dir, private_file
from control_plane.quotas import MAX_MESSAGE_BYTES
from edge_agent.core.topics import ACL_ROOT, TOPIC_ROOT, device_login

logger = logging.getLogger(__name__)

CONTROL_PLANE_USER = "fleetcast-control-plane"
__all__ = ["CONTROL_PLANE_USER", "TOPIC_ROOT", "BrokerTls", "MosquittoBroker"]
_DEVICE_ACL = [
    ("read", "commands"),
    ("write", "acks"),
    ("readwrite", "status"),
    ("write", "telemetry"),
    ("read", "telemetry/ack"),
    ("write", "blocks/request"),
    ("read", "blocks/data"),
]


PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for its $7$ (sha512-pbkdf2) hashes
RELOAD_GAP = 0.2  # seconds between SIGHUPs in a burst of changes (a reload takes milliseconds)


class BrokerError(ControlPlaneError):
    pass


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A password-file hash mosquitto 2 checks: ``$7$<iterations>$<salt>$<digest>`` (base64)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    encode = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def find_executable(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        raise BrokerError(f"{name} is not installed: run `make setup` (apt-get install mosquitto)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"mosquitto did not listen on {host}:{port} within {timeout:.0f} s")


class Reloader:
    """Coalesces reload requests: one ``send`` at once, then at most one per ``gap`` seconds,
    and one after the last request (none of them lands inside the previous reload)."""

    def __init__(self, send: Callable[[], None], gap: float = RELOAD_GAP) -> None:
        self.send = send
        self.gap = gap
        self.sent = 0
        self._cond = threading.Condition()
        self._dirty = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="broker-reload", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._dirty or self._stopped)
                if self._stopped:
                    return
                self._dirty = False
            try:
                self.send()
                self.sent += 1
            except Exception:  # the broker is gone or restarting: the next request retries
                logger.exception("reloading the broker")
            with self._cond:  # a burst waits out the gap; a stop does not
                self._cond.wait_for(lambda: self._stopped, self.gap)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)


@dataclass(frozen=True)
class BrokerTls:
    """The broker's certificate; ``ca`` signed it (clients verify with it), and with
    ``require_client_cert`` clients must present a certificate ``ca`` signed."""

    cert: Path
    key: Path
    ca: Path | None = None
    require_client_cert: bool = False


class MosquittoBroker:
    """mosquitto as a child process, with the files that make device isolation real."""

    def __init__(
        self, directory: Path, host: str = "127.0.0.1", port: int = 0, tls: BrokerTls | None = None
    ) -> None:
        self.directory = directory
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        self.password = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # every change of the password file
        self._reloader: Reloader | None = None
        self.passwd = directory / "passwd"
        self.acl = directory / "acl"
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"

    def _passwd(self, *args: str) -> str:
        result = subprocess.run(
            [find_executable("mosquitto_passwd"), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        output = (result.stderr + result.stdout).strip()
        if result.returncode != 0:
            raise BrokerError(f"mosquitto_passwd {args[0]}: {output}")
        self.passwd.chmod(0o600)
        return output

    def logins(self) -> set[str]:
        """Usernames in the password file."""
        if not self.passwd.exists():
            return set()
        return {
            line.split(":", 1)[0] for line in self.passwd.read_text().splitlines() if ":" in line
        }

    def check_login_free(self, device_id: str) -> None:
        """Conflict if the device's broker login already exists (enrollment calls this)."""
        login = device_login(device_id)
        if login in self.logins():
            raise Conflict(
                f"device id {device_id!r}: the broker already has a login {login!r} "
                "(left from an earlier device?); choose another id"
            )

    def _write_files(self) -> None:
        make_private_dir(self.directory)
        secret_file = self.directory / "control-plane.secret"
        if not secret_file.exists():
            private_file(secret_file)
            secret_file.write_text(secrets.token_urlsafe(24))
        self.password = secret_file.read_text().strip()
        private_file(self.passwd)
        self._passwd("-b", str(self.passwd), CONTROL_PLANE_USER, self.password)
        lines = [f"user {CONTROL_PLANE_USER}", "topic readwrite fleetcast/v1/#", ""]
        lines += [f"pattern {access} {ACL_ROOT}/%u/{leaf}" for access, leaf in _DEVICE_ACL]
        private_file(self.acl)
        self.acl.write_text("\n".join(lines) + "\n")
        conf = [
            # as root, mosquitto would switch to the 'mosquitto' user, which cannot read
            # the files the control plane owns; keep the invoking user instead
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd}",
            f"acl_file {self.acl}",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "set_tcp_nodelay true",  # no 40 ms Nagle + delayed-ACK stall per block
            "max_inflight_messages 100",
            "max_queued_messages 10000",
            # the same cap as gRPC's: larger packets are refused and their sender disconnected
            f"max_packet_size {MAX_MESSAGE_BYTES + 64 * 1024}",
            f"listener {self.port} {self.host}",
        ]
        if self.tls is not None:
            conf += [f"certfile {self.tls.cert}", f"keyfile {self.tls.key}"]
            if self.tls.ca is not None:
                conf.append(f"cafile {self.tls.ca}")
            if self.tls.require_client_cert and self.tls.ca is not None:
                conf.append("require_certificate true")
        private_file(self.log)  # mosquitto appends to it; it names devices and addresses
        private_file(self.conf)
        self.conf.write_text("\n".join(conf) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        self._write_files()
        self._proc = subprocess.Popen(
            [find_executable("mosquitto"), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except BrokerError:
            self.stop()
            detail = self.log.read_text()[-500:] if self.log.exists() else ""
            raise BrokerError(f"mosquitto failed to start: {detail.strip()}") from None
        logger.info("mosquitto on %s:%d (dir %s)", self.host, self.port, self.directory)

    def reload(self) -> None:
        """SIGHUP now: mosquitto re-reads its files and drops clients whose login is gone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

    def _changed(self) -> None:
        """The password file changed: a coalesced reload (see :class:`Reloader`)."""
        if self._reloader is None:
            self._reloader = Reloader(self.reload)
        self._reloader.request()

    def add_device(self, device_id: str, password: str) -> None:
        """Add the device's login; never replaces one that exists (Conflict)."""
        login = device_login(device_id)
        line = f"{login}:{password_hash(password)}\n"
        with self._lock:
            self.check_login_free(device_id)
            with self.passwd.open("a") as handle:  # private_file made it 0600 at start
                handle.write(line)
        self._changed()

    def remove_device(self, device_id: str) -> None:
        """Remove the device's login; one that is already gone counts as removed."""
        login = device_login(device_id)
        with self._lock:
            if login in self.logins():
                try:
                    self._passwd("-D", str(self.passwd), login)
                except BrokerError as exc:
                    if "not found" not in str(exc):
                        raise
        self._changed()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.stop()
            self._reloader = None
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
