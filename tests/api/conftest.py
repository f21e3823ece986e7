"""The five services as real HTTP servers for the API tests, and resources seeded through them.

Each app runs under uvicorn on a port of its own, with its lifespan (migrations, NATS links,
relay, consumers), on the project's own nats-server and real databases (SQLite files, or
Postgres when TWOLINE_TEST_DATABASE_URL is set). One stack per module: the fuzzing in
test_fuzz.py runs against it for a few minutes, so it is built once, not per test.

Seeds come through the public APIs, the way an NGO, a coach and a counsellor make them, so that
fuzzing can name real resources in its paths (see `Seeds`).
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.conftest import (
    FEDASIL_BRUSSELS,
    ICAM_BRUSSELS,
    NGO_GHENT,
    Issuer,
    database_factory,
    eventually,
    nats_server_running,
    settings_for_test,
)
from twoline.natsserver import NatsServer, free_port
from twoline_audit import policy as audit_policy
from twoline_audit.app import create_app as audit_app
from twoline_audit.config import Settings as AuditSettings
from twoline_case_resolution import policy as case_policy
from twoline_case_resolution.app import create_app as case_app
from twoline_case_resolution.config import Settings as CaseSettings
from twoline_consent import policy as consent_policy
from twoline_consent.app import create_app as consent_app
from twoline_consent.config import Settings as ConsentSettings
from twoline_intake import policy as intake_policy
from twoline_intake.app import create_app as intake_app
from twoline_intake.config import Settings as IntakeSettings
from twoline_referral import policy as referral_policy
from twoline_referral.app import create_app as referral_app
from twoline_referral.config import Settings as ReferralSettings
from twoline_shared.policy import KERNEL, Policy


@dataclass(frozen=True)
class ServiceDef:
    name: str
    create_app: Callable[[Any], FastAPI]
    settings: type
    policy: Policy


SERVICES: dict[str, ServiceDef] = {
    "intake": ServiceDef("intake", intake_app, IntakeSettings, intake_policy.POLICY),
    "consent": ServiceDef("consent", consent_app, ConsentSettings, consent_policy.POLICY),
    "referral": ServiceDef("referral", referral_app, ReferralSettings, referral_policy.POLICY),
    "case-resolution": ServiceDef("case-resolution", case_app, CaseSettings, case_policy.POLICY),
    "audit": ServiceDef("audit", audit_app, AuditSettings, audit_policy.POLICY),
}


def declared(name: str) -> Policy:
    """Every route the service serves and who may call it (its policy and the kernel's)."""
    return {**KERNEL, **SERVICES[name].policy}


def bare_app(name: str) -> FastAPI:
    """The service's app as it would be served; never started, so it needs no database."""
    service = SERVICES[name]
    return service.create_app(service.settings(database_url="sqlite://", nats_enabled=False))


class Served:
    """One app under uvicorn in a thread of this process, on 127.0.0.1:`port`."""

    def __init__(self, name: str, app: FastAPI) -> None:
        self.name = name
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), f"{self.name} did not start"
            assert time.monotonic() < deadline, f"{self.name} did not start in time"
            time.sleep(0.05)

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Seeds:
    """Real resources of the NGO ngo-ghent and of the brussels offices, made through the APIs.

    Kept apart per service, so that fuzzing one service's routes does not use up another's
    seeds: the consents fuzzed are a third client's (withdrawing one cancels no seeded case),
    the referral fuzzed is not the one whose cases are fuzzed.
    """

    client_refs: list[str] = field(default_factory=list)
    contact_ids: list[str] = field(default_factory=list)
    consent_ids: list[str] = field(default_factory=list)
    consent_client_refs: list[str] = field(default_factory=list)
    referral_ids: list[str] = field(default_factory=list)
    referral_client_refs: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    case_ids: list[str] = field(default_factory=list)
    # The track of each seeded case: a path naming the case names its own track.
    case_tracks: dict[str, str] = field(default_factory=dict)
    step_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    decision_ids: list[str] = field(default_factory=list)
    traced_referral_ids: list[str] = field(default_factory=list)
    entry_indexes: list[int] = field(default_factory=list)


@dataclass
class Live:
    services: dict[str, Served]
    issuer: Issuer
    seeds: Seeds = field(default_factory=Seeds)

    def url(self, name: str) -> str:
        return self.services[name].url

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.url(name), timeout=30)


@contextlib.contextmanager
def live_services(
    issuer: Issuer, nats_server: NatsServer, make_database_url: Callable[[str], str]
) -> Iterator[dict[str, Served]]:
    overrides = {"referral": {"nats_sl_password": nats_server.passwords["referral-sl"]}}
    served = {
        name: Served(
            name,
            service.create_app(
                settings_for_test(
                    service.settings,
                    issuer=issuer,
                    database_url=make_database_url(name),
                    nats_server=nats_server,
                    **overrides.get(name, {}),
                )
            ),
        )
        for name, service in SERVICES.items()
    }
    try:
        for server in served.values():
            server.start()
        for server in served.values():
            eventually(server.ready, f"{server.name} to be ready", timeout=60)
        yield served
    finally:
        for server in served.values():
            server.stop()


@pytest.fixture(scope="module")
def live(
    issuer: Issuer,
    postgres_admin_url: str | None,
    nats_passwords: dict[str, str],
    nats_server_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """The five services, live, on their own nats-server and databases, with seeds."""
    directory: Path = tmp_path_factory.mktemp("live")
    with (
        nats_server_running(directory / "nats", nats_passwords, nats_server_env) as nats_server,
        database_factory(postgres_admin_url, directory) as make_database_url,
        live_services(issuer, nats_server, make_database_url) as served,
    ):
        stack = Live(services=served, issuer=issuer)
        seed(stack)
        yield stack


# ---------------------------------------------------------------- seeds

AGENCY_OF = {"legal_stay": "immigration_office", "return": "fedasil"}


def _ok(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or (200,)), response.text
    return response.json()


def seed(stack: Live) -> None:
    """Three clients of ngo-ghent, each with a consent per agency; two referred for both tracks.

    The cases of both referrals are the case routes' seeds: both legal-stay cases and the first
    return case accepted (track work reachable), the second return case left requested (accept
    and reject reachable). The second referral's legal-stay case asks the NGO for more (a step-up
    request); that referral is the referral routes' seed. The third client's consents are the
    consent routes' seeds.
    """
    s = stack.seeds
    ngo = stack.issuer.headers(**NGO_GHENT)
    performer = {
        "legal_stay": stack.issuer.headers(sub="seed-coach", **ICAM_BRUSSELS),
        "return": stack.issuer.headers(sub="seed-counsellor", **FEDASIL_BRUSSELS),
    }
    with (
        stack.client("intake") as intake,
        stack.client("consent") as consent,
        stack.client("referral") as referral,
        stack.client("case-resolution") as case,
        stack.client("audit") as audit,
    ):
        for n in range(3):
            body = {"display_name": f"Seed Client {n}", "languages": ["fr"], "needs": ["shelter"]}
            client_ref = _ok(intake.post("/v1/clients", json=body, headers=ngo), 201)["client_ref"]
            contact = {"kind": "inform", "topics": ["shelter"], "date": "2026-01-05"}
            path = f"/v1/clients/{client_ref}/contacts"
            s.contact_ids.append(_ok(intake.post(path, json=contact, headers=ngo), 201)["id"])
            s.client_refs.append(client_ref)

        def grant(client_ref: str, agency: str) -> str | None:
            body = {
                "client_ref": client_ref,
                "recipient": agency,
                "purposes": ["referral", "feedback"],
                "categories": ["identity", "needs"],
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            }
            response = consent.post("/v1/consents", json=body, headers=ngo)
            return response.json()["consent_id"] if response.status_code == 201 else None

        consents = {
            client_ref: [
                eventually(lambda c=client_ref, a=agency: grant(c, a), "consent to know a client")
                for agency in AGENCY_OF.values()
            ]
            for client_ref in s.client_refs
        }
        s.consent_client_refs = [s.client_refs[2]]
        s.consent_ids = consents[s.client_refs[2]]

        def refer(client_ref: str) -> str | None:
            body = {"client_ref": client_ref, "tracks": list(AGENCY_OF), "urgency": "urgent"}
            response = referral.post("/v1/referrals", json=body, headers=ngo)
            return response.json()["referral_id"] if response.status_code == 201 else None

        referral_ids = [
            eventually(lambda c=client_ref: refer(c), "the bridge to see both consents")
            for client_ref in s.client_refs[:2]
        ]
        s.traced_referral_ids = list(referral_ids)
        s.referral_ids = [referral_ids[1]]
        s.referral_client_refs = [s.client_refs[1]]

        def queued(track: str, count: int) -> list[str] | None:
            page = _ok(case.get("/v1/queue", params={"limit": 200}, headers=performer[track]))
            found = [item["case_id"] for item in page["data"] if item["track"] == track]
            return found if len(found) >= count else None

        cases = {
            track: eventually(lambda t=track: queued(t, 2), f"the {track} queue")
            for track in AGENCY_OF
        }
        # Track work needs an accepted track; accept and reject need a requested one.
        for track, case_id in [
            ("legal_stay", cases["legal_stay"][0]),
            ("legal_stay", cases["legal_stay"][1]),
            ("return", cases["return"][0]),
        ]:
            accept = f"/v1/cases/{case_id}/tracks/{track}/accept"
            _ok(case.post(accept, headers=performer[track]))
        s.case_ids = [*cases["legal_stay"], *cases["return"]]
        s.case_tracks = {case_id: track for track, ids in cases.items() for case_id in ids}
        ask = {"categories": ["health"], "reason": "medical_assessment"}
        path = f"/v1/cases/{cases['legal_stay'][1]}/disclosure-requests"
        _ok(case.post(path, json=ask, headers=performer["legal_stay"]), 201)
        # Track work to read back: a session and a decision, and a return step.
        coach, counsellor = performer["legal_stay"], performer["return"]
        legal_stay = f"/v1/cases/{cases['legal_stay'][0]}"
        work = {"date": "2026-01-22", "mode": "in_person", "interpreter": False}
        held = _ok(case.post(f"{legal_stay}/sessions", json=work, headers=coach), 201)
        s.session_ids.append(held["id"])
        decided = {"decision": "undecided", "date": "2026-01-22"}
        made = _ok(case.post(f"{legal_stay}/decisions", json=decided, headers=coach), 201)
        s.decision_ids.append(made["id"])
        step = f"/v1/cases/{cases['return'][0]}/tracks/return/steps"
        moved = _ok(case.post(step, json={"step": "informing"}, headers=counsellor), 201)
        s.step_ids.extend([moved["id"]] if "id" in moved else [])

        def requests_seen() -> list[str] | None:
            page = _ok(referral.get("/v1/disclosure-requests", headers=ngo))
            return [r["request_id"] for r in page["data"]] or None

        s.request_ids = eventually(requests_seen, "the bridge to see the step-up request")

        auditor = stack.issuer.headers(role="auditor")

        def log_size() -> int | None:
            size = _ok(audit.get("/v1/log/verify", headers=auditor))["size"]
            return size if size > 10 else None

        size = eventually(log_size, "the audit log to hold the seeds' records")
        s.entry_indexes = [0, 1, size // 2, size - 1]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many cases the fuzzing sent to each service, and how long that took."""
    import sys

    for module in list(sys.modules.values()):
        cases = getattr(module, "CASES", None) if module else None
        if not cases or not getattr(module, "__name__", "").endswith("test_fuzz"):
            continue
        seconds = module.SECONDS
        terminalreporter.section("schemathesis: cases sent per service")
        for name, count in cases.items():
            terminalreporter.write_line(f"{name:16} {count:6} cases  {seconds[name]:6.1f} s")
        total = sum(seconds.values())
        terminalreporter.write_line(f"{'total':16} {sum(cases.values()):6} cases  {total:6.1f} s")
