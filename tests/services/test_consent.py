"""Consent service: grants per recipient agency, withdrawal and expiry (FHIR Consent status),
receipts, org scoping (F7), the wall against zone B (F1), id-only events and audit records (F8),
and the flow from intake through the real NATS server."""

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, select

from tests.conftest import (
    AUDITOR,
    FEDASIL_BRUSSELS,
    ICAM_BRUSSELS,
    NGO_GHENT,
    assert_problem,
    eventually,
    is_refusal_record,
    running,
)
from twoline.natsserver import credential
from twoline_consent import domain
from twoline_consent.app import create_app
from twoline_consent.calls import ACTIVE, STATUS, responders
from twoline_consent.config import Settings
from twoline_consent.consumers import HANDLERS, on_client_registered
from twoline_consent.models import (
    Consent,
    KnownClient,
)
from twoline_consent.routes import get_client_check
from twoline_intake.app import create_app as create_intake_app
from twoline_intake.config import Settings as IntakeSettings
from twoline_shared.broker import connect
from twoline_shared.codes import ConsentStatus
from twoline_shared.db import session_scope
from twoline_shared.errors import Conflict, Unavailable
from twoline_shared.events import Event, decode, new_event
from twoline_shared.outbox import OutboxMessage

NGO_ANTWERP = {"role": "ngo_caseworker", "org": "ngo-antwerp"}
NGO_GHENT_ADMIN = {"role": "ngo_admin", "org": "ngo-ghent"}
CANARY = "CANARY-5c1e Aminata Diallo, rue Haute 12, +32 470 98 76 54"
GRANTED = "firstline.consent.consent.granted"
WITHDRAWN = "firstline.consent.consent.withdrawn"
GRANTED_FIELDS = {
    "consent_id",
    "client_ref",
    "org",
    "recipient",
    "purposes",
    "categories",
    "valid_from",
    "valid_until",
}
WITHDRAWN_FIELDS = {"consent_id", "client_ref", "org", "recipient", "withdrawn_at"}
AUDIT_BASE_FIELDS = {
    "service",
    "action",
    "code",
    "subtype",
    "resource_type",
    "resource_id",
    "outcome",
    "actor",
    "roles",
    "org",
    "agency",
    "office",
    "trace_id",
}
AUDIT_FIELDS = AUDIT_BASE_FIELDS | {"consent_id", "recipient", "purposes", "categories"}


# ---------------------------------------------------------------- helpers


class FakeIntake:
    """Stands in for intake's answer to `svc.intake.client` (the NATS tests use the real one):
    the (client_ref, org) pairs it holds, and the questions it was asked."""

    def __init__(self) -> None:
        self.clients: set[tuple[str, str]] = set()
        self.asked: list[tuple[str, str]] = []
        self.error: Exception | None = None

    def holds(self, client_ref: str, org: str) -> bool:
        self.asked.append((client_ref, org))
        if self.error is not None:
            raise self.error
        return (client_ref, org) in self.clients


@pytest.fixture
def fake_intake() -> FakeIntake:
    return FakeIntake()


@pytest.fixture
def consent(
    service_settings: Callable[..., Settings], fake_intake: FakeIntake
) -> Iterator[TestClient]:
    """The consent app on a fresh database, without NATS (outbox rows stay unsent); intake's
    word on a client comes from `fake_intake`."""
    app = create_app(service_settings(Settings, "consent"))
    app.dependency_overrides[get_client_check] = lambda: fake_intake.holds
    with running(app) as client:
        client.fake_intake = fake_intake  # type: ignore[attr-defined]
        yield client


def client_registered(client_ref: str, *, org: str = "ngo-ghent") -> Event:
    return new_event(
        source="twoline/intake",
        type="firstline.intake.client.registered",
        subject=client_ref,
        client_ref=client_ref,
        org=org,
    )


def feed(client: TestClient, *events: Event) -> None:
    """Apply events through the consumer handlers, each in its own committed transaction."""
    for event in events:
        with Session(client.app.state.runtime.engine) as session:
            HANDLERS[event.type](session, event)
            session.commit()


def known_client(client: TestClient, *, org: str = "ngo-ghent") -> str:
    """A client intake registered for `org`, as the consumer would have learnt it."""
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    feed(client, client_registered(client_ref, org=org))
    return client_ref


def grant_body(client_ref: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "client_ref": client_ref,
        "recipient": "immigration_office",
        "purposes": ["referral", "feedback"],
        "categories": ["identity", "needs", "intentions"],
        "method": "verbal",
        "language": "fr",
        "interpreter": True,
        "information_version": "2026-01",
    }
    body.update(overrides)
    return body


def grant(
    client: TestClient,
    headers: dict[str, str],
    client_ref: str,
    **overrides: Any,
) -> dict[str, Any]:
    response = client.post(
        "/v1/consents", json=grant_body(client_ref, **overrides), headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def outbox(client: TestClient) -> list[Event]:
    """The events and audit records queued, without the records of refused requests."""
    with Session(client.app.state.runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.seq)).all()
        return [decode(r.payload) for r in rows if not is_refusal_record(r.subject)]


def raw_outbox(client: TestClient) -> str:
    with Session(client.app.state.runtime.engine) as session:
        rows = session.exec(select(OutboxMessage)).all()
        return "".join(r.payload.decode() + r.headers for r in rows)


def stored_consents(client: TestClient) -> list[Consent]:
    with Session(client.app.state.runtime.engine) as session:
        return list(session.exec(select(Consent)).all())


def snapshot(client: TestClient) -> tuple[Any, ...]:
    """Everything a request could change: consent rows and the outbox."""
    with Session(client.app.state.runtime.engine) as session:
        columns = Consent.__table__.columns.keys()  # type: ignore[attr-defined]
        consents = [{k: getattr(c, k) for k in columns} for c in session.exec(select(Consent))]
        subjects = session.exec(select(OutboxMessage.subject)).all()
    events = sum(not is_refusal_record(subject) for subject in subjects)
    return (sorted(consents, key=lambda c: str(c["consent_id"])), events)


def expire(client: TestClient, consent_id: str) -> None:
    """Let time pass: the consent's validity ended a minute ago."""
    with Session(client.app.state.runtime.engine) as session:
        session.exec(  # type: ignore[call-overload]
            update(Consent)
            .where(Consent.consent_id == uuid.UUID(consent_id))
            .values(valid_until=datetime.now(UTC) - timedelta(minutes=1))
        )
        session.commit()


def audit_records(client: TestClient, action: str | None = None) -> list[Event]:
    return [
        e
        for e in outbox(client)
        if e.type.startswith("audit.consent.consent.")
        and (action is None or e.data["action"] == action)
    ]


# ---------------------------------------------------------------- granting


def test_caseworker_grants_consent_for_a_known_client_and_reads_it_back_active(consent, issuer):
    ghent = issuer.headers(sub="cw-anna", **NGO_GHENT)
    client_ref = known_client(consent)
    until = (datetime.now(UTC) + timedelta(days=180)).replace(microsecond=0)

    created = grant(consent, ghent, client_ref, valid_until=until.isoformat())

    assert created["status"] == "active"
    assert created["client_ref"] == client_ref
    assert created["recipient"] == "immigration_office"
    assert created["purposes"] == ["feedback", "referral"]
    assert created["categories"] == ["identity", "intentions", "needs"]
    assert (created["method"], created["language"], created["interpreter"]) == (
        "verbal",
        "fr",
        True,
    )
    assert created["information_version"] == "2026-01"
    assert datetime.fromisoformat(created["valid_until"]) == until
    assert (created["obtained_by"], created["org"]) == ("cw-anna", "ngo-ghent")
    assert datetime.fromisoformat(created["created_at"]).tzinfo is not None
    assert created["withdrawn_at"] is None and created["withdrawal_reason"] is None
    uuid.UUID(created["consent_id"])

    read = consent.get(f"/v1/consents/{created['consent_id']}", headers=ghent)
    assert read.status_code == 200 and read.json() == created
    listed = consent.get("/v1/consents", params={"client_ref": client_ref}, headers=ghent)
    assert listed.json() == {"data": [created], "count": 1}


def test_grant_without_valid_until_is_open_ended(consent, issuer):
    client_ref = known_client(consent)
    created = grant(consent, issuer.headers(**NGO_GHENT), client_ref)
    assert created["valid_until"] is None and created["status"] == "active"


def test_each_recipient_agency_needs_its_own_grant(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    icam = grant(consent, ghent, client_ref, recipient="immigration_office")
    fedasil = grant(consent, ghent, client_ref, recipient="fedasil", purposes=["referral"])
    assert icam["consent_id"] != fedasil["consent_id"]
    grants = [e.data for e in outbox(consent) if e.type == GRANTED]
    assert [g["recipient"] for g in grants] == ["immigration_office", "fedasil"]

    # Bundling both agencies into one grant is not a request this API accepts (GDPR Art. 7(4)).
    for bundled in (
        grant_body(client_ref, recipient=["immigration_office", "fedasil"]),
        {**grant_body(client_ref), "recipients": ["immigration_office", "fedasil"]},
    ):
        response = consent.post("/v1/consents", json=bundled, headers=ghent)
        assert_problem(response, 422, "validation")
    assert len(stored_consents(consent)) == 2


def test_health_is_granted_only_when_named_never_implied(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    everything_else = [
        "identity",
        "contact",
        "household",
        "migration_history",
        "needs",
        "vulnerabilities",
        "intentions",
        "case_notes",
    ]
    created = grant(consent, ghent, client_ref, categories=everything_else)

    assert "health" not in created["categories"]
    assert "health" not in next(e for e in outbox(consent) if e.type == GRANTED).data["categories"]
    receipt = consent.get(f"/v1/consents/{created['consent_id']}/receipt", headers=ghent).json()
    assert receipt["sensitive"] is False and receipt["spiCat"] == []
    assert "health" not in receipt["piiCategory"]


def test_grant_queues_granted_event_with_ids_codes_and_categories_only(consent, issuer):
    client_ref = known_client(consent)
    until = datetime.now(UTC) + timedelta(days=30)
    created = grant(
        consent,
        issuer.headers(sub="cw-anna", **NGO_GHENT),
        client_ref,
        categories=["health", "needs"],
        information_version="sheet-CANARY-v9",
        language="ps",
        valid_until=until.isoformat(),
    )

    [event] = [e for e in outbox(consent) if e.type == GRANTED]
    assert event.subject == created["consent_id"] and event.source == "twoline/consent"
    assert set(event.data) == GRANTED_FIELDS
    assert event.data == {
        "consent_id": created["consent_id"],
        "client_ref": client_ref,
        "org": "ngo-ghent",
        "recipient": "immigration_office",
        "purposes": ["feedback", "referral"],
        "categories": ["health", "needs"],
        "valid_from": event.data["valid_from"],
        "valid_until": until.astimezone(UTC).isoformat(),
    }
    assert datetime.fromisoformat(event.data["valid_from"]) == datetime.fromisoformat(
        created["created_at"]
    )
    # How consent was obtained stays in zone A: no language, sheet or caseworker in the event,
    # and neither language nor sheet in any audit record.
    assert "cw-anna" not in json.dumps(event.data)
    raw = raw_outbox(consent)
    for private in ("CANARY", '"ps"', "interpreter", "verbal"):
        assert private not in raw


def test_grant_is_audited_with_ids_and_codes(consent, issuer):
    client_ref = known_client(consent)
    created = grant(consent, issuer.headers(sub="cw-anna", **NGO_GHENT), client_ref)

    [record] = audit_records(consent, "create")
    assert record.type == "audit.consent.consent.create"
    assert set(record.data) == AUDIT_FIELDS
    assert record.data["resource_type"] == "consent"
    assert record.data["resource_id"] == record.data["consent_id"] == created["consent_id"]
    assert record.data["recipient"] == "immigration_office"
    assert record.data["purposes"] == ["feedback", "referral"]
    assert record.data["categories"] == ["identity", "intentions", "needs"]
    assert (record.data["actor"], record.data["org"]) == ("cw-anna", "ngo-ghent")
    assert record.data["outcome"] == "success"


def test_valid_until_must_be_an_aware_future_datetime(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    for value in (
        (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat(),
        "9999-12-31T23:59:59-14:00",
        "tomorrow",
    ):
        response = consent.post(
            "/v1/consents", json=grant_body(client_ref, valid_until=value), headers=ghent
        )
        assert_problem(response, 422, "validation")
    assert stored_consents(consent) == [] and outbox(consent) == []


# ---------------------------------------------------------------- invalid input


INVALID_BODIES = {
    "bad recipient": {"recipient": "police"},
    "recipient missing": {"recipient": None},
    "empty purposes": {"purposes": []},
    "unknown purpose": {"purposes": ["enforcement"]},
    "duplicate purposes": {"purposes": ["referral", "referral"]},
    "purposes not a list": {"purposes": "referral"},
    "empty categories": {"categories": []},
    "duplicate categories": {"categories": ["needs", "health", "needs"]},
    "unknown category": {"categories": ["criminal_record"]},
    "bad method": {"method": "implied"},
    "language not ISO 639-1": {"language": "xx"},
    "language as a name": {"language": "french"},
    "language upper case": {"language": "FR"},
    "interpreter not a boolean": {"interpreter": {"yes": 1}},
    "information_version empty": {"information_version": ""},
    "information_version free text": {"information_version": "told her everything"},
    "client_ref empty": {"client_ref": ""},
    "client_ref too long": {"client_ref": "C-" + "X" * 80},
    "unknown field": {"note": CANARY},
    "status set by the caller": {"status": "active"},
}


@pytest.mark.parametrize("change", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_invalid_grant_is_422_and_nothing_is_stored(consent, issuer, change):
    client_ref = known_client(consent)
    body = {k: v for k, v in {**grant_body(client_ref), **change}.items() if v is not None}

    response = consent.post("/v1/consents", json=body, headers=issuer.headers(**NGO_GHENT))

    problem = assert_problem(response, 422, "validation")
    assert problem["errors"]
    assert CANARY not in response.text  # rejected input is never echoed (F8)
    assert stored_consents(consent) == [] and outbox(consent) == []


@pytest.mark.parametrize(
    "content, content_type",
    [
        (b'{"client_ref": "C-1", "recipient": ', "application/json"),
        (b"[]", "application/json"),
        (b'"consent"', "application/json"),
        (b"", "application/json"),
        (b"client_ref=C-1&recipient=fedasil", "application/x-www-form-urlencoded"),
    ],
    ids=["truncated JSON", "array", "string", "empty", "form"],
)
def test_malformed_grant_body_is_422_and_nothing_is_stored(consent, issuer, content, content_type):
    known_client(consent)
    headers = {**issuer.headers(**NGO_GHENT), "Content-Type": content_type}
    response = consent.post("/v1/consents", content=content, headers=headers)
    assert_problem(response, 422, "validation")
    assert stored_consents(consent) == [] and outbox(consent) == []


def test_malformed_withdraw_body_is_422_and_changes_nothing(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    created = grant(consent, ghent, known_client(consent))
    before = snapshot(consent)
    path = f"/v1/consents/{created['consent_id']}/withdraw"
    for kwargs in (
        {"content": b'{"reason": ', "headers": {**ghent, "Content-Type": "application/json"}},
        {"json": {"reason": ""}, "headers": ghent},
        {"json": {"reason": "x" * 501}, "headers": ghent},
        {"json": {"reason": "moved", "withdrawn_at": "2020-01-01T00:00:00Z"}, "headers": ghent},
    ):
        assert_problem(consent.post(path, **kwargs), 422, "validation")
    assert snapshot(consent) == before


def test_unknown_client_is_404_and_nothing_is_stored(consent, issuer):
    response = consent.post(
        "/v1/consents", json=grant_body("C-NOSUCHCLIENT"), headers=issuer.headers(**NGO_GHENT)
    )
    assert_problem(response, 404, "not-found")
    assert stored_consents(consent) == [] and outbox(consent) == []


def test_another_orgs_client_is_404_exactly_like_an_unknown_one(consent, issuer):
    antwerp_client = known_client(consent, org="ngo-antwerp")
    ghent = issuer.headers(**NGO_GHENT)

    theirs = consent.post("/v1/consents", json=grant_body(antwerp_client), headers=ghent)
    unknown = consent.post("/v1/consents", json=grant_body("C-NOSUCHCLIENT"), headers=ghent)

    body = assert_problem(theirs, 404, "not-found")
    other = assert_problem(unknown, 404, "not-found")
    assert body["detail"].replace(antwerp_client, "?") == other["detail"].replace(
        "C-NOSUCHCLIENT", "?"
    )
    assert stored_consents(consent) == [] and outbox(consent) == []


def test_unknown_consent_id_is_404_and_a_malformed_one_422(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    missing = uuid.uuid4()
    assert_problem(consent.get(f"/v1/consents/{missing}", headers=ghent), 404, "not-found")
    assert_problem(consent.get(f"/v1/consents/{missing}/receipt", headers=ghent), 404)
    assert_problem(consent.post(f"/v1/consents/{missing}/withdraw", headers=ghent), 404)
    assert_problem(consent.get("/v1/consents/not-a-uuid", headers=ghent), 422, "validation")
    assert outbox(consent) == []


def test_list_needs_a_client_ref_and_sane_paging(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    assert_problem(consent.get("/v1/consents", headers=ghent), 422, "validation")
    for params in ({"offset": -1}, {"limit": 0}, {"limit": 201}, {"limit": "many"}):
        response = consent.get(
            "/v1/consents", params={"client_ref": "C-1", **params}, headers=ghent
        )
        assert_problem(response, 422, "validation")


# ---------------------------------------------------------------- reading and org scoping


def test_reads_are_audited_one_record_per_consent_returned(consent, issuer):
    ghent = issuer.headers(sub="cw-anna", **NGO_GHENT)
    client_ref = known_client(consent)
    first = grant(consent, ghent, client_ref)
    second = grant(consent, ghent, client_ref, recipient="fedasil")

    consent.get(f"/v1/consents/{first['consent_id']}", headers=ghent)
    consent.get(f"/v1/consents/{first['consent_id']}/receipt", headers=ghent)
    consent.get("/v1/consents", params={"client_ref": client_ref}, headers=ghent)

    reads = audit_records(consent, "read")
    assert [r.data["consent_id"] for r in reads] == [
        first["consent_id"],
        first["consent_id"],
        second["consent_id"],
        first["consent_id"],
    ]
    assert all(set(r.data) == AUDIT_FIELDS and r.data["actor"] == "cw-anna" for r in reads)


def test_list_is_newest_first_and_paginated(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    ids = [grant(consent, ghent, client_ref)["consent_id"] for _ in range(3)]
    grant(consent, ghent, known_client(consent))  # another client's consent is not listed

    def page(offset: int, limit: int) -> dict[str, Any]:
        params = {"client_ref": client_ref, "offset": offset, "limit": limit}
        return consent.get("/v1/consents", params=params, headers=ghent).json()

    first, rest = page(0, 2), page(2, 2)
    assert (first["count"], rest["count"]) == (3, 3)
    assert [c["consent_id"] for c in first["data"] + rest["data"]] == ids[::-1]


def test_another_org_can_neither_see_nor_withdraw_a_consent(consent, issuer):
    client_ref = known_client(consent)
    created = grant(consent, issuer.headers(**NGO_GHENT), client_ref)
    antwerp = issuer.headers(**NGO_ANTWERP)
    before = snapshot(consent)
    cid = created["consent_id"]

    assert_problem(consent.get(f"/v1/consents/{cid}", headers=antwerp), 404, "not-found")
    assert_problem(consent.get(f"/v1/consents/{cid}/receipt", headers=antwerp), 404)
    assert_problem(consent.post(f"/v1/consents/{cid}/withdraw", headers=antwerp), 404)
    listed = consent.get("/v1/consents", params={"client_ref": client_ref}, headers=antwerp)
    assert listed.json() == {"data": [], "count": 0}
    assert snapshot(consent) == before


def test_ngo_admin_may_read_but_only_a_caseworker_records_or_withdraws(consent, issuer):
    client_ref = known_client(consent)
    created = grant(consent, issuer.headers(**NGO_GHENT), client_ref)
    admin = issuer.headers(**NGO_GHENT_ADMIN)
    cid = created["consent_id"]

    assert consent.get(f"/v1/consents/{cid}", headers=admin).status_code == 200
    assert consent.get(f"/v1/consents/{cid}/receipt", headers=admin).status_code == 200
    assert (
        consent.get("/v1/consents", params={"client_ref": client_ref}, headers=admin).json()[
            "count"
        ]
        == 1
    )
    before = snapshot(consent)
    denied = consent.post("/v1/consents", json=grant_body(client_ref), headers=admin)
    assert_problem(denied, 403, "forbidden")
    assert_problem(consent.post(f"/v1/consents/{cid}/withdraw", headers=admin), 403, "forbidden")
    assert snapshot(consent) == before


# ---------------------------------------------------------------- the wall against zone B (F1)


def every_route(app: Any, consent_id: str, client_ref: str) -> list[tuple[str, str, Any]]:
    """Each method and path the app serves under /v1 (from its OpenAPI), with real ids filled in."""
    calls = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method in operations:
            url = path.replace("{consent_id}", consent_id)
            body = None
            if (method, path) == ("post", "/v1/consents"):
                body = grant_body(client_ref)
            if (method, path) == ("get", "/v1/consents"):
                url += f"?client_ref={client_ref}"
            calls.append((method.upper(), url, body))
    return calls


def test_every_route_is_covered_by_the_access_matrix(consent):
    calls = every_route(consent.app, "ID", "C-1")
    assert {(m, p.split("?")[0]) for m, p, _ in calls} == {
        ("POST", "/v1/consents"),
        ("GET", "/v1/consents"),
        ("GET", "/v1/consents/ID"),
        ("POST", "/v1/consents/ID/withdraw"),
        ("GET", "/v1/consents/ID/receipt"),
    }


@pytest.mark.parametrize(
    "who",
    [
        ICAM_BRUSSELS,
        FEDASIL_BRUSSELS,
        AUDITOR,
        {"role": "service"},
        {"role": "ngo_caseworker"},  # no org claim: not scoped, so not allowed
        {**ICAM_BRUSSELS, "org": "ngo-ghent"},  # an org claim does not make a coach an NGO
    ],
    ids=["icam", "fedasil", "auditor", "service", "caseworker-without-org", "icam-with-org"],
)
def test_second_line_auditor_and_unscoped_tokens_get_403_on_every_route(consent, issuer, who):
    client_ref = known_client(consent)
    created = grant(consent, issuer.headers(**NGO_GHENT), client_ref)
    headers = issuer.headers(**who)
    before = snapshot(consent)

    for method, path, body in every_route(consent.app, created["consent_id"], client_ref):
        response = consent.request(method, path, json=body, headers=headers)
        problem = assert_problem(response, 403, "forbidden")
        assert client_ref not in response.text and created["consent_id"] not in problem["detail"]
    assert snapshot(consent) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["no-token", "garbage-token", "basic-auth"],
)
def test_without_a_valid_bearer_token_every_route_is_401(consent, issuer, headers):
    client_ref = known_client(consent)
    created = grant(consent, issuer.headers(**NGO_GHENT), client_ref)
    before = snapshot(consent)
    for method, path, body in every_route(consent.app, created["consent_id"], client_ref):
        response = consent.request(method, path, json=body, headers=headers)
        assert_problem(response, 401, "unauthorized")
    assert snapshot(consent) == before


def test_expired_token_is_401(consent, issuer):
    token = issuer.token(ttl=-120, **NGO_GHENT)
    response = consent.get(
        "/v1/consents", params={"client_ref": "C-1"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "unauthorized")


# ---------------------------------------------------------------- withdrawal and expiry


def test_withdrawal_makes_the_consent_inactive_and_keeps_it_on_record(consent, issuer):
    ghent = issuer.headers(sub="cw-anna", **NGO_GHENT)
    client_ref = known_client(consent)
    created = grant(consent, ghent, client_ref)
    path = f"/v1/consents/{created['consent_id']}/withdraw"

    response = consent.post(path, json={"reason": CANARY}, headers=ghent)

    assert response.status_code == 200, response.text
    withdrawn = response.json()
    assert withdrawn["status"] == "inactive"
    assert withdrawn["withdrawal_reason"] == CANARY
    assert withdrawn["withdrawn_by"] == "cw-anna"
    at = datetime.fromisoformat(withdrawn["withdrawn_at"])
    assert abs(datetime.now(UTC) - at) < timedelta(minutes=1)
    # Recorded, never deleted: the grant and how it was obtained stay demonstrable (Art. 7(1)).
    unchanged = {k: v for k, v in created.items() if not k.startswith("withdraw") and k != "status"}
    assert {k: withdrawn[k] for k in unchanged} == unchanged
    assert consent.get(f"/v1/consents/{created['consent_id']}", headers=ghent).json() == withdrawn
    assert len(stored_consents(consent)) == 1


def test_withdrawn_event_and_audit_record_carry_ids_only_never_the_reason(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    created = grant(consent, ghent, client_ref, recipient="fedasil")
    path = f"/v1/consents/{created['consent_id']}/withdraw"
    withdrawn = consent.post(path, json={"reason": CANARY}, headers=ghent).json()

    [event] = [e for e in outbox(consent) if e.type == WITHDRAWN]
    assert set(event.data) == WITHDRAWN_FIELDS
    assert event.data == {
        "consent_id": created["consent_id"],
        "client_ref": client_ref,
        "org": "ngo-ghent",
        "recipient": "fedasil",
        "withdrawn_at": event.data["withdrawn_at"],
    }
    assert datetime.fromisoformat(event.data["withdrawn_at"]) == datetime.fromisoformat(
        withdrawn["withdrawn_at"]
    )
    [record] = audit_records(consent, "withdraw")
    assert record.type == "audit.consent.consent.withdraw" and set(record.data) == AUDIT_FIELDS
    assert "CANARY" not in raw_outbox(consent)


def test_withdrawal_without_a_body_is_allowed(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    created = grant(consent, ghent, known_client(consent))
    response = consent.post(f"/v1/consents/{created['consent_id']}/withdraw", headers=ghent)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["withdrawal_reason"]) == ("inactive", None)


def test_withdrawing_twice_is_409_and_changes_nothing(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    created = grant(consent, ghent, known_client(consent))
    path = f"/v1/consents/{created['consent_id']}/withdraw"
    first = consent.post(path, json={"reason": "first"}, headers=ghent).json()
    before = snapshot(consent)

    again = consent.post(path, json={"reason": "second"}, headers=ghent)

    assert_problem(again, 409, "consent-inactive")
    assert snapshot(consent) == before
    assert consent.get(f"/v1/consents/{created['consent_id']}", headers=ghent).json() == first
    assert len([e for e in outbox(consent) if e.type == WITHDRAWN]) == 1


def test_concurrent_withdrawals_record_exactly_one(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    created = grant(consent, ghent, known_client(consent))
    path = f"/v1/consents/{created['consent_id']}/withdraw"
    start = threading.Barrier(6)
    statuses: list[int] = []

    def withdraw() -> None:
        start.wait()
        statuses.append(consent.post(path, headers=ghent).status_code)

    threads = [threading.Thread(target=withdraw) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 409, 409, 409, 409, 409]
    assert len([e for e in outbox(consent) if e.type == WITHDRAWN]) == 1
    assert len(audit_records(consent, "withdraw")) == 1


def test_expired_consent_reads_inactive_everywhere_without_a_background_job(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    soon = datetime.now(UTC) + timedelta(hours=1)
    created = grant(consent, ghent, client_ref, valid_until=soon.isoformat())
    cid = created["consent_id"]
    assert created["status"] == "active"

    expire(consent, cid)

    read = consent.get(f"/v1/consents/{cid}", headers=ghent).json()
    assert (read["status"], read["withdrawn_at"]) == ("inactive", None)
    listed = consent.get("/v1/consents", params={"client_ref": client_ref}, headers=ghent).json()
    assert [c["status"] for c in listed["data"]] == ["inactive"]
    receipt = consent.get(f"/v1/consents/{cid}/receipt", headers=ghent).json()
    assert receipt["status"] == "inactive"


def test_withdrawing_an_expired_consent_is_409(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    later = datetime.now(UTC) + timedelta(hours=1)
    created = grant(consent, ghent, known_client(consent), valid_until=later.isoformat())
    expire(consent, created["consent_id"])
    before = snapshot(consent)

    response = consent.post(f"/v1/consents/{created['consent_id']}/withdraw", headers=ghent)

    assert_problem(response, 409, "consent-inactive")
    assert snapshot(consent) == before


# ---------------------------------------------------------------- receipt


def test_receipt_has_the_kantara_fields(consent, issuer):
    ghent = issuer.headers(sub="cw-anna", **NGO_GHENT)
    client_ref = known_client(consent)
    until = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)
    created = grant(
        consent,
        ghent,
        client_ref,
        recipient="fedasil",
        purposes=["referral", "feedback"],
        categories=["health", "needs", "identity"],
        method="written",
        language="ar",
        interpreter=False,
        valid_until=until.isoformat(),
    )
    cid = created["consent_id"]

    response = consent.get(f"/v1/consents/{cid}/receipt", headers=ghent)

    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["version"] == "KI-CR-v1.1.0"
    assert receipt["jurisdiction"] == "BE"
    assert receipt["consentReceiptID"] == cid
    assert receipt["consentTimestamp"] == int(
        datetime.fromisoformat(created["created_at"]).timestamp()
    )
    assert receipt["collectionMethod"] == "written"
    assert (receipt["language"], receipt["interpreter"]) == ("ar", False)
    assert receipt["informationVersion"] == "2026-01"
    assert receipt["piiPrincipalId"] == client_ref
    assert receipt["piiControllers"] == [{"piiController": "ngo-ghent", "onBehalf": False}]
    assert receipt["piiCategory"] == ["health", "identity", "needs"]
    assert receipt["sensitive"] is True and receipt["spiCat"] == ["health"]
    assert receipt["thirdParties"] == [{"thirdPartyName": "fedasil"}]
    [service] = receipt["services"]
    assert "Fedasil" in service["service"]
    assert [p["purposeCategory"] for p in service["purposes"]] == [["feedback"], ["referral"]]
    for purpose in service["purposes"]:
        assert purpose["consentType"] == "EXPLICIT"
        assert purpose["piiCategory"] == ["health", "identity", "needs"]
        assert purpose["thirdPartyDisclosure"] is True
        assert purpose["thirdPartyName"] == "fedasil"
        assert purpose["purpose"] and until.isoformat() in purpose["termination"]
    assert datetime.fromisoformat(receipt["termination"]["validUntil"]) == until
    assert receipt["termination"]["withdrawnAt"] is None
    assert receipt["termination"]["howToWithdraw"]
    assert receipt["status"] == "active"


def test_receipt_of_a_withdrawn_consent_shows_the_withdrawal(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    created = grant(consent, ghent, known_client(consent))
    cid = created["consent_id"]
    withdrawn = consent.post(f"/v1/consents/{cid}/withdraw", json={"reason": CANARY}, headers=ghent)

    receipt = consent.get(f"/v1/consents/{cid}/receipt", headers=ghent).json()

    assert receipt["status"] == "inactive"
    assert receipt["termination"]["withdrawnAt"] == withdrawn.json()["withdrawn_at"]
    assert CANARY not in json.dumps(receipt)


# ---------------------------------------------------------------- the client.registered consumer


def test_client_registered_is_recorded_once_however_often_it_arrives(consent):
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    feed(consent, client_registered(client_ref), client_registered(client_ref))
    with Session(consent.app.state.runtime.engine) as session:
        rows = session.exec(select(KnownClient)).all()
    assert [(r.client_ref, r.org) for r in rows] == [(client_ref, "ngo-ghent")]


def test_a_later_registration_cannot_hand_a_client_to_another_org(consent, issuer):
    client_ref = known_client(consent, org="ngo-ghent")
    feed(consent, client_registered(client_ref, org="ngo-antwerp"))
    antwerp = consent.post(
        "/v1/consents", json=grant_body(client_ref), headers=issuer.headers(**NGO_ANTWERP)
    )
    assert_problem(antwerp, 404, "not-found")
    grant(consent, issuer.headers(**NGO_GHENT), client_ref)


@pytest.mark.parametrize(
    "data",
    [{}, {"client_ref": "C-1"}, {"org": "ngo-ghent"}, {"client_ref": "", "org": "ngo-ghent"}],
    ids=["empty", "no-org", "no-client-ref", "empty-client-ref"],
)
def test_malformed_client_registered_raises_so_the_kernel_retries_it(consent, data):
    event = new_event(source="twoline/intake", type="firstline.intake.client.registered", **data)
    with (
        Session(consent.app.state.runtime.engine) as session,
        pytest.raises(ValueError),
    ):
        on_client_registered(session, event)
    with Session(consent.app.state.runtime.engine) as session:
        assert session.exec(select(KnownClient)).all() == []


# ---------------------------------------------------------------- read your writes


def test_a_grant_right_after_registration_asks_intake_once_and_remembers_the_client(
    consent, issuer
):
    """Intake answered 201 a moment ago and its event is still on its way: the grant asks
    intake, is recorded, and the client is remembered so the next grant asks nothing."""
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    consent.fake_intake.clients.add((client_ref, "ngo-ghent"))
    ghent = issuer.headers(**NGO_GHENT)

    grant(consent, ghent, client_ref)
    grant(consent, ghent, client_ref, recipient="fedasil")

    assert consent.fake_intake.asked == [(client_ref, "ngo-ghent")]
    with Session(consent.app.state.runtime.engine) as session:
        assert session.get(KnownClient, client_ref).org == "ngo-ghent"
    # The registration event, arriving later, changes nothing.
    feed(consent, client_registered(client_ref))
    with Session(consent.app.state.runtime.engine) as session:
        assert len(session.exec(select(KnownClient)).all()) == 1


def test_a_client_intake_does_not_hold_in_the_callers_org_is_404(consent, issuer):
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    consent.fake_intake.clients.add((client_ref, "ngo-antwerp"))

    response = consent.post(
        "/v1/consents", json=grant_body(client_ref), headers=issuer.headers(**NGO_GHENT)
    )

    assert_problem(response, 404, "not-found")
    assert consent.fake_intake.asked == [(client_ref, "ngo-ghent")]
    assert outbox(consent) == []
    with Session(consent.app.state.runtime.engine) as session:
        assert session.exec(select(KnownClient)).all() == []


def test_a_client_known_in_another_org_is_404_without_asking_intake(consent, issuer):
    client_ref = known_client(consent, org="ngo-antwerp")
    response = consent.post(
        "/v1/consents", json=grant_body(client_ref), headers=issuer.headers(**NGO_GHENT)
    )
    assert_problem(response, 404, "not-found")
    assert consent.fake_intake.asked == []


def test_when_intake_does_not_answer_the_grant_is_503_with_retry_after_and_not_recorded(
    consent, issuer
):
    consent.fake_intake.error = Unavailable(
        "Nobody answered svc.intake.client.", slug="call-unavailable"
    )
    response = consent.post(
        "/v1/consents", json=grant_body("C-NOTHEARDYET1"), headers=issuer.headers(**NGO_GHENT)
    )
    assert_problem(response, 503, "call-unavailable")
    assert response.headers["retry-after"] == "1"
    assert outbox(consent) == []
    with Session(consent.app.state.runtime.engine) as session:
        assert session.exec(select(Consent)).all() == []


def answer(client: TestClient, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One of the consent service's call handlers, in its own transaction as the responder
    runs it, with the client's `fake_intake` answering for clients."""
    [responder] = [r for r in responders(confirm=client.fake_intake.holds) if r.subject == subject]
    with contextlib.contextmanager(session_scope)(client.app.state.runtime.engine) as session:
        return responder.handler(session, payload)


def test_the_active_call_answers_the_clients_consents_active_now_in_that_org_only(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    io = grant(consent, ghent, client_ref)
    fedasil = grant(consent, ghent, client_ref, recipient="fedasil")
    withdrawn = grant(consent, ghent, client_ref)
    consent.post(f"/v1/consents/{withdrawn['consent_id']}/withdraw", headers=ghent)
    expiring = grant(
        consent,
        ghent,
        client_ref,
        valid_until=(datetime.now(UTC) + timedelta(seconds=30)).isoformat(),
    )
    with Session(consent.app.state.runtime.engine) as session:  # its validity ends
        session.exec(
            update(Consent)
            .where(Consent.consent_id == uuid.UUID(expiring["consent_id"]))
            .values(valid_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    before = datetime.now(UTC)

    reply = answer(consent, ACTIVE, {"client_ref": client_ref, "org": "ngo-ghent"})

    assert reply["client_known"] is True
    assert before <= datetime.fromisoformat(reply["checked_at"]) <= datetime.now(UTC)
    by_id = {c["consent_id"]: c for c in reply["consents"]}
    assert set(by_id) == {io["consent_id"], fedasil["consent_id"]}
    assert by_id[io["consent_id"]] == {
        "consent_id": io["consent_id"],
        "client_ref": client_ref,
        "org": "ngo-ghent",
        "recipient": "immigration_office",
        "purposes": ["feedback", "referral"],
        "categories": ["identity", "intentions", "needs"],
        "valid_from": by_id[io["consent_id"]]["valid_from"],
        "valid_until": None,
        "status": "active",
        "withdrawn_at": None,
    }
    # Another org naming the client: nothing of it (the client is known to be Ghent's, so
    # intake is not even asked).
    other = answer(consent, ACTIVE, {"client_ref": client_ref, "org": "ngo-antwerp"})
    assert (other["client_known"], other["consents"]) == (False, [])
    assert consent.fake_intake.asked == []


def test_the_active_call_asks_intake_for_a_client_without_consents(consent):
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    consent.fake_intake.clients.add((client_ref, "ngo-ghent"))
    reply = answer(consent, ACTIVE, {"client_ref": client_ref, "org": "ngo-ghent"})
    assert (reply["client_known"], reply["consents"]) == (True, [])
    unknown = answer(consent, ACTIVE, {"client_ref": "C-NOSUCH", "org": "ngo-ghent"})
    assert unknown["client_known"] is False


def test_the_status_call_answers_what_each_consent_is_now(consent, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    client_ref = known_client(consent)
    kept = grant(consent, ghent, client_ref)
    gone = grant(consent, ghent, client_ref, recipient="fedasil")
    consent.post(f"/v1/consents/{gone['consent_id']}/withdraw", headers=ghent)

    reply = answer(
        consent,
        STATUS,
        {"consent_ids": [kept["consent_id"], gone["consent_id"], str(uuid.uuid4())]},
    )

    status = {c["consent_id"]: (c["status"], c["withdrawn_at"] is None) for c in reply["consents"]}
    assert status == {kept["consent_id"]: ("active", True), gone["consent_id"]: ("inactive", False)}


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        (ACTIVE, {"client_ref": "C-1"}),
        (ACTIVE, {"client_ref": "C-1", "org": "o", "extra": 1}),
        (STATUS, {"consent_ids": []}),
        (STATUS, {"consent_ids": ["not-a-uuid"]}),
        (STATUS, {"consent_ids": [str(uuid.uuid4())] * 65}),
    ],
)
def test_a_malformed_call_is_refused(consent, subject, payload):
    with pytest.raises(ValueError):  # pydantic: the call answers 422
        answer(consent, subject, payload)


# ---------------------------------------------------------------- pure rules and schema


def _consent(**overrides: Any) -> Consent:
    values: dict[str, Any] = {
        "client_ref": "C-1",
        "recipient": "fedasil",
        "purposes": ["referral"],
        "categories": ["needs"],
        "method": "verbal",
        "language": "fr",
        "interpreter": False,
        "information_version": "1",
        "org": "ngo-ghent",
        "obtained_by": "cw",
    }
    values.update(overrides)
    return Consent.model_validate(values)


def test_consent_status_follows_fhir_withdrawn_or_expired_is_inactive():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert domain.status_at(_consent(), now) is ConsentStatus.ACTIVE
    assert domain.status_at(_consent(valid_until=now + hour), now) is ConsentStatus.ACTIVE
    assert domain.status_at(_consent(valid_until=now), now) is ConsentStatus.INACTIVE
    assert domain.status_at(_consent(valid_until=now - hour), now) is ConsentStatus.INACTIVE
    withdrawn = _consent(valid_until=now + hour, withdrawn_at=now - hour)
    assert domain.status_at(withdrawn, now) is ConsentStatus.INACTIVE


def test_only_an_active_consent_can_be_withdrawn():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    domain.ensure_withdrawable(_consent(), now)
    for inactive in (_consent(withdrawn_at=now), _consent(valid_until=now)):
        with pytest.raises(Conflict):
            domain.ensure_withdrawable(inactive, now)


def test_only_health_is_special_category_data():
    assert domain.sensitive_categories(["needs", "vulnerabilities", "case_notes"]) == []
    assert domain.sensitive_categories(["needs", "health"]) == ["health"]


# ---------------------------------------------------------------- through the real NATS server


async def _last_on_stream(url: str, passwords: dict[str, str], subject: str) -> Any:
    """The newest FIRSTLINE message on `subject`, read with the account's admin user."""
    nc = await connect(url, credential("fl-admin", passwords), name="test:fl-admin")
    try:
        return await nc.jetstream().get_last_msg("FIRSTLINE", subject)
    finally:
        await nc.close()


@pytest.mark.nats
def test_a_client_registered_in_intake_is_granted_consent_at_once_and_the_grant_reaches_the_stream(
    service_settings, nats_server, issuer
):
    ghent = issuer.headers(**NGO_GHENT)
    with (
        running(create_intake_app(service_settings(IntakeSettings, "intake"))) as intake,
        running(create_app(service_settings(Settings, "consent"))) as consent_api,
    ):
        eventually(lambda: consent_api.get("/readyz").status_code == 200, "consent's NATS link")
        registered = intake.post(
            "/v1/clients", json={"display_name": CANARY, "languages": ["ps"]}, headers=ghent
        )
        assert registered.status_code == 201, registered.text
        client_ref = registered.json()["client_ref"]
        engine = consent_api.app.state.runtime.engine

        # At once, as a partner system does: the consent service asks intake about the client
        # its stream has not brought yet.
        created = grant(consent_api, ghent, client_ref, categories=["needs", "health"])
        with Session(engine) as session:
            assert session.get(KnownClient, client_ref).org == "ngo-ghent"
        # Another org naming that client: intake holds no such client for it.
        refused = consent_api.post(
            "/v1/consents",
            json=grant_body(client_ref),
            headers=issuer.headers(role="ngo_caseworker", org="ngo-antwerp"),
        )
        assert_problem(refused, 404, "not-found")

        def granted_sent() -> bool:
            with Session(engine) as session:
                rows = session.exec(select(OutboxMessage)).all()
                return bool(rows) and all(r.sent_at is not None for r in rows)

        eventually(granted_sent, "the relay to publish the grant and its audit record")

    message = asyncio.run(_last_on_stream(nats_server.url, nats_server.passwords, GRANTED))
    event = decode(message.data)
    assert event.data["consent_id"] == created["consent_id"]
    assert set(event.data) == GRANTED_FIELDS and event.data["categories"] == ["health", "needs"]
    assert message.headers["Nats-Msg-Id"] == event.id
    assert CANARY not in message.data.decode()
