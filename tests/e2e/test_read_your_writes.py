"""Read your writes along the whole path, as a partner's case-management system drives it: no
pause between register, consent and refer, several callers at once, two replicas of every
service (separate processes on one database per service and one nats-server), on SQLite and on
Postgres.

A consent recorded right after its client was registered is recorded; a referral made right
after its client and consents is routed; a referral made right after a withdrawal (or expiry)
of the consent it needs is refused, always; and no track is ever routed under a consent whose
withdrawal was acknowledged before the referral was decided.
"""

import concurrent.futures
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text, update

from tests.conftest import (
    NGO_GHENT,
    Issuer,
    assert_problem,
    database_factory,
    eventually,
    nats_server_running,
)
from twoline.devissuer import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from twoline.natsserver import NatsServer, free_port
from twoline.stack import SERVICES, service_environment
from twoline_consent.models import Consent
from twoline_shared.db import normalise_url

pytestmark = pytest.mark.nats

REPLICAS = 2
CALLERS = 8
AGENCIES = ("immigration_office", "fedasil")


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    """Every service twice, each replica its own process; callers pick a replica per request."""

    replicas: dict[str, list[Replica]]
    databases: dict[str, str]
    issuer: Issuer
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, service: str, path: str) -> str:
        """`path` on the next replica of `service`, in turn: no caller sticks to one."""
        with self._lock:
            turn = next(self._turn)
        replica = self.replicas[service][turn % len(self.replicas[service])]
        return replica.url + path

    def post(self, service: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        return self.http.post(self.url(service, path), headers=headers, **kwargs)

    def get(self, service: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        return self.http.get(self.url(service, path), headers=headers, **kwargs)

    def execute(self, service: str, statement: Any) -> None:
        engine = create_engine(normalise_url(self.databases[service]))
        try:
            with engine.begin() as connection:
                connection.execute(statement)
        finally:
            engine.dispose()

    def rows(self, service: str, sql: str) -> list[Any]:
        engine = create_engine(normalise_url(self.databases[service]))
        try:
            with engine.connect() as connection:
                return list(connection.execute(text(sql)))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def stack(
    issuer: Issuer,
    postgres_admin_url: str | None,
    nats_passwords: dict[str, str],
    nats_server_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("read-your-writes")
    with (
        nats_server_running(directory / "nats", nats_passwords, nats_server_env) as nats,
        database_factory(postgres_admin_url, directory) as make_database,
        contextlib.ExitStack() as cleanup,
    ):
        databases = {s.name: make_database(s.name) for s in SERVICES}
        replicas = {s.name: [] for s in SERVICES}
        for service in SERVICES:
            for _ in range(REPLICAS):
                replica = _spawn(service, nats, databases[service.name], issuer, directory)
                cleanup.callback(_stop, replica)
                replicas[service.name].append(replica)
        ready = Stack(replicas=replicas, databases=databases, issuer=issuer)
        for replica in itertools.chain.from_iterable(replicas.values()):
            eventually(lambda r=replica: _ready(r), f"{replica.name} on :{replica.port} ready", 90)
        yield ready
        ready.http.close()


def _spawn(
    service: Any, nats: NatsServer, database_url: str, issuer: Issuer, directory: Path
) -> Replica:
    port = free_port()
    env = service_environment(
        service,
        data_dir=directory,
        nats_url=nats.url,
        passwords=nats.passwords,
        issuer_url=DEFAULT_ISSUER,
        port=port,
    )
    env[f"{service.prefix}DATABASE_URL"] = database_url
    env[f"{service.prefix}AUTH_JWKS_URL"] = str(issuer.jwks_path)
    env[f"{service.prefix}AUTH_AUDIENCE"] = DEFAULT_AUDIENCE
    env[f"{service.prefix}OUTBOX_POLL_SECONDS"] = "0.2"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{service.package}.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, **env},
    )
    return Replica(service.name, port, process)


def _ready(replica: Replica) -> bool:
    assert replica.process.poll() is None, f"{replica.name} exited"
    try:
        return httpx.get(f"{replica.url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(replica: Replica) -> None:
    replica.process.terminate()
    try:
        replica.process.wait(15)
    except subprocess.TimeoutExpired:
        replica.process.kill()
        replica.process.wait()


# ---------------------------------------------------------------- the partner's requests


def ngo(stack: Stack) -> dict[str, str]:
    return stack.issuer.headers(**NGO_GHENT)


def register(stack: Stack) -> str:
    response = stack.post(
        "intake",
        "/v1/clients",
        ngo(stack),
        json={"display_name": f"Partner client {uuid.uuid4().hex[:6]}", "needs": ["shelter"]},
    )
    assert response.status_code == 201, response.text
    return response.json()["client_ref"]


def grant(stack: Stack, client_ref: str, agency: str, **extra: Any) -> Any:
    return stack.post(
        "consent",
        "/v1/consents",
        ngo(stack),
        json={
            "client_ref": client_ref,
            "recipient": agency,
            "purposes": ["referral", "feedback"],
            "categories": ["identity", "needs"],
            "method": "written",
            "language": "fr",
            "interpreter": False,
            "information_version": "2026-01",
            **extra,
        },
    )


def refer(stack: Stack, client_ref: str, tracks: list[str] | None = None) -> Any:
    return stack.post(
        "referral",
        "/v1/referrals",
        ngo(stack),
        json={"client_ref": client_ref, "tracks": tracks or ["legal_stay", "return"]},
    )


def withdraw(stack: Stack, consent_id: str) -> Any:
    return stack.post("consent", f"/v1/consents/{consent_id}/withdraw", ngo(stack))


def at_once(work: Any, items: list[Any]) -> list[Any]:
    """`work` for every item, `CALLERS` partners at once."""
    with concurrent.futures.ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(work, items))


# ---------------------------------------------------------------- the tests


def test_many_partners_register_consent_and_refer_with_no_pause_and_every_step_succeeds(stack):
    def sequence(_: int) -> tuple[list[int], dict[str, Any]]:
        client_ref = register(stack)
        statuses = []
        for agency in AGENCIES:
            granted = grant(stack, client_ref, agency)
            statuses.append(granted.status_code)
            assert granted.status_code == 201, granted.text
        referred = refer(stack, client_ref)
        statuses.append(referred.status_code)
        assert referred.status_code == 201, referred.text
        return statuses, referred.json()

    results = at_once(sequence, list(range(4 * CALLERS)))

    assert all(statuses == [201, 201, 201] for statuses, _ in results)
    referrals = [referral for _, referral in results]
    assert all(len(r["tracks"]) == 2 for r in referrals)
    assert all(t["status"] == "requested" for r in referrals for t in r["tracks"])
    # Each referral reaches zone B (asynchronous by contract: the office queues fill up).
    track_ids = {t["track_id"] for r in referrals for t in r["tracks"]}

    def routed() -> bool:
        rows = stack.rows("case-resolution", "SELECT track_id FROM cases")
        return track_ids <= {row[0] for row in rows}

    eventually(routed, "every routed track to open a case in zone B", 60)


def test_a_referral_right_after_the_withdrawal_of_its_consent_is_refused_every_time(stack):
    def sequence(_: int) -> Any:
        client_ref = register(stack)
        consent = grant(stack, client_ref, "immigration_office")
        assert consent.status_code == 201, consent.text
        withdrawn = withdraw(stack, consent.json()["consent_id"])
        assert withdrawn.status_code == 200, withdrawn.text
        return client_ref, refer(stack, client_ref, ["legal_stay"])

    results = at_once(sequence, list(range(3 * CALLERS)))

    for _, response in results:
        body = assert_problem(response, 422, "consent-missing")
        assert body["missing_consent"] == ["immigration_office"]
    # Nothing of them reached the bridge's tables or zone B.
    refs = {client_ref for client_ref, _ in results}
    referred = stack.rows("referral", "SELECT client_ref FROM referral")
    assert refs.isdisjoint({row[0] for row in referred})


def test_a_referral_right_after_its_consent_expired_is_refused(stack):
    client_ref = register(stack)
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    consent = grant(stack, client_ref, "fedasil", valid_until=until)
    assert consent.status_code == 201, consent.text
    assert refer(stack, client_ref, ["return"]).status_code == 201
    # A day passes: the consent's validity ends in the consent service's own record (and no
    # event says so: expiry is a moment, not a fact anyone announces).
    stack.execute(
        "consent",
        update(Consent)
        .where(Consent.consent_id == uuid.UUID(consent.json()["consent_id"]))  # type: ignore[arg-type]
        .values(valid_until=datetime.now(UTC) - timedelta(seconds=1)),
    )

    assert_problem(refer(stack, client_ref, ["return"]), 422, "consent-missing")


def test_no_track_is_routed_under_a_consent_whose_withdrawal_was_acknowledged_before(stack):
    """A withdrawal and a referral under the same consent, sent at (nearly) the same moment by
    two callers, many times. Whatever the interleaving: a referral sent after the withdrawal's
    200 is refused; a referral that was routed was decided from the consent service's state
    read before that 200 (its consent decision says when: `consent_checked_at`); and every track
    routed under a withdrawn consent ends cancelled, its package gone from zone B."""
    rounds = 3 * CALLERS
    clients = [register(stack) for _ in range(rounds)]
    consents = []
    for client_ref in clients:
        granted = grant(stack, client_ref, "immigration_office")
        assert granted.status_code == 201, granted.text
        consents.append(granted.json()["consent_id"])
    jitter = random.Random(10)  # a fixed spread of offsets, so CI runs the same interleavings

    def pair(i: int) -> dict[str, Any]:
        offset = jitter.uniform(-0.06, 0.2)
        outcome: dict[str, Any] = {"consent_id": consents[i]}

        def withdrawing() -> None:
            time.sleep(max(0.0, -offset))
            response = withdraw(stack, consents[i])
            outcome["acked_at"] = datetime.now(UTC)
            assert response.status_code == 200, response.text

        def referring() -> None:
            time.sleep(max(0.0, offset))
            outcome["sent_at"] = datetime.now(UTC)
            outcome["referral"] = refer(stack, clients[i], ["legal_stay"])

        threads = [threading.Thread(target=withdrawing), threading.Thread(target=referring)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcome

    with concurrent.futures.ThreadPoolExecutor(CALLERS // 2) as pool:
        outcomes = list(pool.map(pair, range(rounds)))

    routed = []
    for outcome in outcomes:
        response = outcome["referral"]
        if outcome["sent_at"] > outcome["acked_at"]:
            assert_problem(response, 422, "consent-missing")
        elif response.status_code == 201:
            routed.append((outcome, response.json()))
        else:
            assert_problem(response, 422, "consent-missing")

    # Every routed referral's consent decision was taken from a state read before the 200.
    decisions = {
        data["consent_id"]: data
        for (payload,) in stack.rows(
            "referral",
            "SELECT payload FROM outbox WHERE subject = 'audit.referral.consent.consent-decision'",
        )
        if (data := json.loads(bytes(payload))["data"])["outcome"] == "success"
    }
    for outcome, _ in routed:
        checked = datetime.fromisoformat(decisions[outcome["consent_id"]]["consent_checked_at"])
        assert checked < outcome["acked_at"], "routed on a state read after the withdrawal's 200"

    # What went through before the withdrawal is undone by it (asynchronous by contract).
    track_ids = [referral["tracks"][0]["track_id"] for _, referral in routed]

    def all_cancelled() -> bool:
        if not track_ids:
            return True
        listed = ", ".join(f"'{t}'" for t in track_ids)
        rows = stack.rows(
            "case-resolution",
            f"SELECT status, status_reason, disclosure_ciphertext FROM cases WHERE track_id IN ({listed})",
        )
        return len(rows) == len(track_ids) and all(
            (status, reason, sealed) == ("cancelled", "consent_withdrawn", None)
            for status, reason, sealed in rows
        )

    eventually(all_cancelled, "every track routed before its withdrawal to be cancelled", 60)
