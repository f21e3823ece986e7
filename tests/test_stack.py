"""`twoline run` (what `make run` starts): all five services up, tokens work, `twoline demo` tells
its story against it, and SIGINT leaves no orphan."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from twoline.natsserver import free_port
from twoline.stack import SERVICES

pytestmark = pytest.mark.nats


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


def twoline(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "twoline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_run_starts_every_service_runs_the_demo_and_stops_cleanly(tmp_path):
    ports = {s.name: free_port() for s in SERVICES}
    issuer_port, nats_port = free_port(), free_port()
    env = {
        **os.environ,
        "TWOLINE_DATA_DIR": str(tmp_path / "data"),
        "TWOLINE_ISSUER_PORT": str(issuer_port),
        "TWOLINE_NATS_PORT": str(nats_port),
    }
    env.update({f"{s.prefix}PORT": str(ports[s.name]) for s in SERVICES})
    stack = subprocess.Popen(
        [sys.executable, "-m", "twoline.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own foreground-like group, as in a terminal
    )
    try:
        banner = []
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops everything" in line for line in banner):
            assert stack.poll() is None, "".join(banner)
            assert time.monotonic() < deadline, "stack did not come up:\n" + "".join(banner)
            banner.append(stack.stdout.readline())
        text = "".join(banner)
        for service in SERVICES:
            url = f"http://127.0.0.1:{ports[service.name]}"
            assert f"{url}/docs" in text
            assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
            ready = {}
            for _ in range(100):
                ready = httpx.get(f"{url}/readyz")
                if ready.status_code == 200:
                    break
                time.sleep(0.1)
            assert ready.status_code == 200, (service.name, ready.text)
            assert httpx.get(f"{url}/openapi.json").status_code == 200

        intake = f"http://127.0.0.1:{ports['intake']}/v1/clients"
        token = twoline("token", "--role", "ngo_caseworker", "--org", "ngo-ghent", env=env)
        ok = httpx.get(intake, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json() == {"data": [], "count": 0}

        header, payload, _ = token.split(".")
        forged = httpx.get(intake, headers={"Authorization": f"Bearer {header}.{payload}.AAAA"})
        assert forged.status_code == 401
        assert forged.headers["content-type"] == "application/problem+json"
        expired = twoline(
            "token", "--role", "ngo_caseworker", "--org", "ngo-ghent", "--ttl", "-120", env=env
        )
        assert httpx.get(intake, headers={"Authorization": f"Bearer {expired}"}).status_code == 401

        # `make demo` against the same stack: the whole dual-track story through the real APIs.
        demo = subprocess.run(
            [sys.executable, "-m", "twoline.cli", "demo", "--timeout", "30"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        for line in (
            "the NGO sees legal_stay: completed",
            "the NGO sees return: on-hold",
            "step declined_by_client",
            "outcome=legal_stay",
            "== The auditor: the referral's trace and the verified log",
            "no findings",
            "OK: the audit log verifies",
            "demo complete",
        ):
            assert line in demo.stdout, demo.stdout
        # The trace spans the services: the bridge's disclosures and zone B's acceptances.
        trace = demo.stdout.split("== The auditor", 1)[1]
        for fact in ("referral  disclose track", "case-resolution  accept case"):
            assert fact in trace, trace

        descendants = children_of(stack.pid)
        assert len(descendants) >= 7  # nats-server, issuer, five services
    finally:
        # Ctrl-C in a terminal signals the whole foreground process group.
        os.killpg(stack.pid, signal.SIGINT)
        stack.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in descendants if alive(pid)], "orphaned processes left behind"
    assert stack.returncode == 0, stack.stdout.read()
