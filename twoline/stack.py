"""`twoline run`: the embedded default — nats-server, the dev issuer and the five services.

Everything runs as child processes of this one; SIGINT/SIGTERM stops them all, and each child
is also told by the kernel (PR_SET_PDEATHSIG) to stop if this process dies without cleaning up.

Once every service is healthy the stack writes `<data dir>/stack.json` (its issuer, NATS and
service URLs) and removes it when it stops, so that another terminal needs only the data dir to
reach it: `twoline token`, `demo`, `audit ...` and `nats provision` read it.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from twoline.devissuer import DEFAULT_AUDIENCE, create_key
from twoline.natsserver import NatsServer, die_with_parent, load_passwords, run_provision


@dataclass(frozen=True)
class ServiceDef:
    name: str
    package: str
    prefix: str
    port: int
    nats_user: str


SERVICES = (
    ServiceDef("intake", "twoline_intake", "TWOLINE_INTAKE_", 8001, "intake"),
    ServiceDef("consent", "twoline_consent", "TWOLINE_CONSENT_", 8002, "consent"),
    ServiceDef("referral", "twoline_referral", "TWOLINE_REFERRAL_", 8003, "referral-fl"),
    ServiceDef(
        "case-resolution",
        "twoline_case_resolution",
        "TWOLINE_CASE_RESOLUTION_",
        8004,
        "case-resolution",
    ),
    ServiceDef("audit", "twoline_audit", "TWOLINE_AUDIT_", 8005, "audit"),
)


DEFAULT_DATA_DIR = ".twoline"
DISCOVERY_FILE = "stack.json"


def service_port(service: ServiceDef) -> int:
    """The port `twoline run` gives a service: its `TWOLINE_<SERVICE>_PORT`, else the default."""
    return int(os.environ.get(f"{service.prefix}PORT", service.port))


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: there all the same
        return True
    return True


def read_discovery(data_dir: Path) -> dict[str, Any] | None:
    """The running stack's addresses from `<data dir>/stack.json`, or None when no stack runs
    from that data dir (no file, or one left behind by a stack that was killed)."""
    try:
        found = json.loads((data_dir / DISCOVERY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not _alive(found.get("pid")):
        return None
    return found


def service_ports(data_dir: Path) -> dict[str, int]:
    """Each service's port: the running stack's (from stack.json), else what `twoline run`
    would give it."""
    urls = (read_discovery(data_dir) or {}).get("services") or {}
    return {
        s.name: (urlsplit(urls[s.name]).port if s.name in urls else None) or service_port(s)
        for s in SERVICES
    }


def service_environment(
    service: ServiceDef,
    *,
    data_dir: Path,
    nats_url: str,
    passwords: dict[str, str],
    issuer_url: str,
    port: int | None = None,
) -> dict[str, str]:
    p = service.prefix
    env = {
        f"{p}DATABASE_URL": f"sqlite:///{data_dir / (service.name + '.db')}",
        f"{p}NATS_URL": nats_url,
        f"{p}NATS_USER": service.nats_user,
        f"{p}NATS_PASSWORD": passwords[service.nats_user],
        f"{p}AUTH_JWKS_URL": f"{issuer_url}/.well-known/jwks.json",
        f"{p}AUTH_ISSUER": issuer_url,
        f"{p}AUTH_AUDIENCE": DEFAULT_AUDIENCE,
        f"{p}PORT": str(port if port is not None else service_port(service)),
    }
    if service.name == "audit":
        env[f"{p}SIGNING_KEY_PATH"] = str(data_dir / "audit-signing-key.pem")
    if service.name == "referral":
        env[f"{p}NATS_SL_USER"] = "referral-sl"
        env[f"{p}NATS_SL_PASSWORD"] = passwords["referral-sl"]
    return env


class Stack:
    def __init__(self, *, data_dir: Path, nats_port: int, issuer_port: int, host: str) -> None:
        self.data_dir = data_dir.resolve()
        self.nats_port = nats_port
        self.issuer_port = issuer_port
        self.host = host
        # Read once, at start: what stack.json, the banner and the health checks report.
        self.ports = {s.name: service_port(s) for s in SERVICES}
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.nats: NatsServer | None = None
        self.stopping = False

    @property
    def issuer_url(self) -> str:
        return f"http://127.0.0.1:{self.issuer_port}"

    @property
    def service_urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}

    @property
    def discovery_path(self) -> Path:
        return self.data_dir / DISCOVERY_FILE

    def write_discovery(self) -> None:
        """Tell other terminals where this stack is (only once every service answers)."""
        found = {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "issuer": self.issuer_url,
            "nats": self.nats.url if self.nats else None,
            "services": self.service_urls,
        }
        partial = self.discovery_path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(found, indent=2) + "\n")
        partial.replace(self.discovery_path)  # readers never see half a file

    def remove_discovery(self) -> None:
        found = read_discovery(self.data_dir)
        if found is not None and found.get("pid") == os.getpid():
            self.discovery_path.unlink()

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        # Own process group: a terminal's Ctrl-C reaches only this supervisor, which then stops
        # the services before the broker they depend on.
        process = subprocess.Popen(
            args,
            env={**os.environ, **env},
            preexec_fn=die_with_parent,
            process_group=0,
        )
        self.children.append((name, process))

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        passwords = load_passwords(self.data_dir / "nats-passwords.json")
        create_key(self.data_dir)  # before anyone asks for a token; only the stack creates it
        self.nats = NatsServer(
            store_dir=self.data_dir / "nats",
            passwords=passwords,
            port=self.nats_port,
            own_process_group=True,
        )
        self.nats.start()
        run_provision(self.nats.url, passwords)
        self.spawn(
            "issuer",
            [
                sys.executable,
                "-m",
                "twoline.cli",
                "issuer",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.issuer_port),
                "--data-dir",
                str(self.data_dir),
            ],
            {},
        )
        for service in SERVICES:
            env = service_environment(
                service,
                data_dir=self.data_dir,
                nats_url=self.nats.url,
                passwords=passwords,
                issuer_url=self.issuer_url,
                port=self.ports[service.name],
            )
            self.spawn(
                service.name,
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    f"{service.package}.app:create_app",
                    "--host",
                    self.host,
                    "--port",
                    str(self.ports[service.name]),
                    "--log-level",
                    "warning",
                ],
                env,
            )

    def wait_healthy(self, timeout: float = 60.0) -> bool:
        urls = [f"{self.issuer_url}/healthz"] + [
            f"{url}/healthz" for url in self.service_urls.values()
        ]
        deadline = time.monotonic() + timeout
        pending = list(urls)
        while pending and time.monotonic() < deadline:
            self.check_children()
            for url in list(pending):
                try:
                    if httpx.get(url, timeout=1.0).status_code == 200:
                        pending.remove(url)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        return not pending

    def check_children(self) -> None:
        for name, process in self.children:
            if process.poll() is not None and not self.stopping:
                raise RuntimeError(f"{name} exited with code {process.returncode}")
        if self.nats and self.nats.process and self.nats.process.poll() is not None:
            raise RuntimeError("nats-server exited")

    def stop(self) -> None:
        self.stopping = True
        for _, process in self.children:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for _, process in self.children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.nats is not None:
            self.nats.stop()

    def banner(self) -> str:
        lines = ["", "twoline is running (embedded default: SQLite, nats-server, dev issuer)", ""]
        lines.append(f"  {'nats':16} {self.nats.url if self.nats else ''}")
        lines.append(f"  {'token issuer':16} {self.issuer_url}/.well-known/jwks.json")
        for name, url in self.service_urls.items():
            lines.append(f"  {name:16} {url}   docs: {url}/docs")
        lines += [
            "",
            f"  data dir: {self.data_dir} (addresses in {DISCOVERY_FILE})",
            "  a token, in another terminal:",
            f"    {self.command()} token --role ngo_caseworker --org ngo-ghent",
            "  Ctrl-C stops everything.",
            "",
        ]
        return "\n".join(lines)

    def command(self) -> str:
        """How another terminal in this directory runs `twoline` against this stack: the
        script beside this interpreter, and the data dir when it is not the default one."""
        script = Path(sys.executable).parent / "twoline"
        shown = "twoline"
        if script.exists():
            shown = str(script)
            with contextlib.suppress(ValueError):
                shown = str(script.relative_to(Path.cwd()))
        if self.data_dir != Path(DEFAULT_DATA_DIR).resolve():
            shown = f"TWOLINE_DATA_DIR={self.data_dir} {shown}"
        return shown


def run(*, data_dir: Path, nats_port: int, issuer_port: int, host: str) -> int:
    stack = Stack(data_dir=data_dir, nats_port=nats_port, issuer_port=issuer_port, host=host)
    running = read_discovery(stack.data_dir)
    if running is not None:
        # Two stacks on one data dir would share SQLite files and the JetStream store.
        print(
            f"twoline: a stack is already running from {stack.data_dir} (pid {running['pid']}): "
            f"stop it or pass another --data-dir (if none is, remove {stack.discovery_path})",
            file=sys.stderr,
        )
        return 1

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Both explicitly: a parent such as `uv run` may hand SIGINT down as ignored.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        stack.start()
        if not stack.wait_healthy():
            print("twoline: not every service became healthy within 60 s", file=sys.stderr)
            return 1
        stack.write_discovery()
        print(stack.banner(), flush=True)
        while True:
            stack.check_children()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ntwoline: stopping", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"twoline: {exc}; stopping", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        stack.remove_discovery()
