"""`make run` (the README's command, so `twoline run` behind it) on ports other than the defaults
and in a data dir of its own: all five services up, a second terminal that knows only the data
dir gets tokens the stack accepts and verifies the audit log, every command the README prints
works as printed (the demo's whole story included), and Ctrl-C leaves no orphan.

One stack serves the whole module; the last test stops it."""

import base64
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.test_readme import (
    NOT_RUN_HERE,
    ROOT,
    STARTS_THE_STACK,
    key,
    newcomer_environment,
    run_block,
    shell_blocks,
    translator,
    words,
)
from twoline.natsserver import free_port
from twoline.stack import DISCOVERY_FILE, SERVICES

pytestmark = pytest.mark.nats

TWOLINE = str(ROOT / ".venv" / "bin" / "twoline")


def children_of(pid: int) -> set[int]:
    """Every descendant process id, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    ports: dict[str, int]  # each service's, and "issuer" and "nats"
    second_terminal: dict[str, str]  # a newcomer's environment knowing only the data dir

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The README's `make run`, from a newcomer's terminal, with every port moved by its
    environment variable and the data dir by TWOLINE_DATA_DIR."""
    assert STARTS_THE_STACK in [key(c) for block in shell_blocks() for c in block]
    base = tmp_path_factory.mktemp("stack")
    data_dir = base / "data"
    ports = {s.name: free_port() for s in SERVICES} | {"issuer": free_port(), "nats": free_port()}
    env = newcomer_environment()
    second_terminal = {**env, "TWOLINE_DATA_DIR": str(data_dir)}
    env = {
        **second_terminal,
        "TWOLINE_ISSUER_PORT": str(ports["issuer"]),
        "TWOLINE_NATS_PORT": str(ports["nats"]),
        **{f"{s.prefix}PORT": str(ports[s.name]) for s in SERVICES},
    }
    log = base / "make-run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            words(STARTS_THE_STACK),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own foreground-like group, as in a terminal
        )
    running = Running(process, log, data_dir, ports, second_terminal)
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in running.output():
            assert process.poll() is None, running.output()
            assert time.monotonic() < deadline, "stack did not come up:\n" + running.output()
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def second_terminal(stack: Running, *args: str, env: dict[str, str] | None = None, **kw):
    """`.venv/bin/twoline ...` from another terminal."""
    return subprocess.run(
        [TWOLINE, *args],
        env=stack.second_terminal if env is None else env,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_make_run_starts_every_service_on_the_ports_it_was_given(stack):
    text = stack.output()
    assert f"nats://127.0.0.1:{stack.ports['nats']}" in text
    assert f"{stack.url('issuer')}/.well-known/jwks.json" in text
    # The banner tells another terminal the command that reaches this stack.
    assert (
        f"TWOLINE_DATA_DIR={stack.data_dir} .venv/bin/twoline token --role ngo_caseworker" in text
    )
    for service in SERVICES:
        url = stack.url(service.name)
        assert f"{url}/docs" in text
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz")
        for _ in range(100):  # readiness (NATS consumers bound) follows health by contract
            if ready.status_code == 200:
                break
            time.sleep(0.1)
            ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, (service.name, ready.text)
        assert httpx.get(f"{url}/openapi.json").status_code == 200

    found = json.loads((stack.data_dir / DISCOVERY_FILE).read_text())
    assert found["issuer"] == stack.url("issuer")
    assert found["nats"] == f"nats://127.0.0.1:{stack.ports['nats']}"
    assert found["services"] == {s.name: stack.url(s.name) for s in SERVICES}


def test_a_second_terminal_knowing_only_the_data_dir_gets_tokens_and_verifies_the_log(
    stack, tmp_path
):
    intake = f"{stack.url('intake')}/v1/clients"
    bare = {"PATH": "/usr/bin:/bin"}  # nothing of twoline's, no port: only the data dir
    for env, args in (
        ({**bare, "TWOLINE_DATA_DIR": str(stack.data_dir)}, []),
        (bare, ["--data-dir", str(stack.data_dir)]),
    ):
        made = second_terminal(
            stack, "token", "--role", "ngo_caseworker", "--org", "ngo-ghent", *args, env=env
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        ok = httpx.get(intake, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert set(ok.json()) == {"data", "count"}

        verified = second_terminal(stack, "audit", "verify", *args, env=env, cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "OK: the audit log verifies" in verified.stdout

    header, payload, _ = token.split(".")
    forged = httpx.get(intake, headers={"Authorization": f"Bearer {header}.{payload}.AAAA"})
    assert forged.status_code == 401
    assert forged.headers["content-type"] == "application/problem+json"
    expired = second_terminal(
        stack, "token", "--role", "ngo_caseworker", "--org", "ngo-ghent", "--ttl", "-120"
    ).stdout.strip()
    assert httpx.get(intake, headers={"Authorization": f"Bearer {expired}"}).status_code == 401


# Where a token of each role the README mints is accepted: the service and a route it may read.
READ_BY_ROLE = {
    "ngo_caseworker": ("intake", "/v1/clients"),
    "icam_coach": ("case-resolution", "/v1/queue"),
    "return_counsellor": ("case-resolution", "/v1/queue"),
    "auditor": ("audit", "/v1/log/checkpoint"),
}
DEMO_STORY = (
    "the NGO sees legal_stay: completed",
    "the NGO sees return: on-hold",
    "step declined_by_client",
    "outcome=legal_stay",
    "== The auditor: the referral's trace and the verified log",
    "no findings",
    "OK: the audit log verifies",
    "demo complete",
)


def check_output(stack: Running, command: str, output: str) -> dict[str, str]:
    """What a reader expects to see from one command; returns shell variables it gives the
    commands after it (the demo's referral id, which the README has the reader copy)."""
    parts = words(command)
    if parts[:2] == [".venv/bin/twoline", "token"]:
        token = output.strip()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        service, path = READ_BY_ROLE[claims["roles"][0]]
        answer = httpx.get(stack.url(service) + path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, (command, answer.text)
    elif parts[:1] == ["curl"]:
        body = json.loads(output)
        assert not (isinstance(body, dict) and ("title" in body or set(body) == {"detail"})), (
            command,
            body,
        )
    elif parts == ["make", "demo"]:
        for line in DEMO_STORY:
            assert line in output, output
        # The trace spans the services: the bridge's disclosures and zone B's acceptances.
        trace = output.split("== The auditor", 1)[1]
        for fact in ("referral  disclose track", "case-resolution  accept case"):
            assert fact in trace, trace
        [referral_id] = re.findall(r"referred for both tracks: referral ([0-9a-f-]{36})", output)
        return {"REFERRAL_ID": referral_id}
    elif parts[:3] == [".venv/bin/twoline", "audit", "verify"]:
        assert "OK: the audit log verifies" in output, output
    elif parts[:3] == [".venv/bin/twoline", "audit", "trace"]:
        assert "no findings" in output, output
    return {}


def test_every_readme_command_works_as_printed(stack, tmp_path):
    defaults = {s.port: stack.ports[s.name] for s in SERVICES}
    defaults |= {8000: stack.ports["issuer"], 4223: stack.ports["nats"]}
    translate = translator(defaults, tmp_path)
    env = dict(stack.second_terminal)
    ran = []
    for block in shell_blocks():
        commands = [c for c in block if key(c) not in NOT_RUN_HERE and key(c) != STARTS_THE_STACK]
        if not commands:
            continue
        for command, output in run_block(commands, env=env, translate=translate):
            env |= check_output(stack, command, output)
            ran.append(key(command))
    assert "make demo" in ran and any("audit trace" in c for c in ran), ran
    assert (tmp_path / "checkpoint.json").exists()  # --save wrote where the test put it


def test_ctrl_c_stops_every_process_and_removes_the_discovery_file(stack):
    descendants = children_of(stack.process.pid)
    assert len(descendants) >= 9  # uv, twoline run, nats-server, issuer, five services

    # Ctrl-C in a terminal signals the whole foreground process group.
    os.killpg(stack.process.pid, signal.SIGINT)
    stack.process.wait(timeout=30)

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in descendants if alive(pid)], "orphaned processes left behind"
    text = stack.output()
    assert "twoline: stopping" in text
    # make reports a recipe that failed ("make: *** [run] Error 1"); it says nothing when
    # `twoline run` ended with 0, and then ends by the SIGINT it was sent, as in a terminal.
    assert "make: ***" not in text, text
    assert stack.process.returncode == -signal.SIGINT
    assert not (stack.data_dir / DISCOVERY_FILE).exists()
