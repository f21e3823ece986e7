"""Referral service (the bridge): the consent gate (F0), routing by track id only (F5), org
scoping (F7), idempotent requests and projections, and the flow through the real NATS server."""

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
from sqlalchemy import event as sa_event
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select

from tests.conftest import NGO_GHENT, assert_problem, eventually, running
from twoline.natsserver import credential
from twoline_referral import domain, service
from twoline_referral.app import create_app
from twoline_referral.config import Settings
from twoline_referral.consumers import FIRSTLINE_HANDLERS, SECONDLINE_HANDLERS
from twoline_referral.models import (
    ConsentView,
    KnownClient,
    Referral,
    ReferralCreate,
    ReferralTrack,
)
from twoline_shared.auth import Agency, Principal
from twoline_shared.broker import connect
from twoline_shared.codes import ConsentStatus, TaskStatus, Track
from twoline_shared.events import Event, decode, encode, headers_for, new_event
from twoline_shared.outbox import OutboxMessage

NGO_ANTWERP = {"role": "ngo_caseworker", "org": "ngo-antwerp"}
CANARY = "CANARY-7f3a9 Mariam from Conakry, +32 470 12 34 56"
ROUTED = "secondline.referral.track.routed"
ROUTED_FIELDS = {"track_id", "track", "agency", "office", "urgency", "routed_at"}
IO = Agency.IMMIGRATION_OFFICE.value
FEDASIL = Agency.FEDASIL.value
BOTH = ["legal_stay", "return"]
HANDLERS = {**FIRSTLINE_HANDLERS, **SECONDLINE_HANDLERS}


# ---------------------------------------------------------------- events (real kernel Events)


def client_registered(client_ref: str, *, org: str = "ngo-ghent") -> Event:
    return new_event(
        source="twoline/intake",
        type="firstline.intake.client.registered",
        subject=client_ref,
        client_ref=client_ref,
        org=org,
    )


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


def track_accepted(track: dict[str, Any], *, agency: str | None = None) -> Event:
    return new_event(
        source="twoline/case-resolution",
        type="secondline.case.track.accepted",
        subject=track["track_id"],
        track_id=track["track_id"],
        case_id=str(uuid.uuid4()),
        track=track["track"],
        agency=agency or track["agency"],
        office=track["office"],
        status="accepted",
        at=datetime.now(UTC).isoformat(),
    )


# ---------------------------------------------------------------- helpers


@pytest.fixture
def referral(service_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The referral app on a fresh database, without NATS (outbox rows stay unsent)."""
    with running(create_app(service_settings(Settings, "referral"))) as client:
        yield client


def feed(client: TestClient, *events: Event) -> None:
    """Apply events through the consumer handlers, each in its own committed transaction."""
    for event in events:
        with Session(client.app.state.runtime.engine) as session:
            HANDLERS[event.type](session, event)
            session.commit()


def new_client(
    client: TestClient, *, org: str = "ngo-ghent", recipients: tuple[str, ...] = (IO, FEDASIL)
) -> tuple[str, dict[str, Event]]:
    """A registered client with a referral consent per recipient; returns client_ref and grants."""
    client_ref = "C-" + uuid.uuid4().hex[:12].upper()
    grants = {r: consent_granted(client_ref, r, org=org) for r in recipients}
    feed(client, client_registered(client_ref, org=org), *grants.values())
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
    return [(r, decode(r.payload)) for r in rows if r.subject.startswith(prefix)]


def consent_row(client: TestClient, consent_id: str) -> ConsentView | None:
    with Session(client.app.state.runtime.engine) as session:
        return session.get(ConsentView, consent_id)


def assert_nothing_stored(client: TestClient) -> None:
    assert count(client, Referral) == 0
    assert count(client, ReferralTrack) == 0
    assert count(client, OutboxMessage) == 0


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
        assert datetime.fromisoformat(event.data["routed_at"]).tzinfo is not None
        raw = row.payload.decode() + row.headers
        for secret in (body["referral_id"], client_ref, CANARY, "Mariam"):
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


def test_client_projection_keeps_the_first_owner(referral, issuer):
    client_ref, _ = new_client(referral)
    feed(referral, client_registered(client_ref), client_registered(client_ref, org="ngo-antwerp"))

    with Session(referral.app.state.runtime.engine) as session:
        assert session.get(KnownClient, client_ref).org == "ngo-ghent"
    assert count(referral, KnownClient) == 1
    assert post_referral(referral, issuer, client_ref, who=NGO_ANTWERP).status_code == 404


def test_malformed_event_raises_so_the_kernel_retries_and_dead_letters_it(referral):
    bad = new_event(
        source="twoline/consent", type="firstline.consent.consent.granted", consent_id="CNS-x"
    )
    with pytest.raises(ValueError):
        feed(referral, bad)
    assert count(referral, ConsentView) == 0


# ---------------------------------------------------------------- idempotency


def test_same_idempotency_key_and_body_returns_the_same_referral(referral, issuer):
    client_ref, _ = new_client(referral)

    first = post_referral(referral, issuer, client_ref, key="key-1", note="n")
    again = post_referral(referral, issuer, client_ref, key="key-1", note="n")
    reordered = post_referral(
        referral, issuer, client_ref, key="key-1", note="n", tracks=["return", "legal_stay"]
    )

    assert first.status_code == 201, first.text
    assert again.status_code == 200 and reordered.status_code == 200
    assert again.json() == first.json() == reordered.json()
    assert count(referral, Referral) == 1
    assert len(outbox(referral, ROUTED)) == 2  # one set of routed events


def test_same_idempotency_key_with_another_body_is_409(referral, issuer):
    client_ref, _ = new_client(referral)
    assert post_referral(referral, issuer, client_ref, key="key-2").status_code == 201

    for changed in (
        {"tracks": ["legal_stay"]},
        {"urgency": "urgent"},
        {"note": "something else"},
    ):
        response = post_referral(referral, issuer, client_ref, key="key-2", **changed)
        assert_problem(response, 409, "idempotency-key-reused")
    assert count(referral, Referral) == 1
    assert len(outbox(referral, ROUTED)) == 2


def test_a_racing_request_with_the_same_key_is_answered_as_a_replay(referral):
    """Two requests pass the key lookup together; the loser's insert fails on the unique key and
    it answers with the winner's referral instead of a 500 or a second set of events."""
    client_ref, _ = new_client(referral)
    engine = referral.app.state.runtime.engine
    principal = Principal(sub="cw-1", roles=frozenset({"ngo_caseworker"}), org="ngo-ghent")
    body = ReferralCreate(client_ref=client_ref, tracks=[Track.RETURN])
    offices = Settings(nats_enabled=False).routing_default_office
    winner: dict[str, Referral] = {}

    def create(session: Session) -> tuple[Referral, bool]:
        return service.create_referral(
            session, principal=principal, body=body, idempotency_key="race", default_office=offices
        )

    with Session(engine, expire_on_commit=False) as loser:

        @sa_event.listens_for(loser, "before_flush", once=True)
        def _the_other_request_commits_first(*_: Any) -> None:
            with Session(engine, expire_on_commit=False) as other:
                winner["referral"], _created = create(other)
                other.commit()

        result, created = create(loser)
        loser.commit()

    assert created is False
    assert result.referral_id == winner["referral"].referral_id
    assert count(referral, Referral) == 1
    assert len(outbox(referral, ROUTED)) == 1


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


# ---------------------------------------------------------------- status from the second line


def _tracks(client: TestClient, issuer: Any, referral_id: str) -> dict[str, dict[str, Any]]:
    response = client.get(f"/v1/referrals/{referral_id}", headers=issuer.headers(**NGO_GHENT))
    return {t["track"]: t for t in response.json()["tracks"]}


def test_accepted_event_moves_only_that_track_to_accepted(referral, issuer):
    client_ref, _ = new_client(referral)
    created = post_referral(referral, issuer, client_ref).json()
    legal_stay = next(t for t in created["tracks"] if t["track"] == "legal_stay")
    accepted = track_accepted(legal_stay)

    feed(referral, accepted)
    tracks = _tracks(referral, issuer, created["referral_id"])
    assert tracks["legal_stay"]["status"] == "accepted"
    assert tracks["return"]["status"] == "requested"

    # Duplicates and late copies are harmless: still accepted, one audit record of the change.
    feed(referral, accepted, track_accepted(legal_stay))
    assert _tracks(referral, issuer, created["referral_id"])["legal_stay"]["status"] == "accepted"
    changes = [e.data for _, e in outbox(referral, "audit.referral.track.update")]
    assert [(c["resource_id"], c["previous_status"], c["status"]) for c in changes] == [
        (legal_stay["track_id"], "requested", "accepted")
    ]
    assert all("client_ref" not in c for c in changes)


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


def test_track_transition_rule():
    assert domain.can_transition("requested", TaskStatus.ACCEPTED)
    for current in ("accepted", "cancelled", "completed", "rejected", "in-progress", "bogus"):
        assert not domain.can_transition(current, TaskStatus.ACCEPTED), current


def test_consent_status_rules():
    assert domain.status_after_grant(None) == ConsentStatus.ACTIVE
    assert domain.status_after_grant("active") == ConsentStatus.ACTIVE
    assert domain.status_after_grant("inactive") == ConsentStatus.INACTIVE
    assert domain.status_after_withdrawal("active") == ConsentStatus.INACTIVE


def test_tracks_map_to_agencies_and_default_offices():
    assert domain.agencies_for([Track.RETURN, Track.LEGAL_STAY]) == [
        Agency.FEDASIL,
        Agency.IMMIGRATION_OFFICE,
    ]
    offices = Settings(nats_enabled=False).routing_default_office
    assert domain.route_office(Agency.FEDASIL, default_office=offices) == "brussels"
    with pytest.raises(ValueError):
        Settings(routing_default_office={IO: "brussels"})


def test_request_fingerprint_ignores_track_order_only():
    base = ReferralCreate(client_ref="C-1", tracks=[Track.LEGAL_STAY, Track.RETURN])
    same = ReferralCreate(client_ref="C-1", tracks=[Track.RETURN, Track.LEGAL_STAY])
    other = ReferralCreate(client_ref="C-1", tracks=[Track.RETURN, Track.LEGAL_STAY], note="x")
    assert domain.request_fingerprint(base) == domain.request_fingerprint(same)
    assert domain.request_fingerprint(base) != domain.request_fingerprint(other)


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


@pytest.mark.nats
def test_referral_flows_from_firstline_facts_to_the_secondline_stream_and_back(
    service_settings, nats_server, issuer
):
    settings = service_settings(
        Settings, "referral", nats_sl_password=nats_server.passwords["referral-sl"]
    )
    url, passwords = nats_server.url, nats_server.passwords
    with running(create_app(settings)) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "both NATS links")
        engine = client.app.state.runtime.engine
        client_ref = "C-" + uuid.uuid4().hex[:12].upper()
        grants = [consent_granted(client_ref, IO), consent_granted(client_ref, FEDASIL)]
        asyncio.run(_publish(url, passwords, "fl-admin", [*grants, client_registered(client_ref)]))

        def projected() -> bool:
            with Session(engine) as session:
                consents = session.exec(
                    select(ConsentView).where(ConsentView.client_ref == client_ref)
                ).all()
                return session.get(KnownClient, client_ref) is not None and len(consents) == 2

        eventually(projected, "the FIRSTLINE/referral consumer to project the facts")

        response = post_referral(client, issuer, client_ref, note=CANARY)
        assert response.status_code == 201, response.text
        created = response.json()
        track_ids = {t["track_id"] for t in created["tracks"]}

        messages = asyncio.run(_read(url, passwords, "sl-admin", "SECONDLINE", ROUTED, expect=2))
        assert len(messages) == 2
        events = [decode(m.data) for m in messages]
        assert {e.data["track_id"] for e in events} == track_ids
        assert {e.data["agency"] for e in events} == {IO, FEDASIL}
        for message, event in zip(messages, events, strict=True):
            assert message.subject == ROUTED and set(event.data) == ROUTED_FIELDS
            assert message.headers["Nats-Msg-Id"] == event.id
            raw = message.data.decode() + json.dumps(message.headers)
            for secret in (created["referral_id"], client_ref, CANARY):
                assert secret not in raw

        # Audit records left on the first-line link: every outbox row is published.
        def all_sent() -> bool:
            with Session(engine) as session:
                rows = session.exec(select(OutboxMessage)).all()
                return bool(rows) and all(r.sent_at is not None for r in rows)

        eventually(all_sent, "the relay to publish routed events and audit records")

        # The second line accepts one track; the SECONDLINE/referral consumer brings it back.
        legal_stay = next(t for t in created["tracks"] if t["track"] == "legal_stay")
        asyncio.run(_publish(url, passwords, "sl-admin", [track_accepted(legal_stay)]))
        eventually(
            lambda: (
                _tracks(client, issuer, created["referral_id"])["legal_stay"]["status"]
                == "accepted"
            ),
            "the SECONDLINE/referral consumer to apply track.accepted",
        )
        assert _tracks(client, issuer, created["referral_id"])["return"]["status"] == "requested"
