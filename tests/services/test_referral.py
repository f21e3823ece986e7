"""Referral service (the bridge): the consent gate (F0), disclosure packages of exactly the
consented categories (F2), sealed under one data key per consent and bound to their track,
routing by municipality and language within what the consent grants, track ids only (F5), status
back from zone B with feedback gating (F6), requester cancel and withdrawal with the consent's key
destroyed (F4), the key call zone B reads packages with, org scoping (F7), idempotent requests and
projections, and the flow through the real NATS server with intake answering the disclosure
call."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import func, inspect, text
from sqlmodel import Session, SQLModel, select

from tests.conftest import NGO_GHENT, assert_problem, eventually, is_refusal_record, running
from twoline.natsserver import credential
from twoline_consent.app import create_app as create_consent_app
from twoline_consent.config import Settings as ConsentSettings
from twoline_intake.app import create_app as create_intake_app
from twoline_intake.config import Settings as IntakeSettings
from twoline_intake.domain import disclosure_package
from twoline_referral import domain, repository
from twoline_referral.app import create_app
from twoline_referral.calls import DISCLOSURE_KEY, JOINT_REVIEW, responders
from twoline_referral.config import DEMO_OFFICES, Office, Settings
from twoline_referral.consents import ConsentSource
from twoline_referral.consumers import bindings
from twoline_referral.disclosure import checked
from twoline_referral.models import (
    AccessLogEntry,
    ConsentFacts,
    ConsentsAnswer,
    ConsentView,
    DataKey,
    DisclosureRequest,
    Referral,
    ReferralTrack,
    TrackStatusEntry,
)
from twoline_referral.routes import get_consent_source, get_disclosure_fetcher
from twoline_shared.auth import Agency
from twoline_shared.broker import connect
from twoline_shared.calls import call
from twoline_shared.codes import ConsentStatus, DataCategory, TaskStatus, Track
from twoline_shared.crypto import CannotOpen, Sealed, decode_key, open_sealed
from twoline_shared.db import session_scope
from twoline_shared.errors import Conflict, NotFound, Unavailable
from twoline_shared.events import Event, decode, encode, headers_for, new_event
from twoline_shared.inbox import PERMANENT
from twoline_shared.outbox import OutboxMessage

NGO_ANTWERP = {"role": "ngo_caseworker", "org": "ngo-antwerp"}
CANARY = "CANARY-7f3a9 Mariam from Conakry, +32 470 12 34 56"
ROUTED = "secondline.referral.track.routed"
CANCELLED = "secondline.referral.track.cancelled"
ROUTED_FIELDS = {
    "track_id",
    "track",
    "agency",
    "office",
    "urgency",
    "routed_at",
    "purposes",
    "disclosure",
}
CANCELLED_FIELDS = {"track_id", "agency", "status", "reason", "at"}
# F4: the package travels sealed; no `package` key, no plaintext.
DISCLOSURE_FIELDS = {"categories", "key_id", "nonce", "ciphertext"}
IO = Agency.IMMIGRATION_OFFICE.value
FEDASIL = Agency.FEDASIL.value
BOTH = ["legal_stay", "return"]
ALL_CATEGORIES = tuple(c.value for c in DataCategory)
# A canary per personal field of the client record: none may surface outside a routed package.
PKG = "PKG-CANARY-5c1e"


def record(**overrides: Any) -> dict[str, Any]:
    """A client record as intake stores it, with a canary in every free-text field."""
    return {
        "display_name": f"{PKG}-display_name",
        "birth_year": 1991,
        "nationality": "GN",
        "languages": ["fr", "ff"],
        "municipality": None,
        "phone": f"{PKG}-phone",
        "household": [{"relation": f"{PKG}-household", "birth_year": 2016}],
        "migration_history": {"note": f"{PKG}-migration_history"},
        "needs": ["shelter", f"{PKG}-needs"],
        "health": {"note": f"{PKG}-health"},
        "vulnerabilities": [f"{PKG}-vulnerabilities"],
        "intentions": {"plans": f"{PKG}-intentions"},
        "case_notes": f"{PKG}-case_notes",
        **overrides,
    }


# ---------------------------------------------------------------- events (real kernel Events)


def consent_granted(
    client_ref: str,
    recipient: str,
    *,
    org: str = "ngo-ghent",
    consent_id: str | None = None,
    purposes: tuple[str, ...] = ("referral", "feedback"),
    categories: tuple[str, ...] = ("needs", "intentions"),
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> Event:
    consent_id = consent_id or f"CNS-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    return new_event(
        source="twoline/consent",
        type="firstline.consent.consent.granted",
        subject=consent_id,
        consent_id=consent_id,
        client_ref=client_ref,
        org=org,
        recipient=recipient,
        purposes=list(purposes),
        categories=list(categories),
        valid_from=(valid_from or now - timedelta(days=1)).isoformat(),
        valid_until=(valid_until or now + timedelta(days=365)).isoformat(),
    )


def consent_withdrawn(granted: Event) -> Event:
    data = granted.data
    return new_event(
        source="twoline/consent",
        type="firstline.consent.consent.withdrawn",
        subject=data["consent_id"],
        consent_id=data["consent_id"],
        client_ref=data["client_ref"],
        org=data["org"],
        recipient=data["recipient"],
        withdrawn_at=datetime.now(UTC).isoformat(),
    )


STATUS_VERB = {
    "accepted": "accepted",
    "rejected": "rejected",
    "completed": "completed",
    "in-progress": "status-changed",
    "on-hold": "status-changed",
    "failed": "status-changed",
    "cancelled": "status-changed",
}


def track_status(
    track: dict[str, Any],
    status: str,
    *,
    previous: str | None = None,
    reason: str | None = None,
    outcome: str | None = None,
    agency: str | None = None,
    verb: str | None = None,
) -> Event:
    """A `secondline.case.track.*` event with the track status payload of docs/events.md."""
    return new_event(
        source="twoline/case-resolution",
        type=f"secondline.case.track.{verb or STATUS_VERB[status]}",
        subject=track["track_id"],
        track_id=track["track_id"],
        case_id=str(uuid.uuid4()),
        track=track["track"],
        agency=agency or track["agency"],
        office=track["office"],
        previous_status=previous,
        status=status,
        reason=reason,
        outcome=outcome,
        at=datetime.now(UTC).isoformat(),
    )


def track_accepted(track: dict[str, Any], *, agency: str | None = None) -> Event:
    return track_status(track, "accepted", previous="requested", agency=agency)


# ---------------------------------------------------------------- helpers


class FakeIntake:
    """Stands in for intake's `svc.intake.disclosure` answer (the NATS tests use the real one)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, list[str]]] = []
        self.error: Exception | None = None

    def fetch(self, client_ref: str, org: str, categories: list[str]) -> dict[str, dict]:
        self.calls.append((client_ref, org, list(categories)))
        if self.error is not None:
            raise self.error
        if (client_ref, org) not in self.records:
            raise NotFound("No such client in this organisation.")
        asked = [DataCategory(c) for c in categories]
        return disclosure_package(self.records[(client_ref, org)], asked)


class FakeConsent:
    """Stands in for the consent service's answers (`svc.consent.active`, `.status`) here. It
    holds the grants and withdrawals a test feeds, from the moment they are fed (the real
    service has them before their events exist), and the clients a test registers. A test can
    put it ahead of the projection (`withdraw`), as the real service is while its withdrawal
    event is on its way (tests/e2e use the real service)."""

    def __init__(self) -> None:
        self.consents: dict[str, ConsentFacts] = {}
        self.clients: set[tuple[str, str]] = set()
        self.error: Exception | None = None
        self.asked: list[tuple[str, Any]] = []

    def record(self, event: Event) -> None:
        """What the consent service held when it announced `event`."""
        data = event.data
        if event.type == "firstline.consent.consent.granted":
            self.consents.setdefault(
                data["consent_id"], ConsentFacts.model_validate({**data, "status": "active"})
            )
        elif event.type == "firstline.consent.consent.withdrawn":
            self.withdraw(data["consent_id"], at=data.get("withdrawn_at"))

    def withdraw(self, consent_id: str, *, at: Any = None) -> None:
        facts = self.consents.get(consent_id)
        if facts is not None:
            self.consents[consent_id] = facts.model_copy(
                update={"status": "inactive", "withdrawn_at": at or datetime.now(UTC)}
            )

    def _now(self, facts: ConsentFacts, now: datetime) -> ConsentFacts:
        if facts.valid_until is not None and facts.valid_until <= now:
            return facts.model_copy(update={"status": "inactive"})
        return facts

    def active(self, client_ref: str, org: str) -> ConsentsAnswer:
        self.asked.append(("active", (client_ref, org)))
        if self.error is not None:
            raise self.error
        now = datetime.now(UTC)
        facts = [
            self._now(f, now)
            for f in self.consents.values()
            if (f.client_ref, f.org) == (client_ref, org)
        ]
        active = [f for f in facts if f.status == "active"]
        known = (client_ref, org) in self.clients or bool(facts)
        return ConsentsAnswer(checked_at=now, client_known=known, consents=active)

    def status(self, consent_ids: list[str]) -> ConsentsAnswer:
        self.asked.append(("status", sorted(consent_ids)))
        if self.error is not None:
            raise self.error
        now = datetime.now(UTC)
        facts = [self._now(self.consents[i], now) for i in consent_ids if i in self.consents]
        return ConsentsAnswer(checked_at=now, consents=facts)

    @property
    def source(self) -> ConsentSource:
        return ConsentSource(active=self.active, status=self.status)


@pytest.fixture
def fake_intake() -> FakeIntake:
    return FakeIntake()


@pytest.fixture
def fake_consent() -> FakeConsent:
    return FakeConsent()


@pytest.fixture
def referral(
    service_settings: Callable[..., Settings], fake_intake: FakeIntake, fake_consent: FakeConsent
) -> Iterator[TestClient]:
    """The referral app on a fresh database, without NATS (outbox rows stay unsent); intake's
    disclosure answer comes from `fake_intake`, the consent service's from `fake_consent`."""
    app = create_app(service_settings(Settings, "referral"))
    app.dependency_overrides[get_disclosure_fetcher] = lambda: fake_intake.fetch
    app.dependency_overrides[get_consent_source] = lambda: fake_consent.source
    with running(app) as client:
        client.fake_intake = fake_intake  # type: ignore[attr-defined]
        client.fake_consent = fake_consent  # type: ignore[attr-defined]
        yield client


def _no_intake(client_ref: str, org: str, categories: list[str]) -> dict[str, dict]:
    raise AssertionError("intake was asked")


def _no_consent_service() -> ConsentSource:
    def asked(*args: Any) -> ConsentsAnswer:
        raise AssertionError("the consent service was asked")

    return ConsentSource(active=asked, status=asked)


def handler_for(event_type: str, fetch: Any = _no_intake, consents: Any = None) -> Any:
    for binding in bindings(fetch_disclosure=fetch, consents=consents or _no_consent_service()):
        handler = binding.handler_for(event_type)
        if handler is not None:
            return handler
    raise AssertionError(f"no handler for {event_type}")


def feed(client: TestClient, *events: Event) -> None:
    """Apply events through the consumer handlers, each in its own committed transaction
    (intake's answer to a step-up release comes from the client's `fake_intake`, if any, and
    the consent service's from its `fake_consent`)."""
    fetch = getattr(client, "fake_intake", None)
    consents = getattr(client, "fake_consent", None)
    for event in events:
        if consents is not None:
            consents.record(event)
        with Session(client.app.state.runtime.engine) as session:
            handler_for(
                event.type,
                fetch.fetch if fetch else _no_intake,
                consents.source if consents else None,
            )(session, event)
            session.commit()


def answer_call(client: TestClient, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One of the bridge's call handlers, in its own transaction as the responder runs it, with
    the client's `fake_consent` as the consent service."""
    [responder] = [
        r for r in responders(consents=client.fake_consent.source) if r.subject == subject
    ]
    with contextlib.contextmanager(session_scope)(client.app.state.runtime.engine) as session:
        return responder.handler(session, payload)


def new_client(
    client: TestClient,
    *,
    org: str = "ngo-ghent",
    recipients: tuple[str, ...] = (IO, FEDASIL),
    categories: dict[str, tuple[str, ...]] | None = None,
    purposes: dict[str, tuple[str, ...]] | None = None,
    **fields: Any,
) -> tuple[str, dict[str, Event]]:
    """A registered client (in intake and in the bridge's projection) with a referral consent per
    recipient; returns client_ref and the grants."""
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    client.fake_intake.records[(client_ref, org)] = record(**fields)
    grants = {
        r: consent_granted(
            client_ref,
            r,
            org=org,
            **({"categories": categories[r]} if categories and r in categories else {}),
            **({"purposes": purposes[r]} if purposes and r in purposes else {}),
        )
        for r in recipients
    }
    client.fake_consent.clients.add((client_ref, org))
    feed(client, *grants.values())
    return client_ref, grants


def post_referral(
    client: TestClient,
    issuer: Any,
    client_ref: str,
    *,
    tracks: list[str] | None = None,
    who: dict[str, str] = NGO_GHENT,
    key: str | None = None,
    **extra: Any,
) -> Any:
    headers = issuer.headers(**who)
    if key is not None:
        headers["Idempotency-Key"] = key
    body = {"client_ref": client_ref, "tracks": tracks or BOTH, **extra}
    return client.post("/v1/referrals", json=body, headers=headers)


def count(client: TestClient, model: type[SQLModel]) -> int:
    with Session(client.app.state.runtime.engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def outbox(client: TestClient, prefix: str = "") -> list[tuple[OutboxMessage, Event]]:
    with Session(client.app.state.runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.seq)).all()
    # The records of refused requests only when asked for by their prefix.
    return [
        (r, decode(r.payload))
        for r in rows
        if r.subject.startswith(prefix)
        and (".route." in prefix or not is_refusal_record(r.subject))
    ]


def consent_row(client: TestClient, consent_id: str) -> ConsentView | None:
    with Session(client.app.state.runtime.engine) as session:
        return session.get(ConsentView, consent_id)


def assert_nothing_stored(client: TestClient) -> None:
    """Nothing of a refused referral is stored or sent; the outbox holds at most the audit
    records of refusals (a denying consent decision, a 401 or 403), in their own transaction."""
    assert count(client, Referral) == 0
    assert count(client, ReferralTrack) == 0
    kept = [(row.subject, e.data["outcome"]) for row, e in outbox(client)]
    assert all(subject.startswith("audit.") and outcome == "denied" for subject, outcome in kept)
    assert count(client, DataKey) == 0


def data_keys(client: TestClient) -> dict[str, DataKey]:
    """The bridge's data keys by key id (destroyed ones have `key_bytes` None)."""
    with Session(client.app.state.runtime.engine) as session:
        return {k.key_id: k for k in session.exec(select(DataKey)).all()}


def raw_rows(client: TestClient) -> str:
    """Every row of every table of the bridge's database, as stored, in one string."""
    engine = client.app.state.runtime.engine
    dump = []
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                dump.append(" ".join(_text(v) for v in row))
    return "\n".join(dump)


def _text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("latin-1")  # every byte, so that nothing hides from a scan
    return str(value)


def sealed_of(data: dict[str, Any]) -> Sealed:
    disclosure = data["disclosure"]
    return Sealed(nonce=disclosure["nonce"], ciphertext=disclosure["ciphertext"])


def opened(client: TestClient, data: dict[str, Any]) -> dict[str, Any]:
    """The package of a routed event's `data`, opened with the bridge's key and its track id."""
    key = data_keys(client)[data["disclosure"]["key_id"]].key_bytes
    assert key is not None, "the key was destroyed"
    return open_sealed(sealed_of(data), key=key, aad=data["track_id"])


# ---------------------------------------------------------------- the consent gate (F0)


def test_referral_with_both_consents_routes_two_tracks_by_track_id_only(referral, issuer):
    client_ref, grants = new_client(referral)

    response = post_referral(referral, issuer, client_ref, urgency="urgent", note=CANARY)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_ref"] == client_ref
    assert body["urgency"] == "urgent"
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert [
        (t["track"], t["agency"], t["status"], t["business_status"], t["office"])
        for t in body["tracks"]
    ] == [
        ("legal_stay", IO, "requested", "routed", "brussels"),
        ("return", FEDASIL, "requested", "routed", "brussels"),
    ]
    track_ids = {t["track_id"] for t in body["tracks"]}
    assert len(track_ids) == 2 and body["referral_id"] not in track_ids

    routed = outbox(referral, ROUTED)
    assert len(routed) == 2
    by_agency = {event.data["agency"]: (row, event) for row, event in routed}
    assert set(by_agency) == {IO, FEDASIL}
    for row, event in routed:
        # Exactly the contract of docs/events.md, and F5: no referral_id, client_ref or note.
        assert set(event.data) == ROUTED_FIELDS
        assert event.subject == event.data["track_id"] and event.type == row.subject == ROUTED
        assert event.data["urgency"] == "urgent" and event.data["office"] == "brussels"
        assert event.data["purposes"] == ["feedback", "referral"]
        assert set(event.data["disclosure"]) == DISCLOSURE_FIELDS
        assert event.data["disclosure"]["categories"] == ["intentions", "needs"]
        assert set(opened(referral, event.data)) == {"intentions", "needs"}
        assert datetime.fromisoformat(event.data["routed_at"]).tzinfo is not None
        raw = row.payload.decode() + row.headers
        consent_ids = [g.data["consent_id"] for g in grants.values()]
        for secret in (body["referral_id"], client_ref, CANARY, "Mariam", PKG, *consent_ids):
            assert secret not in raw
        assert json.loads(row.headers)["Nats-Msg-Id"] == event.id
    assert {e.data["track_id"] for _, e in routed} == track_ids
    assert by_agency[IO][1].data["track"] == "legal_stay"
    assert by_agency[FEDASIL][1].data["track"] == "return"

    # One audit record for the creation: ids, codes and the consents used, never the note (F8).
    audits = outbox(referral, "audit.referral.referral.create")
    assert len(audits) == 1
    audit = audits[0][1].data
    assert audit["resource_id"] == body["referral_id"]
    assert sorted(audit["consent_ids"]) == sorted(g.data["consent_id"] for g in grants.values())
    assert sorted(audit["agencies"]) == [FEDASIL, IO]
    assert set(audit["track_ids"]) == track_ids
    assert all("Mariam" not in row.payload.decode() for row, _ in outbox(referral))

    # The tracks remember which consent they went under (per agency, never bundled).
    with Session(referral.app.state.runtime.engine) as session:
        stored = {t.agency: t.consent_id for t in session.exec(select(ReferralTrack)).all()}
    assert stored == {a: g.data["consent_id"] for a, g in grants.items()}


def test_tracks_come_back_in_one_stable_order(referral, issuer):
    client_ref, _ = new_client(referral)
    response = post_referral(referral, issuer, client_ref, tracks=["return", "legal_stay"])
    assert [t["track"] for t in response.json()["tracks"]] == ["legal_stay", "return"]


def test_single_track_needs_only_that_agencys_consent(referral, issuer):
    client_ref, _ = new_client(referral, recipients=(FEDASIL,))

    response = post_referral(referral, issuer, client_ref, tracks=["return"])

    assert response.status_code == 201, response.text
    assert [t["agency"] for t in response.json()["tracks"]] == [FEDASIL]
    assert [e.data["agency"] for _, e in outbox(referral, ROUTED)] == [FEDASIL]


def test_missing_consent_for_one_agency_refuses_the_whole_referral(referral, issuer):
    client_ref, _ = new_client(referral, recipients=(IO,))

    response = post_referral(referral, issuer, client_ref, note=CANARY)

    body = assert_problem(response, 422, "consent-missing")
    assert body["missing_consent"] == [FEDASIL]
    assert CANARY not in response.text
    assert_nothing_stored(referral)


def test_no_consent_at_all_names_both_agencies(referral, issuer):
    client_ref, _ = new_client(referral, recipients=())

    body = assert_problem(post_referral(referral, issuer, client_ref), 422, "consent-missing")

    assert body["missing_consent"] == [IO, FEDASIL]
    assert_nothing_stored(referral)


def _withdrawn(client_ref: str) -> list[Event]:
    grant = consent_granted(client_ref, FEDASIL)
    return [grant, consent_withdrawn(grant)]


def _withdrawn_before_granted(client_ref: str) -> list[Event]:
    grant = consent_granted(client_ref, FEDASIL)
    return [consent_withdrawn(grant), grant]  # a late grant never revives a withdrawal


def _expired(client_ref: str) -> list[Event]:
    past = datetime.now(UTC) - timedelta(seconds=1)
    return [
        consent_granted(client_ref, FEDASIL, valid_from=past - timedelta(days=30), valid_until=past)
    ]


def _not_yet_valid(client_ref: str) -> list[Event]:
    future = datetime.now(UTC) + timedelta(days=2)
    return [consent_granted(client_ref, FEDASIL, valid_from=future)]


def _without_referral_purpose(client_ref: str) -> list[Event]:
    return [consent_granted(client_ref, FEDASIL, purposes=("feedback", "joint_review"))]


def _other_org(client_ref: str) -> list[Event]:
    return [consent_granted(client_ref, FEDASIL, org="ngo-antwerp")]


def _other_client(client_ref: str) -> list[Event]:
    return [consent_granted("C-SOMEONEELSE", FEDASIL)]


@pytest.mark.parametrize(
    "fedasil_consent",
    [
        _withdrawn,
        _withdrawn_before_granted,
        _expired,
        _not_yet_valid,
        _without_referral_purpose,
        _other_org,
        _other_client,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_consent_that_does_not_permit_referral_counts_as_missing(
    referral, issuer, fedasil_consent
):
    client_ref, _ = new_client(referral, recipients=(IO,))
    feed(referral, *fedasil_consent(client_ref))

    body = assert_problem(post_referral(referral, issuer, client_ref), 422, "consent-missing")

    assert body["missing_consent"] == [FEDASIL]
    assert_nothing_stored(referral)


def test_consent_to_one_agency_never_covers_the_other(referral, issuer):
    client_ref, _ = new_client(referral, recipients=(IO,))

    body = assert_problem(
        post_referral(referral, issuer, client_ref, tracks=["return"]), 422, "consent-missing"
    )
    assert body["missing_consent"] == [FEDASIL]


def test_no_role_or_setting_overrides_a_missing_consent(referral, issuer):
    """F0: there is no override flag; an unknown field that looks like one is rejected outright."""
    client_ref, _ = new_client(referral, recipients=(IO,))
    for who in (NGO_GHENT, {"role": "ngo_admin", "org": "ngo-ghent"}, {"role": "service"}):
        response = post_referral(referral, issuer, client_ref, who=who, override=True)
        assert response.status_code in (403, 422), response.text
    assert_nothing_stored(referral)


# ---------------------------------------------------------------- projections


def test_consent_projection_is_idempotent_and_withdrawal_wins(referral):
    client_ref = "C-PROJECTION01"
    grant = consent_granted(client_ref, IO)
    withdrawal = consent_withdrawn(grant)
    consent_id = grant.data["consent_id"]

    feed(referral, grant, grant)
    assert consent_row(referral, consent_id).status == ConsentStatus.ACTIVE
    feed(referral, withdrawal, grant, withdrawal, grant)
    row = consent_row(referral, consent_id)
    assert row.status == ConsentStatus.INACTIVE and row.withdrawn_at is not None
    assert row.purposes == ["feedback", "referral"] and row.recipient == IO

    # Withdrawal first, grant later (events overtaking each other): still inactive.
    late = consent_granted(client_ref, FEDASIL)
    feed(referral, consent_withdrawn(late), late)
    row = consent_row(referral, late.data["consent_id"])
    assert row.status == ConsentStatus.INACTIVE and row.purposes == ["feedback", "referral"]


def test_a_client_the_consent_service_knows_in_another_org_only_is_404(referral, issuer):
    """F7: the consent service answers for the client in the caller's org; another org naming
    the same pseudonym learns nothing, and nothing is stored."""
    client_ref, _ = new_client(referral)

    response = post_referral(referral, issuer, client_ref, who=NGO_ANTWERP)

    assert_problem(response, 404, "not-found")
    assert ("active", (client_ref, "ngo-antwerp")) in referral.fake_consent.asked
    assert_nothing_stored(referral)


def test_malformed_event_raises_so_the_kernel_retries_and_dead_letters_it(referral):
    bad = new_event(
        source="twoline/consent", type="firstline.consent.consent.granted", consent_id="CNS-x"
    )
    with pytest.raises(ValueError):
        feed(referral, bad)
    assert count(referral, ConsentView) == 0


# ---------------------------------------------------------------- idempotency


def test_same_idempotency_key_and_body_returns_the_same_referral(referral, issuer):
    """A partner whose response was lost sends the request again: the same answer (status,
    Location, the referral as it is now), marked as a replay, and nothing routed twice."""
    client_ref, _ = new_client(referral)

    first = post_referral(referral, issuer, client_ref, key="key-1", note="n")
    again = post_referral(referral, issuer, client_ref, key="key-1", note="n")

    assert first.status_code == 201, first.text
    location = f"/v1/referrals/{first.json()['referral_id']}"
    assert first.headers["location"] == location and "idempotent-replayed" not in first.headers
    assert again.status_code == 201 and again.headers["location"] == location
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert count(referral, Referral) == 1
    assert len(outbox(referral, ROUTED)) == 2  # one set of routed events
    assert len(outbox(referral, "audit.referral.referral.create")) == 1


def test_same_idempotency_key_with_another_body_is_422_and_changes_nothing(referral, issuer):
    client_ref, _ = new_client(referral)
    assert post_referral(referral, issuer, client_ref, key="key-2").status_code == 201

    for changed in (
        {"tracks": ["legal_stay"]},
        {"urgency": "urgent"},
        {"note": "something else"},
    ):
        response = post_referral(referral, issuer, client_ref, key="key-2", **changed)
        assert_problem(response, 422, "idempotency-key-reused")
    assert count(referral, Referral) == 1
    assert len(outbox(referral, ROUTED)) == 2


def test_idempotency_keys_are_scoped_to_the_org(referral, issuer):
    ghent_ref, _ = new_client(referral)
    antwerp_ref, _ = new_client(referral, org="ngo-antwerp")

    ghent = post_referral(referral, issuer, ghent_ref, key="shared-key")
    antwerp = post_referral(referral, issuer, antwerp_ref, key="shared-key", who=NGO_ANTWERP)

    assert (ghent.status_code, antwerp.status_code) == (201, 201)
    assert ghent.json()["referral_id"] != antwerp.json()["referral_id"]


def test_without_idempotency_key_each_request_is_a_new_referral(referral, issuer):
    client_ref, _ = new_client(referral)
    first = post_referral(referral, issuer, client_ref)
    second = post_referral(referral, issuer, client_ref)
    assert first.json()["referral_id"] != second.json()["referral_id"]
    assert {t["track_id"] for t in first.json()["tracks"]}.isdisjoint(
        t["track_id"] for t in second.json()["tracks"]
    )


# ---------------------------------------------------------------- tenants (F7)


def test_unknown_client_is_404_and_nothing_is_stored(referral, issuer):
    assert_problem(post_referral(referral, issuer, "C-NOSUCHCLIENT"), 404, "not-found")
    assert_nothing_stored(referral)


def test_another_orgs_client_is_404_even_with_that_orgs_consents(referral, issuer):
    client_ref, _ = new_client(referral, org="ngo-antwerp")

    assert_problem(post_referral(referral, issuer, client_ref), 404, "not-found")
    assert_nothing_stored(referral)


def test_another_orgs_referral_is_invisible(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    antwerp = issuer.headers(**NGO_ANTWERP)

    response = referral.get(f"/v1/referrals/{created['referral_id']}", headers=antwerp)
    assert_problem(response, 404, "not-found")
    listed = referral.get("/v1/referrals", params={"client_ref": client_ref}, headers=antwerp)
    assert listed.status_code == 200 and listed.json() == {"data": [], "count": 0}


# ---------------------------------------------------------------- reads


def test_caseworker_reads_and_lists_own_referrals_with_audit(referral, issuer):
    client_ref, _ = new_client(referral)
    first = post_referral(referral, issuer, client_ref, tracks=["legal_stay"], note=CANARY).json()
    second = post_referral(referral, issuer, client_ref, tracks=["return"]).json()
    headers = issuer.headers(**NGO_GHENT)

    read = referral.get(f"/v1/referrals/{first['referral_id']}", headers=headers)
    listed = referral.get("/v1/referrals", params={"client_ref": client_ref}, headers=headers)
    page = referral.get(
        "/v1/referrals", params={"client_ref": client_ref, "limit": 1}, headers=headers
    )

    assert read.status_code == 200 and read.json() == first
    assert read.json()["note"] == CANARY  # the NGO's own note, in zone A only
    assert listed.json()["count"] == 2
    assert {r["referral_id"] for r in listed.json()["data"]} == {
        first["referral_id"],
        second["referral_id"],
    }
    assert page.json()["count"] == 2 and len(page.json()["data"]) == 1
    reads = [e.data for _, e in outbox(referral, "audit.referral.referral.read")]
    assert [(a["resource_id"], a["agencies"]) for a in reads] == [(first["referral_id"], [IO])]
    assert len(outbox(referral, "audit.referral.referral.search")) == 2
    assert all(CANARY not in row.payload.decode() for row, _ in outbox(referral))


def test_reading_a_missing_referral_is_404_and_a_bad_id_422(referral, issuer):
    headers = issuer.headers(**NGO_GHENT)
    assert_problem(referral.get(f"/v1/referrals/{uuid.uuid4()}", headers=headers), 404)
    assert_problem(referral.get("/v1/referrals/not-a-uuid", headers=headers), 422, "validation")
    assert_problem(referral.get("/v1/referrals", headers=headers), 422, "validation")


# ---------------------------------------------------------------- auth


OTHER_ROLES = [
    {"role": "ngo_admin", "org": "ngo-ghent"},
    {"role": "icam_coach", "agency": "immigration_office", "office": "brussels"},
    {"role": "return_counsellor", "agency": "fedasil", "office": "brussels"},
    {"role": "auditor"},
    {"role": "service"},
    {"role": "ngo_caseworker"},  # no org claim: the role needs one
]


@pytest.mark.parametrize(
    "who", OTHER_ROLES, ids=lambda w: w["role"] + ("+org" if "org" in w else "")
)
def test_only_an_ngo_caseworker_of_an_org_may_use_referrals(referral, issuer, who):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    headers = issuer.headers(**who)

    assert_problem(post_referral(referral, issuer, client_ref, who=who), 403, "forbidden")
    assert_problem(
        referral.get(f"/v1/referrals/{created['referral_id']}", headers=headers), 403, "forbidden"
    )
    assert_problem(
        referral.get("/v1/referrals", params={"client_ref": client_ref}, headers=headers),
        403,
        "forbidden",
    )
    assert count(referral, Referral) == 1


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-jwt"}], ids=["none", "bad"]
)
def test_without_a_valid_token_every_route_is_401(referral, headers):
    body = {"client_ref": "C-X", "tracks": ["return"]}
    assert_problem(referral.post("/v1/referrals", json=body, headers=headers), 401, "unauthorized")
    assert_problem(referral.get(f"/v1/referrals/{uuid.uuid4()}", headers=headers), 401)
    assert_problem(referral.get("/v1/referrals?client_ref=C-X", headers=headers), 401)
    assert_nothing_stored(referral)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tracks": ["return"]},
        {"client_ref": "", "tracks": ["return"]},
        {"client_ref": "C-X" * 30, "tracks": ["return"]},
        {"client_ref": None, "tracks": ["return"]},
        {"client_ref": "C-X"},
        {"client_ref": "C-X", "tracks": []},
        {"client_ref": "C-X", "tracks": "return"},
        {"client_ref": "C-X", "tracks": ["return", "return"]},
        {"client_ref": "C-X", "tracks": ["asylum"]},
        {"client_ref": "C-X", "tracks": ["return", "legal_stay", "return"]},
        {"client_ref": "C-X", "tracks": ["return"], "urgency": "asap"},
        {"client_ref": "C-X", "tracks": ["return"], "note": "x" * 4001},
        {"client_ref": "C-X", "tracks": ["return"], "note": 42},
        {"client_ref": "C-X", "tracks": ["return"], "referral_id": str(uuid.uuid4())},
        ["C-X", "return"],
        None,
    ],
)
def test_malformed_body_is_422_and_nothing_is_stored(referral, issuer, body):
    client_ref, _ = new_client(referral)
    if isinstance(body, dict) and body.get("client_ref") == "C-X":
        body = {**body, "client_ref": client_ref}
    response = referral.post("/v1/referrals", json=body, headers=issuer.headers(**NGO_GHENT))
    assert_problem(response, 422, "validation")
    assert_nothing_stored(referral)


def test_rejected_input_is_never_echoed(referral, issuer):
    client_ref, _ = new_client(referral)
    response = post_referral(referral, issuer, client_ref, urgency=CANARY, note=CANARY)
    assert_problem(response, 422, "validation")
    assert "CANARY" not in response.text


def test_non_json_body_is_422(referral, issuer):
    headers = {**issuer.headers(**NGO_GHENT), "Content-Type": "application/json"}
    response = referral.post("/v1/referrals", content=b"{not json", headers=headers)
    assert_problem(response, 422)
    assert_nothing_stored(referral)


@pytest.mark.parametrize("key", ["", "k" * 256, "clé-1", "two words"])
def test_malformed_idempotency_key_is_422(referral, issuer, key):
    client_ref, _ = new_client(referral)
    headers = {**issuer.headers(**NGO_GHENT), "Idempotency-Key": key.encode()}
    body = {"client_ref": client_ref, "tracks": ["return"]}
    response = referral.post("/v1/referrals", json=body, headers=headers)
    assert_problem(response, 422, "validation")
    assert_nothing_stored(referral)


# ---------------------------------------------------------------- disclosure packages (F2)


def routed_by_agency(client: TestClient) -> dict[str, dict[str, Any]]:
    return {e.data["agency"]: e.data for _, e in outbox(client, ROUTED)}


def test_each_package_holds_exactly_its_agencys_consented_categories(referral, issuer):
    client_ref, grants = new_client(
        referral,
        categories={IO: ("identity", "needs"), FEDASIL: ("needs", "intentions", "health")},
    )

    assert post_referral(referral, issuer, client_ref).status_code == 201

    # Intake is asked once, for the union of the two consents.
    assert referral.fake_intake.calls == [
        (client_ref, "ngo-ghent", ["health", "identity", "intentions", "needs"])
    ]
    routed = routed_by_agency(referral)
    full = record()
    assert routed[IO]["disclosure"]["categories"] == ["identity", "needs"]
    assert opened(referral, routed[IO]) == {
        "identity": {
            "display_name": full["display_name"],
            "birth_year": full["birth_year"],
            "nationality": full["nationality"],
        },
        "needs": {"languages": full["languages"], "needs": full["needs"]},
    }
    assert routed[FEDASIL]["disclosure"]["categories"] == ["health", "intentions", "needs"]
    assert set(opened(referral, routed[FEDASIL])) == {"health", "intentions", "needs"}
    # No key, and no value, of what only the other agency's consent grants.
    io_package = json.dumps(opened(referral, routed[IO]))
    for other in ("health", "intentions"):
        assert other not in opened(referral, routed[IO])
        assert f"{PKG}-{other}" not in io_package
    assert f"{PKG}-display_name" not in json.dumps(opened(referral, routed[FEDASIL]))
    assert routed[IO]["purposes"] == sorted(grants[IO].data["purposes"])


def test_every_disclosure_is_an_audit_record_of_categories_without_values(referral, issuer):
    client_ref, grants = new_client(referral, categories={IO: ALL_CATEGORIES, FEDASIL: ("needs",)})
    created = post_referral(referral, issuer, client_ref).json()
    track_id = {t["agency"]: t["track_id"] for t in created["tracks"]}

    disclosures = {e.data["agency"]: e.data for _, e in outbox(referral, "audit.referral.track")}
    assert set(disclosures) == {IO, FEDASIL}
    for agency, audit in disclosures.items():
        assert audit["action"] == "disclose" and audit["roles"] == ["ngo_caseworker"]
        assert audit["resource_id"] == audit["track_id"] == track_id[agency]
        assert audit["referral_id"] == created["referral_id"]
        assert audit["consent_id"] == grants[agency].data["consent_id"]
        assert audit["office"] == "brussels"
    assert disclosures[IO]["categories"] == sorted(ALL_CATEGORIES)
    assert disclosures[FEDASIL]["categories"] == ["needs"]


def test_no_package_value_leaves_the_bridge_except_inside_a_routed_event(referral, issuer, caplog):
    client_ref, _ = new_client(referral, categories={IO: ALL_CATEGORIES, FEDASIL: ALL_CATEGORIES})
    created = post_referral(referral, issuer, client_ref).json()
    legal_stay = next(t for t in created["tracks"] if t["track"] == "legal_stay")
    feed(referral, track_accepted(legal_stay))
    referral.get(f"/v1/referrals/{created['referral_id']}", headers=issuer.headers(**NGO_GHENT))
    referral.post(
        f"/v1/referrals/{created['referral_id']}/cancel",
        json={"reason": "client_request"},
        headers=issuer.headers(**NGO_GHENT),
    )

    rows = outbox(referral)
    routed = [e.data for _, e in rows if e.type == ROUTED]
    # The values leave only sealed inside the routed events: no outbox row holds them in clear.
    assert len(routed) == 2 and all(
        f"{PKG}-health" in json.dumps(opened(referral, d)) for d in routed
    )
    assert {e.type for _, e in rows} >= {CANCELLED, "audit.referral.track.disclose"}
    for row, _ in rows:
        assert PKG not in row.payload.decode() + row.headers
    # Nor in the bridge's own tables (every row, every column as stored), nor in a log line.
    assert PKG not in raw_rows(referral) and PKG not in caplog.text
    with Session(referral.app.state.runtime.engine) as session:
        stored = [
            *session.exec(select(Referral)).all(),
            *session.exec(select(ReferralTrack)).all(),
            *session.exec(select(TrackStatusEntry)).all(),
            *session.exec(select(ConsentView)).all(),
            *session.exec(select(DataKey)).all(),
        ]
    assert stored and all(PKG not in repr(row.model_dump()) for row in stored)
    # A data key row never shows its key when it is printed.
    assert all("key_bytes" not in repr(row) for row in stored if isinstance(row, DataKey))
    assert PKG not in json.dumps(
        referral.get(
            f"/v1/referrals/{created['referral_id']}", headers=issuer.headers(**NGO_GHENT)
        ).json()
    )


def test_without_consented_categories_intake_is_not_asked(referral, issuer):
    client_ref, _ = new_client(referral, categories={IO: (), FEDASIL: ()})

    assert post_referral(referral, issuer, client_ref).status_code == 201

    assert referral.fake_intake.calls == []
    for data in routed_by_agency(referral).values():
        assert data["disclosure"]["categories"] == [] and opened(referral, data) == {}


def test_intake_unavailable_is_503_and_nothing_is_stored(referral, issuer):
    client_ref, _ = new_client(referral)
    referral.fake_intake.error = Unavailable("Nobody answered.", slug="call-unavailable")

    response = post_referral(referral, issuer, client_ref, note=CANARY)

    assert_problem(response, 503, "call-unavailable")
    assert CANARY not in response.text
    assert_nothing_stored(referral)


def test_a_client_intake_does_not_know_for_the_org_is_404_and_nothing_is_stored(referral, issuer):
    client_ref, _ = new_client(referral)
    del referral.fake_intake.records[(client_ref, "ngo-ghent")]

    assert_problem(post_referral(referral, issuer, client_ref), 404, "not-found")
    assert_nothing_stored(referral)


def test_an_intake_reply_with_other_categories_than_asked_is_refused():
    reply = {"client_ref": "C-1", "categories": {"needs": {}, "health": {"note": "x"}}}
    with pytest.raises(Unavailable):
        checked(reply, client_ref="C-1", asked=["needs"])
    with pytest.raises(Unavailable):
        checked({**reply, "client_ref": "C-2"}, client_ref="C-1", asked=["health", "needs"])
    with pytest.raises(Unavailable):
        checked({"client_ref": "C-1", "categories": []}, client_ref="C-1", asked=[])
    assert checked(reply, client_ref="C-1", asked=["health", "needs"]) == reply["categories"]


def test_routing_uses_municipality_and_language_only_as_each_consent_allows(referral, issuer):
    # ICAM may see contact and needs: Liège office; Fedasil only needs: its default office.
    client_ref, _ = new_client(
        referral,
        categories={IO: ("contact", "needs"), FEDASIL: ("needs",)},
        municipality="LIEGE",
        languages=["ar"],
    )

    created = post_referral(referral, issuer, client_ref).json()

    offices = {t["agency"]: t["office"] for t in created["tracks"]}
    assert offices == {IO: "liege", FEDASIL: "brussels"}
    assert {a: d["office"] for a, d in routed_by_agency(referral).items()} == offices


def test_a_client_in_charleroi_who_speaks_arabic_goes_where_arabic_is_spoken(referral, issuer):
    client_ref, _ = new_client(
        referral,
        categories={IO: ("contact", "needs"), FEDASIL: ("contact",)},
        municipality="Charleroi",
        languages=["ar"],
    )

    created = post_referral(referral, issuer, client_ref).json()

    offices = {t["agency"]: t["office"] for t in created["tracks"]}
    # ICAM Charleroi lists no `ar`: the default office does. Fedasil may not see the languages.
    assert offices == {IO: "brussels", FEDASIL: "charleroi"}


# ---------------------------------------------------------------- status back to the NGO (F6)


def _tracks(client: TestClient, issuer: Any, referral_id: str) -> dict[str, dict[str, Any]]:
    response = client.get(f"/v1/referrals/{referral_id}", headers=issuer.headers(**NGO_GHENT))
    return {t["track"]: t for t in response.json()["tracks"]}


def test_status_events_move_the_ngo_view_and_feedback_shows_outcome_and_progress(referral, issuer):
    client_ref, _ = new_client(referral, recipients=(IO,))
    created = post_referral(referral, issuer, client_ref, tracks=["legal_stay"]).json()
    track = created["tracks"][0]
    assert track["business_status"] == "routed" and track["feedback"] is True
    assert [p["status"] for p in track["progress"]] == ["requested"]

    feed(
        referral,
        track_status(track, "accepted", previous="requested"),
        track_status(track, "in-progress", previous="accepted"),
        track_status(track, "on-hold", previous="in-progress", reason="awaiting_documents"),
    )
    held = _tracks(referral, issuer, created["referral_id"])["legal_stay"]
    assert (held["status"], held["business_status"], held["status_reason"]) == (
        "on-hold",
        "assigned",
        "awaiting_documents",
    )

    feed(
        referral,
        track_status(track, "in-progress", previous="on-hold"),
        track_status(track, "completed", previous="in-progress", outcome="legal_stay"),
    )
    done = _tracks(referral, issuer, created["referral_id"])["legal_stay"]
    assert (done["status"], done["business_status"]) == ("completed", "closed")
    assert (done["outcome"], done["outcome_category"], done["status_reason"]) == (
        "legal_stay",
        "permanent",
        None,
    )
    assert [(p["status"], p["reason"], p["outcome"]) for p in done["progress"]] == [
        ("requested", None, None),
        ("accepted", None, None),
        ("in-progress", None, None),
        ("on-hold", "awaiting_documents", None),
        ("in-progress", None, None),
        ("completed", None, "legal_stay"),
    ]
    assert datetime.fromisoformat(done["status_changed_at"]) > datetime.fromisoformat(
        track["status_changed_at"]
    )
    updates = [e.data for _, e in outbox(referral, "audit.referral.track.update")]
    assert [u["status"] for u in updates] == [
        "accepted",
        "in-progress",
        "on-hold",
        "in-progress",
        "completed",
    ]
    assert updates[-1]["track_outcome"] == "legal_stay"
    assert updates[2]["reason"] == "awaiting_documents"
    assert all(u["outcome"] == "success" for u in updates)


def test_without_feedback_consent_the_ngo_sees_status_but_no_reason_outcome_or_progress(
    referral, issuer
):
    client_ref, _ = new_client(referral, purposes={FEDASIL: ("referral",)})
    created = post_referral(referral, issuer, client_ref).json()
    tracks = {t["track"]: t for t in created["tracks"]}
    feed(
        referral,
        track_status(tracks["return"], "rejected", previous="requested", reason="not_eligible"),
        track_status(tracks["legal_stay"], "rejected", previous="requested", reason="duplicate"),
    )

    view = _tracks(referral, issuer, created["referral_id"])
    withheld = view["return"]
    assert (withheld["status"], withheld["business_status"], withheld["feedback"]) == (
        "rejected",
        "closed",
        False,
    )
    for gated in ("status_reason", "outcome", "outcome_category", "progress"):
        assert withheld[gated] is None, gated
    # The ICAM track went under a consent with `feedback`: its reason is shown.
    assert view["legal_stay"]["feedback"] is True
    assert view["legal_stay"]["status_reason"] == "duplicate"
    listed = referral.get(
        "/v1/referrals", params={"client_ref": client_ref}, headers=issuer.headers(**NGO_GHENT)
    ).json()["data"][0]
    assert {t["track"]: t["status_reason"] for t in listed["tracks"]} == {
        "legal_stay": "duplicate",
        "return": None,
    }


def test_feedback_stops_showing_once_the_consent_is_withdrawn(referral, issuer):
    client_ref, grants = new_client(referral, recipients=(IO,))
    created = post_referral(referral, issuer, client_ref, tracks=["legal_stay"]).json()
    track = created["tracks"][0]
    feed(
        referral,
        track_status(track, "accepted"),
        track_status(track, "completed", outcome="return"),
    )
    assert _tracks(referral, issuer, created["referral_id"])["legal_stay"]["outcome"] == "return"

    feed(referral, consent_withdrawn(grants[IO]))

    shown = _tracks(referral, issuer, created["referral_id"])["legal_stay"]
    assert shown["status"] == "completed" and shown["feedback"] is False
    assert shown["outcome"] is None and shown["progress"] is None


def test_accepted_event_moves_only_that_track_to_accepted(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    legal_stay = next(t for t in created["tracks"] if t["track"] == "legal_stay")
    accepted = track_accepted(legal_stay)

    feed(referral, accepted)
    tracks = _tracks(referral, issuer, created["referral_id"])
    assert tracks["legal_stay"]["status"] == "accepted"
    assert tracks["legal_stay"]["business_status"] == "assigned"
    assert tracks["return"]["status"] == "requested"

    # Duplicates and late copies are harmless: still accepted, one audit record of the change.
    feed(referral, accepted, track_accepted(legal_stay))
    assert _tracks(referral, issuer, created["referral_id"])["legal_stay"]["status"] == "accepted"
    changes = [e.data for _, e in outbox(referral, "audit.referral.track.update")]
    assert [(c["resource_id"], c["previous_status"], c["status"]) for c in changes] == [
        (legal_stay["track_id"], "requested", "accepted")
    ]
    assert all("client_ref" not in c for c in changes)
    assert count(referral, TrackStatusEntry) == 3  # two `requested`, one `accepted`


def test_illegal_and_out_of_order_status_events_are_ignored(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    tracks = {t["track"]: t for t in created["tracks"]}
    legal_stay, ret = tracks["legal_stay"], tracks["return"]

    feed(
        referral,
        # Skipping `accepted`: a requested task cannot start or complete.
        track_status(legal_stay, "in-progress"),
        track_status(legal_stay, "completed", outcome="legal_stay"),
        # Out of a terminal status: nothing moves a rejected task.
        track_status(ret, "rejected", reason="wrong_office"),
        track_status(ret, "accepted"),
        track_status(ret, "cancelled", reason="other"),
    )

    view = _tracks(referral, issuer, created["referral_id"])
    assert view["legal_stay"]["status"] == "requested"
    assert (view["return"]["status"], view["return"]["status_reason"]) == (
        "rejected",
        "wrong_office",
    )
    assert [e.data["status"] for _, e in outbox(referral, "audit.referral.track.update")] == [
        "rejected"
    ]


@pytest.mark.parametrize(
    "broken",
    [
        {"status": "in-progress", "verb": "accepted"},  # the verb does not carry that status
        {"status": "accepted", "verb": "completed"},
        {"status": "rejected"},  # rejected needs a reason
        {"status": "on-hold"},  # so does on-hold
        {"status": "completed"},  # completed needs an outcome
        {"status": "accepted", "outcome": "return"},  # outcome only with completed
        {"status": "requested", "verb": "status-changed"},  # the performer never sets requested
        {"status": "accepted", "reason": "no_such_reason"},
        {"status": "completed", "outcome": "deported"},
    ],
)
def test_a_status_event_that_breaks_its_contract_raises_and_changes_nothing(
    referral, issuer, broken
):
    client_ref, _ = new_client(referral, recipients=(FEDASIL,))
    created = post_referral(referral, issuer, client_ref, tracks=["return"]).json()
    track = created["tracks"][0]
    status = broken.pop("status")
    verb = broken.pop("verb", STATUS_VERB.get(status))
    event = track_status(track, status, verb=verb, **broken)

    # A permanent error: the kernel dead-letters the event at once instead of retrying it.
    with pytest.raises(PERMANENT):
        feed(referral, event)

    assert _tracks(referral, issuer, created["referral_id"])["return"]["status"] == "requested"


def test_a_track_event_without_a_status_verb_is_ignored(referral, issuer):
    client_ref, _ = new_client(referral, recipients=(FEDASIL,))
    created = post_referral(referral, issuer, client_ref, tracks=["return"]).json()
    track = created["tracks"][0]

    feed(referral, track_status(track, "accepted", verb="viewed"))

    assert _tracks(referral, issuer, created["referral_id"])["return"]["status"] == "requested"


def test_accepted_event_is_ignored_unless_the_track_is_requested(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref, tracks=["return"]).json()
    track = created["tracks"][0]
    with Session(referral.app.state.runtime.engine) as session:
        row = session.get(ReferralTrack, uuid.UUID(track["track_id"]))
        row.status = TaskStatus.CANCELLED.value
        session.add(row)
        session.commit()

    feed(referral, track_accepted(track))

    assert _tracks(referral, issuer, created["referral_id"])["return"]["status"] == "cancelled"
    assert outbox(referral, "audit.referral.track.update") == []


def test_accepted_event_for_another_agency_or_unknown_track_changes_nothing(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref, tracks=["legal_stay"]).json()
    track = created["tracks"][0]

    feed(
        referral,
        track_accepted(track, agency=FEDASIL),
        track_accepted({**track, "track_id": str(uuid.uuid4())}),
    )

    assert _tracks(referral, issuer, created["referral_id"])["legal_stay"]["status"] == "requested"


# ---------------------------------------------------------------- requester cancel


def cancel(client: TestClient, issuer: Any, referral_id: str, body: Any, **who: str) -> Any:
    return client.post(
        f"/v1/referrals/{referral_id}/cancel",
        json=body,
        headers=issuer.headers(**(who or NGO_GHENT)),
    )


def test_requester_cancels_every_open_track_and_tells_zone_b_by_track_id(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()

    response = cancel(
        referral, issuer, created["referral_id"], {"reason": "client_request", "note": CANARY}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["cancel_reason"], body["cancel_note"]) == ("client_request", CANARY)
    assert body["cancelled_at"] is not None
    for track in body["tracks"]:
        assert (track["status"], track["business_status"], track["status_reason"]) == (
            "cancelled",
            "closed",
            "client_request",
        )
        assert track["progress"][-1]["status"] == "cancelled"
    events = [e for _, e in outbox(referral, CANCELLED)]
    assert sorted(e.data["track_id"] for e in events) == sorted(
        t["track_id"] for t in created["tracks"]
    )
    for event in events:
        assert set(event.data) == CANCELLED_FIELDS and event.subject == event.data["track_id"]
        assert (event.data["status"], event.data["reason"]) == ("cancelled", "client_request")
    audits = [e.data for _, e in outbox(referral, "audit.referral.referral.cancel")]
    assert len(audits) == 1 and audits[0]["reason"] == "client_request"
    assert audits[0]["previous_statuses"] == ["requested", "requested"]
    # F8: the note stays in the bridge: in no event, audit record or header.
    assert all(CANARY not in row.payload.decode() + row.headers for row, _ in outbox(referral))
    # The performer cannot revive a cancelled task.
    feed(referral, track_accepted(created["tracks"][0]))
    assert _tracks(referral, issuer, created["referral_id"])["legal_stay"]["status"] == "cancelled"


def test_cancel_leaves_closed_tracks_alone_and_then_the_referral_is_closed(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    legal_stay = next(t for t in created["tracks"] if t["track"] == "legal_stay")
    feed(
        referral,
        track_status(legal_stay, "accepted"),
        track_status(legal_stay, "completed", outcome="protection_procedure"),
    )

    first = cancel(referral, issuer, created["referral_id"], {"reason": "requester_cancelled"})
    again = cancel(referral, issuer, created["referral_id"], {"reason": "other"})

    assert first.status_code == 200, first.text
    statuses = {t["track"]: t["status"] for t in first.json()["tracks"]}
    assert statuses == {"legal_stay": "completed", "return": "cancelled"}
    assert [e.data["agency"] for _, e in outbox(referral, CANCELLED)] == [FEDASIL]
    assert_problem(again, 409, "referral-closed")
    assert len(outbox(referral, CANCELLED)) == 1
    assert first.json()["cancel_reason"] == "requester_cancelled"


def test_another_orgs_or_an_unknown_referral_cannot_be_cancelled(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()

    other = cancel(referral, issuer, created["referral_id"], {"reason": "duplicate"}, **NGO_ANTWERP)
    unknown = cancel(referral, issuer, str(uuid.uuid4()), {"reason": "duplicate"})

    assert_problem(other, 404, "not-found")
    assert_problem(unknown, 404, "not-found")
    assert outbox(referral, CANCELLED) == []
    assert {t["status"] for t in _tracks(referral, issuer, created["referral_id"]).values()} == {
        "requested"
    }


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": "consent_withdrawn"},  # the bridge's own reason, never the requester's
        {"reason": "not_eligible"},  # a performer's reason
        {"reason": "bored"},
        {"reason": None},
        {"reason": "other", "note": "x" * 4001},
        {"reason": "other", "note": 7},
        {"reason": "other", "status": "completed"},
        ["other"],
    ],
)
def test_a_malformed_cancel_is_422_and_changes_nothing(referral, issuer, body):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    before = count(referral, OutboxMessage)

    assert_problem(cancel(referral, issuer, created["referral_id"], body), 422, "validation")

    assert count(referral, OutboxMessage) == before
    view = referral.get(
        f"/v1/referrals/{created['referral_id']}", headers=issuer.headers(**NGO_GHENT)
    ).json()
    assert {t["status"] for t in view["tracks"]} == {"requested"}
    assert view["cancel_reason"] is None


def test_only_an_ngo_caseworker_may_cancel(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    for who in OTHER_ROLES:
        response = cancel(referral, issuer, created["referral_id"], {"reason": "other"}, **who)
        assert_problem(response, 403, "forbidden")
    assert outbox(referral, CANCELLED) == []


# ---------------------------------------------------------------- withdrawal (F4)


def test_withdrawal_cancels_open_tracks_and_tells_zone_b_about_every_track_under_it(
    referral, issuer
):
    client_ref, grants = new_client(referral)
    first = post_referral(referral, issuer, client_ref).json()
    second = post_referral(referral, issuer, client_ref, tracks=["legal_stay"]).json()
    done = next(t for t in first["tracks"] if t["track"] == "legal_stay")
    feed(
        referral, track_status(done, "accepted"), track_status(done, "completed", outcome="return")
    )
    open_io = second["tracks"][0]

    withdrawal = consent_withdrawn(grants[IO])
    feed(referral, withdrawal)

    first_view = _tracks(referral, issuer, first["referral_id"])
    second_view = _tracks(referral, issuer, second["referral_id"])
    assert first_view["legal_stay"]["status"] == "completed"  # terminal stays terminal
    assert first_view["return"]["status"] == "requested"  # another consent: untouched
    assert (second_view["legal_stay"]["status"], second_view["legal_stay"]["business_status"]) == (
        "cancelled",
        "closed",
    )
    events = [e.data for _, e in outbox(referral, CANCELLED)]
    # Every track under the withdrawn consent, terminal or not, so zone B purges it.
    assert sorted(e["track_id"] for e in events) == sorted([done["track_id"], open_io["track_id"]])
    assert all(e["reason"] == "consent_withdrawn" and e["agency"] == IO for e in events)
    assert all(set(e) == CANCELLED_FIELDS for e in events)
    with Session(referral.app.state.runtime.engine) as session:
        row = session.get(ReferralTrack, uuid.UUID(open_io["track_id"]))
        assert row.status_reason == "consent_withdrawn"
    audits = [e.data for _, e in outbox(referral, "audit.referral.track.cancel")]
    assert sorted((a["previous_status"], a["status"]) for a in audits) == [
        ("completed", "completed"),
        ("requested", "cancelled"),
    ]

    # F4: the consent's data key is destroyed (crypto-shredding); the other consent's is not.
    keys = {k.consent_id: k for k in data_keys(referral).values()}
    io_key, fedasil_key = (keys[grants[a].data["consent_id"]] for a in (IO, FEDASIL))
    assert io_key.key_bytes is None and io_key.destroyed_at is not None
    assert fedasil_key.key_bytes is not None and fedasil_key.destroyed_at is None
    [destroyed] = [e.data for _, e in outbox(referral, "audit.referral.disclosure-key.destroy")]
    assert destroyed["key_id"] == io_key.key_id
    assert (destroyed["consent_id"], destroyed["actor"]) == (grants[IO].data["consent_id"], None)

    # A redelivered withdrawal, or the same fact under another event id, emits nothing again.
    feed(referral, withdrawal, consent_withdrawn(grants[IO]))
    assert len(outbox(referral, CANCELLED)) == 2
    assert len(outbox(referral, "audit.referral.disclosure-key.destroy")) == 1


def test_after_withdrawal_the_track_is_closed_for_the_requester_too(referral, issuer):
    client_ref, grants = new_client(referral, recipients=(FEDASIL,))
    created = post_referral(referral, issuer, client_ref, tracks=["return"]).json()

    feed(referral, consent_withdrawn(grants[FEDASIL]))

    response = cancel(referral, issuer, created["referral_id"], {"reason": "other"})
    assert_problem(response, 409, "referral-closed")
    assert len(outbox(referral, CANCELLED)) == 1


# ---------------------------------------------------------------- sealed packages, data keys (F2, F4)


def test_routed_package_is_sealed_under_its_consents_key_and_bound_to_its_track(referral, issuer):
    client_ref, grants = new_client(referral, categories={IO: ALL_CATEGORIES, FEDASIL: ("needs",)})

    assert post_referral(referral, issuer, client_ref).status_code == 201

    routed = routed_by_agency(referral)
    by_consent = {k.consent_id: k for k in data_keys(referral).values()}
    # One key per consent: random, 256 bits, and its id tells zone B nothing about the consent.
    assert sorted(by_consent) == sorted(g.data["consent_id"] for g in grants.values())
    for agency, data in routed.items():
        consent_id = grants[agency].data["consent_id"]
        key = by_consent[consent_id]
        assert data["disclosure"]["key_id"] == key.key_id
        assert consent_id not in key.key_id and key.key_id != consent_id
        assert len(key.key_bytes) == 32 and key.destroyed_at is None
    # The outbox row holds the ciphertext and no plaintext: not a canary, not a field name.
    for row, event in outbox(referral, ROUTED):
        raw = row.payload.decode() + row.headers
        assert event.data["disclosure"]["ciphertext"] in raw
        for plaintext in (PKG, "display_name", "birth_year", "shelter", "Mariam"):
            assert plaintext not in raw
    # It opens with its consent's key and its own track id, and with nothing else.
    io, fedasil = routed[IO], routed[FEDASIL]
    io_key = by_consent[grants[IO].data["consent_id"]].key_bytes
    fedasil_key = by_consent[grants[FEDASIL].data["consent_id"]].key_bytes
    assert set(open_sealed(sealed_of(io), key=io_key, aad=io["track_id"])) == set(ALL_CATEGORIES)
    with pytest.raises(CannotOpen):
        open_sealed(sealed_of(io), key=fedasil_key, aad=io["track_id"])
    with pytest.raises(CannotOpen):
        open_sealed(sealed_of(io), key=io_key, aad=fedasil["track_id"])


def test_every_referral_under_one_consent_is_sealed_under_its_one_key(referral, issuer):
    client_ref, _ = new_client(referral, recipients=(IO,))

    for _ in range(3):
        assert post_referral(referral, issuer, client_ref, tracks=["legal_stay"]).status_code == 201

    routed = [e.data for _, e in outbox(referral, ROUTED)]
    assert len(routed) == 3 and len(data_keys(referral)) == 1
    assert len({d["disclosure"]["key_id"] for d in routed}) == 1
    # A fresh nonce for every package, and each bound to its own track.
    assert len({d["disclosure"]["nonce"] for d in routed}) == 3
    assert all(opened(referral, d) == opened(referral, routed[0]) for d in routed)


def test_a_consent_withdrawn_while_the_referral_is_built_refuses_it(referral, issuer):
    """F0, F4: the withdrawal is applied while intake is being asked; the referral does not
    route under the consent it had chosen, and no key is made for it."""
    client_ref, grants = new_client(referral, recipients=(IO,))
    fetch = referral.fake_intake.fetch

    def fetch_while_withdrawn(*args: Any) -> dict[str, dict]:
        package = fetch(*args)
        feed(referral, consent_withdrawn(grants[IO]))
        return package

    referral.app.dependency_overrides[get_disclosure_fetcher] = lambda: fetch_while_withdrawn
    response = post_referral(referral, issuer, client_ref, tracks=["legal_stay"])

    body = assert_problem(response, 422, "consent-missing")
    assert body["missing_consent"] == [IO]
    assert_nothing_stored(referral)


def test_withdrawal_destroys_the_key_in_the_same_transaction_as_the_cancels(
    referral, issuer, monkeypatch
):
    client_ref, grants = new_client(referral, recipients=(IO,))
    post_referral(referral, issuer, client_ref, tracks=["legal_stay"])
    [key] = data_keys(referral).values()

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the cancels fail")

    monkeypatch.setattr(repository, "tracks_under_consent", fail)
    with pytest.raises(RuntimeError):
        feed(referral, consent_withdrawn(grants[IO]))
    # Nothing of the withdrawal was committed: the key is intact, the consent still active.
    assert data_keys(referral)[key.key_id].key_bytes == key.key_bytes
    assert consent_row(referral, grants[IO].data["consent_id"]).status == "active"

    monkeypatch.undo()
    feed(referral, consent_withdrawn(grants[IO]))
    destroyed = data_keys(referral)[key.key_id]
    assert (destroyed.key_bytes, destroyed.consent_id) == (None, key.consent_id)
    assert destroyed.destroyed_at is not None
    assert len(outbox(referral, CANCELLED)) == 1
    # The key bytes are gone from every table of the bridge.
    assert key.key_bytes.decode("latin-1") not in raw_rows(referral)


def ask_key(client: TestClient, **payload: Any) -> dict[str, Any]:
    """The key call's handler, in its own transaction as the responder runs it."""
    return answer_call(client, DISCLOSURE_KEY, payload)


def test_the_key_call_hands_out_a_key_only_for_a_track_routed_under_it(referral, issuer):
    client_ref, grants = new_client(referral)
    post_referral(referral, issuer, client_ref)
    routed = routed_by_agency(referral)
    io, fedasil = routed[IO], routed[FEDASIL]
    io_key_id, fedasil_key_id = io["disclosure"]["key_id"], fedasil["disclosure"]["key_id"]

    reply = ask_key(referral, track_id=io["track_id"], key_id=io_key_id)

    assert set(reply) == {"key"}
    package = open_sealed(sealed_of(io), key=decode_key(reply["key"]), aad=io["track_id"])
    assert package == opened(referral, io)
    refused = [
        # An unknown track; the key of another track's consent; an unknown key.
        {"track_id": str(uuid.uuid4()), "key_id": io_key_id},
        {"track_id": io["track_id"], "key_id": fedasil_key_id},
        {"track_id": io["track_id"], "key_id": "not-a-key"},
    ]
    for payload in refused:
        with pytest.raises(NotFound):
            ask_key(referral, **payload)
    for payload in ({"track_id": "T-1", "key_id": io_key_id}, {"track_id": io["track_id"]}):
        with pytest.raises(ValueError):  # pydantic: the call answers 422
            ask_key(referral, **payload)

    feed(referral, consent_withdrawn(grants[IO]))

    # F4: the destroyed key is refused as withdrawn; the other consent's key is still handed out.
    with pytest.raises(Conflict) as raised:
        ask_key(referral, track_id=io["track_id"], key_id=io_key_id)
    assert raised.value.slug == "disclosure-withdrawn"
    assert ask_key(referral, track_id=fedasil["track_id"], key_id=fedasil_key_id)["key"]
    # Every answer is an audit record of ids and codes, never the key.
    audits = [(r, e.data) for r, e in outbox(referral, "audit.referral.disclosure-key.release")]
    assert [(a["outcome"], a.get("reason"), a["track_id"]) for _, a in audits] == [
        ("success", None, io["track_id"]),
        ("denied", "not-found", refused[0]["track_id"]),
        ("denied", "not-found", io["track_id"]),
        ("denied", "not-found", io["track_id"]),
        ("denied", "disclosure-withdrawn", io["track_id"]),
        ("success", None, fedasil["track_id"]),
    ]
    assert audits[0][1]["consent_id"] == grants[IO].data["consent_id"]
    for row, _ in audits:
        assert reply["key"] not in row.payload.decode() and PKG not in row.payload.decode()


# ---------------------------------------------------------------- consent decisions (F0)


def test_every_consent_decision_is_an_audit_record_permit_and_deny(referral, issuer):
    client_ref, grants = new_client(referral, recipients=(IO,))

    refused = post_referral(referral, issuer, client_ref)  # both tracks: no Fedasil consent
    assert_problem(refused, 422, "consent-missing")
    assert post_referral(referral, issuer, client_ref, tracks=["legal_stay"]).status_code == 201

    decisions = [e.data for _, e in outbox(referral, "audit.referral.")]
    decisions = [d for d in decisions if d["action"] == "consent-decision"]
    assert [(d["outcome"], d["resource_type"]) for d in decisions] == [
        ("denied", "client"),
        ("success", "consent"),
    ]
    denied, permitted = decisions
    assert (denied["reason"], denied["agencies"], denied["purpose"]) == (
        "consent-missing",
        [FEDASIL],
        "referral",
    )
    assert (denied["code"], denied["subtype"]) == ("E", "consent-decision")
    assert denied["actor"] and permitted["actor"]  # the caseworker who asked, both times
    assert (permitted["consent_id"], permitted["agency"], permitted["purpose"]) == (
        grants[IO].data["consent_id"],
        IO,
        "referral",
    )
    # Ids and codes only: nothing of the client's record.
    for decision in decisions:
        assert CANARY not in json.dumps(decision)


# ---------------------------------------------------------------- read your writes (F0)
# The bridge decides from the consent service's own state at that moment, not from its
# projection of the FIRSTLINE stream, which hears of a grant or a withdrawal only later.


def test_a_referral_right_after_a_grant_the_stream_has_not_brought_yet_is_routed(referral, issuer):
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    referral.fake_intake.records[(client_ref, "ngo-ghent")] = record()
    grant = consent_granted(client_ref, IO)
    referral.fake_consent.record(grant)  # the consent service answered 201; no event yet
    assert consent_row(referral, grant.data["consent_id"]) is None

    response = post_referral(referral, issuer, client_ref, tracks=["legal_stay"])

    assert response.status_code == 201, response.text
    [track] = response.json()["tracks"]
    assert track["status"] == "requested"
    # The consent entered the projection with the referral; its event, arriving later, finds it.
    adopted = consent_row(referral, grant.data["consent_id"])
    assert (adopted.status, adopted.client_ref, adopted.recipient) == ("active", client_ref, IO)
    feed(referral, grant)
    assert consent_row(referral, grant.data["consent_id"]).status == "active"
    assert count(referral, ConsentView) == 1
    # The withdrawal that follows finds the track and cancels it (F4).
    feed(referral, consent_withdrawn(grant))
    assert _tracks(referral, issuer, response.json()["referral_id"])["legal_stay"]["status"] == (
        "cancelled"
    )


def test_a_referral_right_after_a_withdrawal_the_stream_has_not_brought_yet_is_refused(
    referral, issuer
):
    client_ref, grants = new_client(referral, recipients=(IO,))
    consent_id = grants[IO].data["consent_id"]
    referral.fake_consent.withdraw(consent_id)  # answered 200; the bridge has not heard yet
    assert consent_row(referral, consent_id).status == "active"

    response = post_referral(referral, issuer, client_ref, tracks=["legal_stay"])

    body = assert_problem(response, 422, "consent-missing")
    assert body["missing_consent"] == [IO]
    assert_nothing_stored(referral)


def test_an_expired_consent_refuses_at_once(referral, issuer):
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    referral.fake_consent.clients.add((client_ref, "ngo-ghent"))
    grant = consent_granted(client_ref, IO, valid_until=datetime.now(UTC) + timedelta(days=1))
    feed(referral, grant)
    # Its validity ends (the consent service's record and the projection both say so now).
    ended = datetime.now(UTC) - timedelta(seconds=1)
    facts = referral.fake_consent.consents[grant.data["consent_id"]]
    referral.fake_consent.consents[grant.data["consent_id"]] = facts.model_copy(
        update={"valid_until": ended}
    )
    with Session(referral.app.state.runtime.engine) as session:
        session.get(ConsentView, grant.data["consent_id"]).valid_until = ended
        session.commit()

    response = post_referral(referral, issuer, client_ref, tracks=["legal_stay"])

    assert_problem(response, 422, "consent-missing")
    assert_nothing_stored(referral)


def test_a_withdrawn_projection_row_is_never_revived_by_an_answer(referral, issuer):
    """Defence in depth: should the consent service ever answer `active` for a consent the
    bridge has applied a withdrawal of, the withdrawal wins."""
    client_ref, grants = new_client(referral, recipients=(IO,))
    withdrawn = consent_withdrawn(grants[IO])
    with Session(referral.app.state.runtime.engine) as session:
        handler_for(withdrawn.type)(session, withdrawn)  # the projection only
        session.commit()

    response = post_referral(referral, issuer, client_ref, tracks=["legal_stay"])

    assert_problem(response, 422, "consent-missing")
    assert consent_row(referral, grants[IO].data["consent_id"]).status == "inactive"
    assert_nothing_stored(referral)


def test_without_an_answer_from_the_consent_service_the_referral_is_503_and_stores_nothing(
    referral, issuer
):
    client_ref, _ = new_client(referral)
    referral.fake_consent.error = Unavailable(
        "Nobody answered svc.consent.active.", slug="call-unavailable"
    )

    response = post_referral(referral, issuer, client_ref)

    assert_problem(response, 503, "call-unavailable")
    assert response.headers["retry-after"] == "1"
    assert referral.fake_intake.calls == []  # nothing was asked of intake either
    assert_nothing_stored(referral)


def test_each_consent_decision_names_the_moment_of_the_consent_state_it_was_taken_from(
    referral, issuer
):
    client_ref, _ = new_client(referral, recipients=(IO,))
    before = datetime.now(UTC)
    assert post_referral(referral, issuer, client_ref, tracks=["legal_stay"]).status_code == 201
    assert_problem(post_referral(referral, issuer, client_ref), 422, "consent-missing")

    decisions = [
        e.data
        for _, e in outbox(referral, "audit.referral.")
        if e.data["action"] == "consent-decision"
    ]
    assert [d["outcome"] for d in decisions] == ["success", "denied"]
    checked = [datetime.fromisoformat(d["consent_checked_at"]) for d in decisions]
    assert before <= checked[0] <= checked[1] <= datetime.now(UTC)


def test_the_key_is_refused_once_the_consent_service_holds_the_consent_withdrawn(referral, issuer):
    client_ref, grants = new_client(referral, recipients=(IO,))
    post_referral(referral, issuer, client_ref, tracks=["legal_stay"])
    io = routed_by_agency(referral)[IO]
    good = {"track_id": io["track_id"], "key_id": io["disclosure"]["key_id"]}
    assert set(ask_key(referral, **good)) == {"key"}

    referral.fake_consent.withdraw(grants[IO].data["consent_id"])

    with pytest.raises(Conflict) as refused:
        ask_key(referral, **good)
    assert refused.value.slug == "disclosure-withdrawn"
    # The projection and the key are as they were: only the answer changed.
    assert consent_row(referral, grants[IO].data["consent_id"]).status == "active"
    assert all(k.key_bytes is not None for k in data_keys(referral).values())


def test_the_key_is_not_released_when_the_consent_service_does_not_answer(referral, issuer):
    client_ref, _ = new_client(referral, recipients=(IO,))
    post_referral(referral, issuer, client_ref, tracks=["legal_stay"])
    io = routed_by_agency(referral)[IO]
    referral.fake_consent.error = Unavailable("down", slug="call-unavailable")

    with pytest.raises(Unavailable):
        ask_key(referral, track_id=io["track_id"], key_id=io["disclosure"]["key_id"])
    # Nothing was released, so nothing is recorded as released.
    assert outbox(referral, "audit.referral.disclosure-key.release") == []


# ---------------------------------------------------------------- who looked (F9)


def disclosure_read(track_id: str, **overrides: Any) -> Event:
    """A `secondline.case.disclosure.read` event exactly as docs/events.md defines it."""
    data = {
        "read_id": str(uuid.uuid4()),
        "track_id": track_id,
        "role": "icam_coach",
        "agency": IO,
        "office": "brussels",
        "categories": ["needs", "intentions"],
        "at": datetime.now(UTC).isoformat(),
        **overrides,
    }
    return new_event(
        source="twoline/case-resolution",
        type="secondline.case.disclosure.read",
        subject=track_id,
        **data,
    )


def access_log(client: TestClient, issuer: Any, referral_id: str, who: Any = NGO_GHENT) -> Any:
    return client.get(f"/v1/referrals/{referral_id}/access-log", headers=issuer.headers(**who))


def test_the_ngo_reads_who_looked_at_each_track_once_per_read(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref)
    referral_id = created.json()["referral_id"]
    routed = routed_by_agency(referral)
    io, fedasil = routed[IO]["track_id"], routed[FEDASIL]["track_id"]
    first = disclosure_read(io)
    second = disclosure_read(fedasil, role="return_counsellor", agency=FEDASIL, office="ghent")

    feed(referral, first, first, second)  # the first one redelivered

    response = access_log(referral, issuer, referral_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 2
    assert [
        (e["track_id"], e["track"], e["role"], e["agency"], e["office"], e["categories"])
        for e in body["data"]
    ] == [
        (io, "legal_stay", "icam_coach", IO, "brussels", ["intentions", "needs"]),
        (fedasil, "return", "return_counsellor", FEDASIL, "ghent", ["intentions", "needs"]),
    ]
    [audit] = [e.data for _, e in outbox(referral, "audit.referral.access-log.read")]
    assert (audit["resource_id"], audit["count"]) == (referral_id, 2)
    # Another org's caseworker gets the 404 of an unknown referral, and pages work.
    other = {**NGO_GHENT, "org": "ngo-liege"}
    assert_problem(access_log(referral, issuer, referral_id, other), 404, "not-found")
    paged = referral.get(
        f"/v1/referrals/{referral_id}/access-log",
        params={"limit": 1, "offset": 1},
        headers=issuer.headers(**NGO_GHENT),
    ).json()
    assert (paged["count"], [e["track_id"] for e in paged["data"]]) == (2, [fedasil])


def test_a_read_of_an_unknown_track_or_by_another_agency_is_ignored(referral, issuer, caplog):
    client_ref, _ = new_client(referral)
    referral_id = post_referral(referral, issuer, client_ref).json()["referral_id"]
    io = routed_by_agency(referral)[IO]["track_id"]

    feed(referral, disclosure_read(str(uuid.uuid4())), disclosure_read(io, agency=FEDASIL))

    assert access_log(referral, issuer, referral_id).json()["count"] == 0
    assert count(referral, AccessLogEntry) == 0
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"role": "Coach Anna"},
        {"categories": []},
        {"categories": ["name"]},
        {"at": None},
        {"office": ""},
    ],
)
def test_a_read_event_breaking_its_contract_is_refused(referral, issuer, change):
    client_ref, _ = new_client(referral)
    post_referral(referral, issuer, client_ref)
    io = routed_by_agency(referral)[IO]["track_id"]
    with pytest.raises(ValueError):  # pydantic: the consumer retries, then dead-letters it
        feed(referral, disclosure_read(io, **change))
    assert count(referral, AccessLogEntry) == 0


def test_the_access_log_of_an_unknown_referral_is_404(referral, issuer):
    assert_problem(access_log(referral, issuer, str(uuid.uuid4())), 404, "not-found")
    assert access_log(referral, issuer, "not-a-uuid").status_code == 422


# ---------------------------------------------------------------- joint review (F5, F6)

JOINT = ("referral", "feedback", "joint_review")


def ask_links(client: TestClient, track_id: str) -> list[str]:
    """The joint-review call's handler, in its own transaction as the responder runs it."""
    return answer_call(client, JOINT_REVIEW, {"track_id": track_id})["linked_track_ids"]


@pytest.mark.parametrize(
    ("io_purposes", "fedasil_purposes", "linked"),
    [
        (JOINT, JOINT, True),
        (JOINT, ("referral", "feedback"), False),
        (("referral", "feedback"), JOINT, False),
        (("referral",), ("referral",), False),
    ],
)
def test_the_two_tracks_are_linked_only_when_both_consents_grant_joint_review(
    referral, issuer, io_purposes, fedasil_purposes, linked
):
    client_ref, _ = new_client(referral, purposes={IO: io_purposes, FEDASIL: fedasil_purposes})
    assert post_referral(referral, issuer, client_ref).status_code == 201
    routed = routed_by_agency(referral)
    io, fedasil = routed[IO]["track_id"], routed[FEDASIL]["track_id"]

    assert ask_links(referral, io) == ([fedasil] if linked else [])
    assert ask_links(referral, fedasil) == ([io] if linked else [])
    # Only a link handed out is a disclosure the auditor sees (ids only).
    audits = [e.data for _, e in outbox(referral, "audit.referral.joint-review.disclose")]
    assert len(audits) == (2 if linked else 0)


def test_joint_review_links_a_later_referral_of_the_same_client_and_no_other(referral, issuer):
    """One referral to ICAM, a later one to Fedasil: the same person, so the same review."""
    client_ref, grants = new_client(referral, purposes={IO: JOINT, FEDASIL: JOINT})
    stranger, _ = new_client(referral, purposes={IO: JOINT, FEDASIL: JOINT})
    for ref, track in ((client_ref, "legal_stay"), (stranger, "return"), (client_ref, "return")):
        assert post_referral(referral, issuer, ref, tracks=[track]).status_code == 201
    io, stranger_fedasil, fedasil = [e.data["track_id"] for _, e in outbox(referral, ROUTED)]

    assert ask_links(referral, io) == [fedasil]
    assert ask_links(referral, fedasil) == [io]
    assert stranger_fedasil not in ask_links(referral, io)
    first, *_ = [e.data for _, e in outbox(referral, "audit.referral.joint-review.disclose")]
    assert (first["track_id"], first["linked_track_ids"], first["purpose"]) == (
        io,
        [fedasil],
        "joint_review",
    )
    assert (first["consent_id"], first["linked_consent_ids"]) == (
        grants[IO].data["consent_id"],
        [grants[FEDASIL].data["consent_id"]],
    )
    assert client_ref not in json.dumps(first)


@pytest.mark.parametrize("withdrawn", [IO, FEDASIL])
def test_withdrawing_either_consent_unlinks_both_sides(referral, issuer, withdrawn):
    client_ref, grants = new_client(referral, purposes={IO: JOINT, FEDASIL: JOINT})
    assert post_referral(referral, issuer, client_ref).status_code == 201
    routed = routed_by_agency(referral)
    io, fedasil = routed[IO]["track_id"], routed[FEDASIL]["track_id"]
    assert ask_links(referral, io) == [fedasil]

    feed(referral, consent_withdrawn(grants[withdrawn]))

    assert ask_links(referral, io) == []
    assert ask_links(referral, fedasil) == []


@pytest.mark.parametrize("withdrawn", [IO, FEDASIL])
def test_a_withdrawal_the_stream_has_not_brought_yet_already_unlinks(referral, issuer, withdrawn):
    """F0: the link is decided from the consent service's state, so a withdrawal it answered
    unlinks the two cases before the bridge's projection has heard of it."""
    client_ref, grants = new_client(referral, purposes={IO: JOINT, FEDASIL: JOINT})
    assert post_referral(referral, issuer, client_ref).status_code == 201
    routed = routed_by_agency(referral)
    io, fedasil = routed[IO]["track_id"], routed[FEDASIL]["track_id"]
    assert ask_links(referral, io) == [fedasil]

    referral.fake_consent.withdraw(grants[withdrawn].data["consent_id"])

    assert ask_links(referral, io) == []
    assert ask_links(referral, fedasil) == []


def test_the_joint_review_call_refuses_an_unknown_track_and_a_malformed_request(referral):
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFound):
        ask_links(referral, unknown)
    for payload in ({"track_id": "T-1"}, {}, {"track_id": unknown, "more": 1}):
        with pytest.raises(ValueError):  # pydantic: the call answers 422
            answer_call(referral, JOINT_REVIEW, payload)
    # The refusal is an audit record of its own (the call's transaction rolled back).
    [denied] = [e.data for _, e in outbox(referral, "audit.referral.joint-review.disclose")]
    assert (denied["outcome"], denied["reason"], denied["track_id"]) == (
        "denied",
        "not-found",
        unknown,
    )


def test_joint_review_rule_needs_both_consents_active_current_and_granting_it():
    now = datetime.now(UTC)
    joint = ["referral", "joint_review"]

    class _Track:
        def __init__(self, track_id: str, agency: str, consent_id: str) -> None:
            self.track_id, self.agency, self.consent_id = track_id, agency, consent_id

    track = _Track("T-io", IO, "CNS-io")
    partners = [_Track("T-f1", FEDASIL, "CNS-f1"), _Track("T-io2", IO, "CNS-io")]

    def linked(**partner_consent: Any) -> list[str]:
        consents = {
            "CNS-io": _Consent(consent_id="CNS-io", recipient=IO, purposes=joint),
            "CNS-f1": _Consent(**{"consent_id": "CNS-f1", "purposes": joint, **partner_consent}),
        }
        found = domain.joint_review_partners(track, partners, consents, now=now)
        return [p.track_id for p in found]

    # Never a track of the same agency, even under the same consent.
    assert linked() == ["T-f1"]
    assert linked(purposes=["referral", "feedback"]) == []
    assert linked(status="inactive") == []
    assert linked(valid_until=now - timedelta(seconds=1)) == []
    assert linked(valid_from=now + timedelta(hours=1)) == []
    assert domain.joint_review_partners(track, partners, {}, now=now) == []


class _Key:
    def __init__(self, **overrides: Any) -> None:
        self.key_id, self.consent_id = "K-1", "CNS-1"
        self.key_bytes: bytes | None = b"k" * 32
        self.destroyed_at: datetime | None = None
        self.__dict__.update(overrides)


def test_key_release_rule():
    active, withdrawn = _Consent(), _Consent(status="inactive")
    release = domain.KeyDecision.RELEASE
    unknown, gone = domain.KeyDecision.UNKNOWN, domain.KeyDecision.WITHDRAWN
    now = datetime.now(UTC)

    def judge(**kwargs: Any) -> domain.KeyDecision:
        return domain.judge_key_request(now=now, **kwargs)

    assert judge(track_consent_id="CNS-1", key=_Key(), consent=active) is release
    assert judge(track_consent_id=None, key=_Key(), consent=active) is unknown
    assert judge(track_consent_id="CNS-1", key=None, consent=active) is unknown
    assert judge(track_consent_id="CNS-2", key=_Key(), consent=active) is unknown
    # Destroyed, or (a key made by a referral racing the withdrawal) under an inactive consent.
    assert judge(track_consent_id="CNS-1", key=_Key(key_bytes=None), consent=active) is gone
    assert judge(track_consent_id="CNS-1", key=_Key(destroyed_at=now), consent=active) is gone
    assert judge(track_consent_id="CNS-1", key=_Key(), consent=withdrawn) is gone
    assert judge(track_consent_id="CNS-1", key=_Key(), consent=None) is gone
    # A consent past its end date is inactive: its key is no longer released.
    expired = _Consent(valid_until=now - timedelta(seconds=1))
    assert judge(track_consent_id="CNS-1", key=_Key(), consent=expired) is gone
    open_ended = _Consent(valid_until=None)
    assert judge(track_consent_id="CNS-1", key=_Key(), consent=open_ended) is release


# ---------------------------------------------------------------- domain rules (no I/O)


class _Consent:
    def __init__(self, **overrides: Any) -> None:
        now = datetime.now(UTC)
        self.consent_id = "CNS-1"
        self.client_ref = "C-1"
        self.org = "ngo-ghent"
        self.recipient = FEDASIL
        self.purposes = ["referral"]
        self.valid_from = now - timedelta(days=1)
        self.valid_until = now + timedelta(days=1)
        self.status = "active"
        self.__dict__.update(overrides)


def test_consent_rule_checks_every_condition():
    now = datetime.now(UTC)
    scope = {"org": "ngo-ghent", "client_ref": "C-1", "agency": Agency.FEDASIL, "now": now}
    assert domain.consent_permits_referral(_Consent(), **scope)
    assert domain.consent_permits_referral(_Consent(valid_until=None, valid_from=None), **scope)
    # SQLite hands back naive datetimes: they are UTC.
    naive = (now + timedelta(hours=1)).replace(tzinfo=None)
    assert domain.consent_permits_referral(_Consent(valid_until=naive), **scope)
    for broken in (
        {"status": "inactive"},
        {"org": "ngo-antwerp"},
        {"client_ref": "C-2"},
        {"recipient": IO},
        {"purposes": ["feedback"]},
        {"valid_until": now},
        {"valid_from": now + timedelta(seconds=1)},
    ):
        assert not domain.consent_permits_referral(_Consent(**broken), **scope), broken


def test_choose_consents_prefers_the_longest_lived_and_reports_missing():
    now = datetime.now(UTC)
    short = _Consent(consent_id="A", valid_until=now + timedelta(days=1))
    open_ended = _Consent(consent_id="B", valid_until=None)
    longer = _Consent(consent_id="C", valid_until=now + timedelta(days=9))
    chosen, missing = domain.choose_consents(
        [Agency.IMMIGRATION_OFFICE, Agency.FEDASIL],
        [short, longer, open_ended],
        org="ngo-ghent",
        client_ref="C-1",
        now=now,
    )
    assert chosen == {Agency.FEDASIL: open_ended} and missing == [Agency.IMMIGRATION_OFFICE]
    chosen, _ = domain.choose_consents(
        [Agency.FEDASIL], [short, longer], org="ngo-ghent", client_ref="C-1", now=now
    )
    assert chosen[Agency.FEDASIL] is longer


def test_track_moves_follow_the_shared_fhir_task_state_machine():
    assert domain.judge_move("requested", "accepted") is domain.Move.APPLY
    assert domain.judge_move("accepted", "accepted") is domain.Move.SAME
    assert domain.judge_move("on-hold", "in-progress") is domain.Move.APPLY
    for current, target in (
        ("requested", "completed"),
        ("requested", "in-progress"),
        ("completed", "cancelled"),
        ("cancelled", "accepted"),
        ("rejected", "accepted"),
        ("on-hold", "completed"),
        ("bogus", "accepted"),
    ):
        assert domain.judge_move(current, target) is domain.Move.ILLEGAL, (current, target)


def test_business_status_follows_the_task_status():
    assert domain.business_status_for("requested") == "routed"
    for status in ("accepted", "in-progress", "on-hold"):
        assert domain.business_status_for(status) == "assigned"
    for status in ("completed", "cancelled", "rejected", "failed"):
        assert domain.business_status_for(status) == "closed"


def test_feedback_needs_an_active_current_consent_with_the_feedback_purpose():
    now = datetime.now(UTC)
    assert domain.consent_allows_feedback(_Consent(purposes=["referral", "feedback"]), now=now)
    assert not domain.consent_allows_feedback(None, now=now)
    for broken in (
        {"purposes": ["referral"]},
        {"purposes": ["referral", "feedback"], "status": "inactive"},
        {"purposes": ["referral", "feedback"], "valid_until": now},
    ):
        assert not domain.consent_allows_feedback(_Consent(**broken), now=now), broken


def test_consent_status_rules():
    assert domain.status_after_grant(None) == ConsentStatus.ACTIVE
    assert domain.status_after_grant("active") == ConsentStatus.ACTIVE
    assert domain.status_after_grant("inactive") == ConsentStatus.INACTIVE
    assert domain.status_after_withdrawal("active") == ConsentStatus.INACTIVE


def test_tracks_map_to_agencies():
    assert domain.agencies_for([Track.RETURN, Track.LEGAL_STAY]) == [
        Agency.FEDASIL,
        Agency.IMMIGRATION_OFFICE,
    ]


# ---------------------------------------------------------------- routing rules (no I/O)

DEFAULTS = {IO: "brussels", FEDASIL: "brussels"}


def route(
    categories: tuple[str, ...],
    *,
    municipality: str | None = None,
    languages: list[str] | None = None,
    agency: Agency = Agency.IMMIGRATION_OFFICE,
    offices: dict[str, dict[str, Office]] = DEMO_OFFICES,
    defaults: dict[str, str] = DEFAULTS,
) -> str:
    # The package holds what intake has; the consent's categories decide what routing may read.
    package = {
        "contact": {"municipality": municipality, "phone": None},
        "needs": {"languages": languages or [], "needs": []},
    }
    return domain.route_office(
        agency, categories=categories, package=package, offices=offices, default_office=defaults
    )


def test_municipality_routes_only_under_a_contact_consent():
    assert route(("contact",), municipality="Gent") == "ghent"
    assert route(("contact",), municipality="Anvers") == "antwerp"
    assert route(("contact",), municipality="Schaerbeek") == "brussels"
    assert route(("contact",), municipality="Mons", agency=Agency.FEDASIL) == "charleroi"
    # The same municipality, but the consent does not grant `contact`: the default office.
    assert route(("needs", "identity"), municipality="Gent") == "brussels"
    assert route((), municipality="Gent") == "brussels"


def test_municipality_matching_ignores_case_accents_hyphens_and_spaces():
    for spelling in ("Liège", "liege", "LIEGE", " Liége ", "LUIK"):
        assert route(("contact",), municipality=spelling) == "liege", spelling
    for spelling in ("La Louvière", "la-louviere", "LALOUVIERE"):
        assert route(("contact",), municipality=spelling) == "charleroi", spelling
    for spelling in ("Sint-Jans-Molenbeek", "sint jans molenbeek", "MOLENBEEK SAINT-JEAN"):
        assert route(("contact",), municipality=spelling) == "brussels", spelling
    assert domain.normalise_place("Woluwe-Saint-Lambert") == "woluwesaintlambert"


def test_an_unknown_or_missing_municipality_goes_to_the_default_office():
    assert route(("contact",), municipality="Arlon") == "brussels"
    assert route(("contact",), municipality=None) == "brussels"
    assert route(("contact",), municipality=" - ") == "brussels"
    assert route(("contact",), municipality="Gent", defaults={IO: "liege", FEDASIL: "ghent"}) == (
        "ghent"
    )
    assert route((), defaults={IO: "liege", FEDASIL: "ghent"}) == "liege"


def test_language_preference_applies_only_under_a_needs_consent():
    # ICAM Charleroi lists no `ar`; the default office (Brussels) does and comes first.
    assert route(("contact", "needs"), municipality="Charleroi", languages=["ar"]) == "brussels"
    assert route(("contact",), municipality="Charleroi", languages=["ar"]) == "charleroi"


def test_language_preference_follows_the_clients_order_then_default_then_table_order():
    # `ps` first: only ICAM Ghent lists it, although Brussels lists the second language.
    assert route(("contact", "needs"), municipality="Mons", languages=["ps", "ar"]) == "ghent"
    # `nl`: the default office (Brussels) lists it, before Antwerp and Ghent in the table.
    assert route(("contact", "needs"), municipality="Charleroi", languages=["nl"]) == "brussels"
    # Without Brussels as default, the first office in table order that lists it.
    moved = {IO: "charleroi", FEDASIL: "brussels"}
    assert route(("needs",), languages=["nl"], defaults=moved) == "brussels"
    assert route(("needs",), languages=["de"], defaults=moved) == "liege"


def test_an_office_that_speaks_one_of_the_languages_is_kept():
    assert route(("contact", "needs"), municipality="Namur", languages=["ar", "fr"]) == "charleroi"
    # Nobody lists the language: the candidate stays.
    assert route(("contact", "needs"), municipality="Namur", languages=["zu"]) == "charleroi"
    assert route(("needs",), languages=[]) == "brussels"


def test_demo_table_covers_both_agencies_with_different_language_lists():
    for agency in (IO, FEDASIL):
        assert list(DEMO_OFFICES[agency]) == ["brussels", "antwerp", "ghent", "liege", "charleroi"]
    assert "ar" not in DEMO_OFFICES[IO]["charleroi"].languages
    assert DEMO_OFFICES[IO]["liege"].languages != DEMO_OFFICES[FEDASIL]["liege"].languages


def test_routing_settings_are_validated(monkeypatch):
    settings = Settings(nats_enabled=False)
    assert settings.routing_default_office == DEFAULTS
    assert settings.routing_offices == DEMO_OFFICES
    with pytest.raises(ValueError):
        Settings(routing_default_office={IO: "brussels"})  # an agency without a default
    with pytest.raises(ValueError):
        Settings(routing_default_office={IO: "arlon", FEDASIL: "brussels"})  # not in the table
    one = {"brussels": {"languages": ["fr"], "municipalities": ["Bruxelles"]}}
    for broken in (
        {IO: {"brussels": {"languages": ["french"], "municipalities": []}}, FEDASIL: one},
        {IO: one, FEDASIL: one, "police": one},
        {IO: one, FEDASIL: {**one, "x": {"languages": [], "municipalities": ["BRUXELLES"]}}},
        {IO: one, FEDASIL: {"brussels": {"languages": [], "municipalities": [], "extra": 1}}},
        {IO: one},
    ):
        with pytest.raises(ValueError):
            Settings(routing_offices=broken)

    table = {
        IO: {"namur": {"languages": ["fr"], "municipalities": ["Namur"]}},
        FEDASIL: {"arlon": {"languages": ["fr", "de"], "municipalities": ["Arlon"]}},
    }
    monkeypatch.setenv("TWOLINE_REFERRAL_ROUTING_OFFICES", json.dumps(table))
    monkeypatch.setenv(
        "TWOLINE_REFERRAL_ROUTING_DEFAULT_OFFICE", json.dumps({IO: "namur", FEDASIL: "arlon"})
    )
    from_env = Settings()
    assert from_env.routing_offices[FEDASIL]["arlon"].languages == ["fr", "de"]
    assert (
        route(
            ("contact",),
            municipality="ARLON",
            agency=Agency.FEDASIL,
            offices=from_env.routing_offices,
            defaults=from_env.routing_default_office,
        )
        == "arlon"
    )


def test_package_for_holds_only_the_consented_categories_that_were_disclosed():
    disclosed = {"needs": {"needs": ["x"]}, "health": {"health": {"n": 1}}}
    assert domain.package_for(["needs"], disclosed) == {"needs": {"needs": ["x"]}}
    assert domain.package_for(["needs", "health", "bogus"], disclosed) == disclosed
    assert domain.package_for([], disclosed) == {}
    assert domain.disclosed_categories(["needs", "bogus", "health", "needs"]) == ["health", "needs"]
    assert domain.union_of_categories(
        [_Consent(categories=["needs"]), _Consent(categories=["health", "needs", "bogus"])]
    ) == ["health", "needs"]


# ---------------------------------------------------------------- through the real NATS server


async def _publish(url: str, passwords: dict[str, str], user: str, events: list[Event]) -> None:
    nc = await connect(url, credential(user, passwords), name=f"test:{user}")
    try:
        js = nc.jetstream()
        for event in events:
            await js.publish(event.type, encode(event), headers=headers_for(event), timeout=5)
    finally:
        await nc.close()


async def _read(
    url: str, passwords: dict[str, str], user: str, stream: str, subject: str, expect: int
) -> list[Any]:
    """Messages on `subject` through an ephemeral pull consumer (admin user of that account)."""
    nc = await connect(url, credential(user, passwords), name=f"test:{user}")
    try:
        js = nc.jetstream()
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30
        )
        sub = await js.pull_subscribe(subject, stream=stream, config=config)
        messages: list[Any] = []
        deadline = time.monotonic() + 15
        while len(messages) < expect and time.monotonic() < deadline:
            try:
                messages += await sub.fetch(expect - len(messages), timeout=1)
            except TimeoutError:
                continue
        # Anything beyond what we expect would be a duplicate delivery to zone B.
        with contextlib.suppress(TimeoutError):
            messages += await sub.fetch(1, timeout=0.5)
        return messages
    finally:
        await nc.close()


@pytest.fixture
def bridge_settings(service_settings, nats_server) -> Settings:
    return service_settings(
        Settings,
        "referral",
        nats_sl_password=nats_server.passwords["referral-sl"],
        disclosure_timeout_seconds=2.0,
    )


class ZoneA:
    """The real intake and consent services on the test's nats-server: a client registered
    and consents recorded through their APIs, as an NGO does."""

    def __init__(self, intake: TestClient, consent: TestClient, issuer: Any) -> None:
        self.intake, self.consent, self.ngo = intake, consent, issuer.headers(**NGO_GHENT)

    def register(self, **fields: Any) -> str:
        response = self.intake.post("/v1/clients", headers=self.ngo, json=record(**fields))
        assert response.status_code == 201, response.text
        return response.json()["client_ref"]

    def grant(
        self,
        client_ref: str,
        recipient: str,
        *,
        purposes=("referral", "feedback"),
        categories=("needs", "intentions"),
    ) -> str:
        response = self.consent.post(
            "/v1/consents",
            headers=self.ngo,
            json={
                "client_ref": client_ref,
                "recipient": recipient,
                "purposes": list(purposes),
                "categories": list(categories),
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    def withdraw(self, consent_id: str) -> None:
        response = self.consent.post(f"/v1/consents/{consent_id}/withdraw", headers=self.ngo)
        assert response.status_code == 200, response.text


@contextlib.contextmanager
def zone_a(service_settings: Callable[..., Any], issuer: Any) -> Iterator[ZoneA]:
    intake_app = create_intake_app(service_settings(IntakeSettings, "intake"))
    consent_app = create_consent_app(service_settings(ConsentSettings, "consent"))
    with running(intake_app) as intake, running(consent_app) as consent:
        for service in (intake, consent):
            eventually(lambda s=service: s.get("/readyz").status_code == 200, "a NATS link")
        yield ZoneA(intake, consent, issuer)


@pytest.mark.nats
def test_referral_asks_the_real_intake_routes_packages_to_zone_b_and_follows_status_back(
    service_settings, bridge_settings, nats_server, issuer
):
    """Register, consent and refer with no pause in between, through the real zone-A services:
    the bridge asks the consent service and intake at the moment it decides."""
    url, passwords = nats_server.url, nats_server.passwords
    with zone_a(service_settings, issuer) as a, running(create_app(bridge_settings)) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "both NATS links")
        intake = a.intake
        engine = client.app.state.runtime.engine
        client_ref = a.register(municipality="Luik", languages=["ar", "fr"], birth_year=1990)
        a.grant(client_ref, IO, categories=("contact", "needs", "identity"))
        fedasil_consent = a.grant(
            client_ref, FEDASIL, purposes=("referral",), categories=("needs",)
        )

        response = post_referral(client, issuer, client_ref, note=CANARY)
        assert response.status_code == 201, response.text
        created = response.json()
        tracks = {t["track"]: t for t in created["tracks"]}
        # ICAM may read contact and needs: the Liège office, which speaks Arabic. Fedasil may
        # read needs only: its default office, which speaks Arabic too.
        assert (tracks["legal_stay"]["office"], tracks["return"]["office"]) == ("liege", "brussels")

        messages = asyncio.run(_read(url, passwords, "sl-admin", "SECONDLINE", ROUTED, expect=2))
        assert len(messages) == 2
        routed = {e.data["agency"]: e.data for e in (decode(m.data) for m in messages)}
        # In the stream the packages are sealed: they open with the bridge's key for the track's
        # consent and the track id as associated data.
        assert routed[IO]["disclosure"]["categories"] == ["contact", "identity", "needs"]
        assert opened(client, routed[IO]) == {
            "contact": {"municipality": "Luik", "phone": f"{PKG}-phone"},
            "identity": {
                "display_name": f"{PKG}-display_name",
                "birth_year": 1990,
                "nationality": "GN",
            },
            "needs": {"languages": ["ar", "fr"], "needs": ["shelter", f"{PKG}-needs"]},
        }
        assert routed[FEDASIL]["disclosure"]["categories"] == ["needs"]
        assert opened(client, routed[FEDASIL]) == {
            "needs": {"languages": ["ar", "fr"], "needs": ["shelter", f"{PKG}-needs"]}
        }
        with pytest.raises(CannotOpen):
            key = data_keys(client)[routed[IO]["disclosure"]["key_id"]].key_bytes
            open_sealed(sealed_of(routed[IO]), key=key, aad=routed[FEDASIL]["track_id"])
        assert routed[FEDASIL]["purposes"] == ["referral"]
        for message in messages:
            assert set(decode(message.data).data) == ROUTED_FIELDS
            assert set(decode(message.data).data["disclosure"]) == DISCLOSURE_FIELDS
            # Raw bytes, headers included: no plaintext value, no zone-A identifier.
            raw = message.data + json.dumps(message.headers).encode()
            for secret in (created["referral_id"], client_ref, CANARY, PKG, "display_name"):
                assert secret.encode() not in raw

        # Intake recorded the disclosure it answered: ids and categories, no values.
        with Session(intake.app.state.runtime.engine) as session:
            rows = session.exec(select(OutboxMessage)).all()
        disclosed = [
            decode(r.payload).data for r in rows if r.subject == "audit.intake.client.disclose"
        ]
        assert [(d["resource_id"], d["categories"]) for d in disclosed] == [
            (client_ref, ["contact", "identity", "needs"])
        ]
        assert all(PKG not in r.payload.decode() for r in rows if r.subject.startswith("audit."))

        def all_sent() -> bool:
            with Session(engine) as session:
                rows = session.exec(select(OutboxMessage)).all()
                return bool(rows) and all(r.sent_at is not None for r in rows)

        eventually(all_sent, "the relay to publish routed events and audit records")

        # The second line works the ICAM track; the SECONDLINE/referral consumer brings it back.
        legal_stay, ret = tracks["legal_stay"], tracks["return"]
        asyncio.run(
            _publish(
                url,
                passwords,
                "sl-admin",
                [
                    track_status(legal_stay, "accepted", previous="requested"),
                    track_status(legal_stay, "in-progress", previous="accepted"),
                    track_status(legal_stay, "completed", outcome="legal_stay"),
                    track_status(ret, "accepted", previous="requested"),
                ],
            )
        )
        view = eventually(
            lambda: (
                v
                if (v := _tracks(client, issuer, created["referral_id"]))["legal_stay"]["status"]
                == "completed"
                and v["return"]["status"] == "accepted"
                else None
            ),
            "the SECONDLINE/referral consumer to apply the status events",
        )
        assert view["legal_stay"]["outcome_category"] == "permanent"
        assert [p["status"] for p in view["legal_stay"]["progress"]] == [
            "requested",
            "accepted",
            "in-progress",
            "completed",
        ]
        # No `feedback` in the Fedasil consent: status only.
        assert view["return"]["progress"] is None and view["return"]["feedback"] is False

        # The client withdraws the Fedasil consent: the open track is cancelled, zone B told.
        a.withdraw(fedasil_consent)
        cancelled = asyncio.run(
            _read(url, passwords, "sl-admin", "SECONDLINE", CANCELLED, expect=1)
        )
        assert len(cancelled) == 1
        event = decode(cancelled[0].data)
        assert (event.data["track_id"], event.data["reason"]) == (
            ret["track_id"],
            "consent_withdrawn",
        )
        assert _tracks(client, issuer, created["referral_id"])["return"]["status"] == "cancelled"


@pytest.mark.nats
def test_referral_is_503_with_retry_after_when_the_consent_service_does_not_answer(
    bridge_settings, issuer
):
    """Fail closed: no consent service on the broker, no referral (never a stale yes)."""
    with running(create_app(bridge_settings)) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "both NATS links")
        client_ref = "C-" + uuid.uuid4().hex[:12].upper()

        response = post_referral(client, issuer, client_ref, note=CANARY)

        body = assert_problem(response, 503, "call-unavailable")
        assert "svc.consent.active" in body["detail"] and CANARY not in response.text
        assert response.headers["retry-after"] == "1"
        assert_nothing_stored(client)


@pytest.mark.nats
def test_referral_is_503_and_stores_nothing_when_intake_does_not_answer(bridge_settings, issuer):
    app = create_app(bridge_settings)
    fake_consent = FakeConsent()
    app.dependency_overrides[get_consent_source] = lambda: fake_consent.source
    with running(app) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "both NATS links")
        client.fake_intake = FakeIntake()  # type: ignore[attr-defined]  # only for new_client
        client.fake_consent = fake_consent  # type: ignore[attr-defined]
        client_ref, _ = new_client(client)

        response = post_referral(client, issuer, client_ref, note=CANARY)

        body = assert_problem(response, 503, "call-unavailable")
        assert "svc.intake.disclosure" in body["detail"] and CANARY not in response.text
        assert_nothing_stored(client)


@pytest.mark.nats
def test_only_case_resolution_may_ask_for_a_key_and_only_while_the_consent_is_active(
    service_settings, bridge_settings, nats_server, issuer
):
    """The key call over the project's own server and config: `case-resolution` asks, the
    bridge's `referral-sl` answers. No other service user can reach it, in zone A's account or
    in zone B's; `sl-admin` is the SECONDLINE operator account (provisioning), unrestricted by
    design, and is no service's credential."""
    url, passwords = nats_server.url, nats_server.passwords
    with zone_a(service_settings, issuer) as a, running(create_app(bridge_settings)) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "both NATS links")
        client_ref = a.register()
        consents = {agency: a.grant(client_ref, agency) for agency in (IO, FEDASIL)}
        assert post_referral(client, issuer, client_ref).status_code == 201
        routed = routed_by_agency(client)
        io, fedasil = routed[IO], routed[FEDASIL]
        good = {"track_id": io["track_id"], "key_id": io["disclosure"]["key_id"]}

        async def ask(user: str, payload: dict[str, Any], wait: float = 5) -> dict[str, Any]:
            nc = await connect(url, credential(user, passwords), name=f"test:{user}")
            try:
                return await call(nc, DISCLOSURE_KEY, payload, wait=wait)
            finally:
                await nc.close()

        reply = asyncio.run(ask("case-resolution", good))
        package = open_sealed(sealed_of(io), key=decode_key(reply["key"]), aad=io["track_id"])
        assert package == opened(client, io)

        # An unknown track, and a key that is not the track's, are refused.
        with pytest.raises(NotFound):
            asyncio.run(ask("case-resolution", {**good, "track_id": str(uuid.uuid4())}))
        with pytest.raises(NotFound):
            asyncio.run(ask("case-resolution", {**good, "key_id": fedasil["disclosure"]["key_id"]}))

        # No other user reaches the responder: zone-A users (their account has no such
        # subject, and they may not publish it), and the bridge's own users, which answer
        # (referral-sl) or work in zone A (referral-fl) but may not ask.
        for user in ("intake", "consent", "referral-fl", "fl-admin", "referral-sl", "audit"):
            with pytest.raises(Unavailable):
                asyncio.run(ask(user, good, wait=1))

        # The client withdraws the ICAM consent: from that answer on, the call refuses its key
        # (the bridge asks the consent service; its projection may not have heard yet).
        a.withdraw(consents[IO])
        with pytest.raises(Conflict) as raised:
            asyncio.run(ask("case-resolution", good))
        assert raised.value.slug == "disclosure-withdrawn"
        fedasil_good = {"track_id": fedasil["track_id"], "key_id": fedasil["disclosure"]["key_id"]}
        assert asyncio.run(ask("case-resolution", fedasil_good))["key"]


# ---------------------------------------------------------------- step-up requests (F5)

REQUESTED = "secondline.case.disclosure.requested"
RELEASED = "secondline.referral.disclosure.released"
REFUSED = "secondline.referral.disclosure.refused"


def disclosure_requested(
    track_id: str,
    categories: tuple[str, ...] = ("identity",),
    reason: str = "identity_verification",
) -> Event:
    request_id = str(uuid.uuid4())
    return new_event(
        source="twoline/case-resolution",
        type=REQUESTED,
        subject=track_id,
        request_id=request_id,
        track_id=track_id,
        categories=list(categories),
        reason=reason,
        at=datetime.now(UTC).isoformat(),
    )


def stepped_up(
    client: TestClient, issuer: Any, *, org: str = "ngo-ghent", categories=("identity",)
) -> tuple[str, dict[str, Event], dict[str, Any], Event]:
    """A client referred to ICAM with `needs` only, and ICAM's request for more."""
    client_ref, grants = new_client(client, org=org, recipients=(IO,), categories={IO: ("needs",)})
    who = NGO_GHENT if org == "ngo-ghent" else NGO_ANTWERP
    response = post_referral(client, issuer, client_ref, tracks=["legal_stay"], who=who)
    assert response.status_code == 201, response.text
    [track] = response.json()["tracks"]
    asked = disclosure_requested(track["track_id"], categories)
    feed(client, asked)
    return client_ref, grants, track, asked


def pending(client: TestClient, issuer: Any, who: dict[str, str] = NGO_GHENT, **params: Any) -> Any:
    return client.get(
        "/v1/disclosure-requests", headers=issuer.headers(**who), params=params or None
    )


def refuse(client: TestClient, issuer: Any, request_id: str, who=NGO_GHENT, body=None) -> Any:
    return client.post(
        f"/v1/disclosure-requests/{request_id}/refuse",
        headers=issuer.headers(**who),
        json={} if body is None else body,
    )


def test_the_ngo_sees_zone_bs_pending_requests_for_its_own_clients_only(referral, issuer):
    client_ref, _, _, asked = stepped_up(referral, issuer)
    _, _, _, other = stepped_up(referral, issuer, org="ngo-antwerp")
    feed(referral, asked)  # a redelivery keeps one request

    response = pending(referral, issuer, status="pending")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 1
    [row] = body["data"]
    assert row == {
        "request_id": asked.data["request_id"],
        "referral_id": row["referral_id"],
        "client_ref": client_ref,
        "agency": IO,
        "track": "legal_stay",
        "categories": ["identity"],
        "reason": "identity_verification",
        "status": "pending",
        "created_at": row["created_at"],
        "decided_at": None,
    }
    antwerp = pending(referral, issuer, NGO_ANTWERP).json()
    assert [r["request_id"] for r in antwerp["data"]] == [other.data["request_id"]]
    assert pending(referral, issuer, status="refused").json() == {"data": [], "count": 0}
    assert_problem(pending(referral, issuer, status="maybe"), 422)
    audits = [e.data for _, e in outbox(referral, "audit.referral.disclosure-request")]
    assert {a["action"] for a in audits} == {"create", "search"}
    assert all(PKG not in json.dumps(a) for a in audits)


def test_a_request_for_an_unknown_track_or_breaking_its_contract_changes_nothing(referral):
    feed(referral, disclosure_requested(str(uuid.uuid4())))
    assert count(referral, DisclosureRequest) == 0
    with pytest.raises(PERMANENT):
        feed(referral, disclosure_requested(str(uuid.uuid4()), reason="Free text!"))
    with pytest.raises(PERMANENT):
        feed(referral, disclosure_requested(str(uuid.uuid4()), categories=()))


def test_the_ngo_refuses_and_zone_b_hears_it_by_track_id(referral, issuer):
    _, _, track, asked = stepped_up(referral, issuer)
    request_id = asked.data["request_id"]

    assert_problem(refuse(referral, issuer, request_id, NGO_ANTWERP), 404)
    assert_problem(refuse(referral, issuer, request_id, body={"reason": "free text"}), 422)
    response = refuse(referral, issuer, request_id, body={"reason": "client_declined"})

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["decided_at"] is not None) == (
        "refused",
        True,
    )
    [(_, sent)] = outbox(referral, REFUSED)
    assert sent.data == {
        "request_id": request_id,
        "track_id": track["track_id"],
        "at": sent.data["at"],
    }
    assert_problem(refuse(referral, issuer, request_id), 409, "disclosure-request-decided")
    assert [r["status"] for r in pending(referral, issuer).json()["data"]] == ["refused"]
    # A refused request is never released by a later consent.
    client_ref = pending(referral, issuer).json()["data"][0]["client_ref"]
    feed(referral, consent_granted(client_ref, IO, categories=("identity", "needs")))
    assert outbox(referral, RELEASED) == []


def test_a_grant_withdrawn_before_its_event_is_applied_releases_nothing(referral, issuer):
    """F0: the grant covers the step-up request, but by the time the bridge applies its event
    the consent service holds it withdrawn: no package is cut or sent, the request stays
    pending, and the withdrawal event that follows has nothing to undo."""
    client_ref, grants, track, asked = stepped_up(referral, issuer)
    referral.fake_intake.calls.clear()
    wider = consent_granted(client_ref, IO, categories=("identity", "needs"))
    referral.fake_consent.record(wider)
    referral.fake_consent.withdraw(wider.data["consent_id"])

    feed(referral, wider)

    assert referral.fake_intake.calls == []
    assert outbox(referral, RELEASED) == []
    with Session(referral.app.state.runtime.engine) as session:
        request = session.get(DisclosureRequest, asked.data["request_id"])
        assert request.status == "pending"
        assert (
            session.get(ReferralTrack, uuid.UUID(track["track_id"])).consent_id
            == (grants[IO].data["consent_id"])
        )


def test_a_new_consent_covering_the_request_releases_an_updated_sealed_package(referral, issuer):
    client_ref, grants, track, asked = stepped_up(referral, issuer)
    referral.fake_intake.calls.clear()
    wider = consent_granted(client_ref, IO, categories=("identity", "needs"))

    feed(referral, wider)

    # Intake is asked for exactly the new consent's categories.
    assert referral.fake_intake.calls == [(client_ref, "ngo-ghent", ["identity", "needs"])]
    [(row, sent)] = outbox(referral, RELEASED)
    assert set(sent.data) == {"request_id", "track_id", "disclosure", "at"}
    assert set(sent.data["disclosure"]) == DISCLOSURE_FIELDS
    assert (sent.data["request_id"], sent.data["track_id"]) == (
        asked.data["request_id"],
        track["track_id"],
    )
    assert sent.data["disclosure"]["categories"] == ["identity", "needs"]
    # Sealed under the NEW consent's key, bound to the track; no plaintext in the event.
    keys = data_keys(referral)
    assert keys[sent.data["disclosure"]["key_id"]].consent_id == wider.data["consent_id"]
    assert set(opened(referral, sent.data)) == {"identity", "needs"}
    assert opened(referral, sent.data)["identity"]["display_name"] == f"{PKG}-display_name"
    assert PKG.encode() not in row.payload
    with Session(referral.app.state.runtime.engine) as session:
        moved = session.get(ReferralTrack, uuid.UUID(track["track_id"]))
        assert moved is not None and moved.consent_id == wider.data["consent_id"]
    [shown] = pending(referral, issuer).json()["data"]
    assert shown["status"] == "released"
    assert_problem(refuse(referral, issuer, shown["request_id"]), 409, "disclosure-request-decided")
    disclosed = [
        e.data
        for _, e in outbox(referral, "audit.referral.track.disclose")
        if e.data.get("request_id")
    ]
    assert [(d["consent_id"], d["categories"]) for d in disclosed] == [
        (wider.data["consent_id"], ["identity", "needs"])
    ]

    # The key a zone-B read now asks for is the new one; the old one no longer opens this track.
    new_key_id = sent.data["disclosure"]["key_id"]
    assert "key" in ask_key(referral, track_id=track["track_id"], key_id=new_key_id)
    [(_, routed_event)] = outbox(referral, ROUTED)
    with pytest.raises(NotFound):
        ask_key(
            referral, track_id=track["track_id"], key_id=routed_event.data["disclosure"]["key_id"]
        )

    # Withdrawing the new consent shreds its key and cancels the track, as for any consent (F4).
    feed(referral, consent_withdrawn(wider))
    assert data_keys(referral)[sent.data["disclosure"]["key_id"]].key_bytes is None
    with pytest.raises(AssertionError, match="destroyed"):
        opened(referral, sent.data)
    [(_, cancel)] = outbox(referral, CANCELLED)
    assert (cancel.data["track_id"], cancel.data["reason"]) == (
        track["track_id"],
        "consent_withdrawn",
    )
    # The old consent's withdrawal no longer reaches the track.
    feed(referral, consent_withdrawn(grants[IO]))
    assert len(outbox(referral, CANCELLED)) == 1


def test_a_new_consent_that_does_not_cover_every_requested_category_releases_nothing(
    referral, issuer
):
    client_ref, _, _, _ = stepped_up(referral, issuer, categories=("identity", "health"))
    referral.fake_intake.calls.clear()

    feed(referral, consent_granted(client_ref, IO, categories=("identity", "needs")))
    feed(referral, consent_granted(client_ref, FEDASIL, categories=ALL_CATEGORIES))
    feed(
        referral,
        consent_granted(
            client_ref, IO, purposes=("feedback",), categories=("identity", "health", "needs")
        ),
    )

    assert referral.fake_intake.calls == []
    assert outbox(referral, RELEASED) == []
    assert [r["status"] for r in pending(referral, issuer).json()["data"]] == ["pending"]


def test_intake_unreachable_rolls_the_whole_grant_back_for_a_retry(referral, issuer):
    client_ref, _, _, _ = stepped_up(referral, issuer)
    referral.fake_intake.error = Unavailable("Intake did not answer in time.")
    wider = consent_granted(client_ref, IO, categories=("identity", "needs"))

    with pytest.raises(Unavailable):
        feed(referral, wider)

    assert consent_row(referral, wider.data["consent_id"]) is None
    assert outbox(referral, RELEASED) == []
    assert [r["status"] for r in pending(referral, issuer).json()["data"]] == ["pending"]
    # The redelivery, once intake answers, releases it.
    referral.fake_intake.error = None
    feed(referral, wider)
    assert len(outbox(referral, RELEASED)) == 1


def test_only_an_ngo_caseworker_of_an_org_may_see_or_refuse_requests(referral, issuer):
    _, _, _, asked = stepped_up(referral, issuer)
    for who in (
        {"role": "ngo_admin", "org": "ngo-ghent"},
        {"role": "icam_coach", "agency": IO, "office": "brussels"},
        {"role": "auditor"},
    ):
        assert_problem(pending(referral, issuer, who), 403)
        assert_problem(refuse(referral, issuer, asked.data["request_id"], who), 403)


def test_a_consent_covers_a_request_only_if_it_grants_every_category():
    def consent(*categories: str) -> ConsentView:
        return ConsentView(
            consent_id="CNS-1",
            client_ref="C-1",
            org="ngo-ghent",
            recipient=IO,
            categories=list(categories),
        )

    assert domain.consent_covers(["identity"], consent("identity", "needs"))
    assert not domain.consent_covers(["identity", "health"], consent("identity", "needs"))
    # `health` is never implied by another category, and unknown codes grant nothing.
    assert not domain.consent_covers(["health"], consent("identity", "medical"))
