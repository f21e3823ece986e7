"""Case-resolution service (zone B): one case per routed track under a fresh pseudonym (F5),
office queues (F7), the FHIR Task status a performer sets and who may set it, the disclosure
package held only sealed and opened per read with the bridge's key, and its purge on withdrawal
(F4), track work (options, return steps, sessions, client decisions), id-only events and audit
records (F8), and the flow through the project's own NATS server, with the real bridge answering
the key call."""

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from sqlalchemy import func, inspect, text
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
from twoline_case_resolution import domain, repository
from twoline_case_resolution.app import create_app
from twoline_case_resolution.config import Settings
from twoline_case_resolution.consumers import BINDINGS, TRACK_CANCELLED, TRACK_ROUTED
from twoline_case_resolution.disclosure import bridge_link_finder
from twoline_case_resolution.domain import ClientDecision, DisclosureWithdrawn, ReturnStep
from twoline_case_resolution.models import (
    Case,
    CaseOptionAssessment,
    CasePendingCancel,
)
from twoline_case_resolution.routes import get_key_fetcher, get_link_finder
from twoline_shared.auth import Agency
from twoline_shared.broker import connect
from twoline_shared.codes import DataCategory, Outcome, StatusReason, TaskStatus, Track
from twoline_shared.crypto import encode_key, new_data_key, seal
from twoline_shared.db import session_scope
from twoline_shared.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from twoline_shared.events import Event, decode, encode, headers_for, new_event
from twoline_shared.inbox import DeadLetter, InboxConsumer
from twoline_shared.outbox import OutboxMessage

ICAM_ANTWERP = {**ICAM_BRUSSELS, "office": "antwerp"}
COACH = {**ICAM_BRUSSELS, "sub": "coach-1"}
COUNSELLOR = {**FEDASIL_BRUSSELS, "sub": "counsellor-1"}
PERFORMER = {"legal_stay": COACH, "return": COUNSELLOR}
ACCEPTED = "secondline.case.track.accepted"
# The track status payload of every `secondline.case.track.*` event (docs/events.md).
STATUS_FIELDS = {
    "track_id",
    "case_id",
    "track",
    "agency",
    "office",
    "previous_status",
    "status",
    "reason",
    "outcome",
    "at",
}
ACCEPTED_FIELDS = STATUS_FIELDS
QUEUE_FIELDS = {"case_id", "case_ref", "track", "urgency", "routed_at"}
IO = Agency.IMMIGRATION_OFFICE.value
FEDASIL = Agency.FEDASIL.value
CASE_REF = re.compile(r"^K-[0-9A-HJKMNP-TV-Z]{8}$")


# ---------------------------------------------------------------- helpers


# Canaries: personal data in the package must never be stored in zone B, not even its tables
# (it is held sealed); free text in notes must never leave zone B's tables.
PACKAGE_CANARY = "CANARY-PKG-5e1d"
NOTE_CANARY = "CANARY-NOTE-a93c"
PACKAGE = {
    "identity": {"display_name": f"{PACKAGE_CANARY} name", "birth_year": 1991, "nationality": "GN"},
    "needs": {"languages": ["fr"], "needs": ["shelter"]},
    "intentions": {"intentions": {"plans": f"{PACKAGE_CANARY} plans"}},
}
# What the bridge disclosed, in plaintext: `routed()` seals it the way the bridge does.
DISCLOSURE = {"categories": ["identity", "needs", "intentions"], "package": PACKAGE}
# The data key the fake bridge holds for these tests (the real one: `bridge_and_cases`).
KEY_ID = "0f8e2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
KEY = new_data_key()
_DEFAULT: Any = object()


def sealed(
    disclosure: dict[str, Any],
    track_id: str,
    *,
    key: bytes = KEY,
    key_id: str = KEY_ID,
    aad: str | None = None,
) -> dict[str, Any]:
    """`{categories, package}` as the bridge routes it: `{categories, key_id, nonce, ciphertext}`,
    the package sealed under `key` and bound to the track."""
    seal_ = seal(disclosure["package"], key=key, aad=track_id if aad is None else aad)
    return {
        "categories": disclosure["categories"],
        "key_id": key_id,
        "nonce": seal_.nonce,
        "ciphertext": seal_.ciphertext,
    }


# A well-formed sealed disclosure (of some track), to break one field at a time.
SEALED = sealed(DISCLOSURE, "T-shape")


class FakeBridge:
    """Stands in for the bridge's `svc.referral.disclosure-key` and `svc.referral.joint-review`
    answers (`get_key_fetcher`, `get_link_finder`); the NATS tests use the real one."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {KEY_ID: KEY}
        self.withdrawn: set[str] = set()
        self.down = False
        self.calls: list[tuple[str, str]] = []
        # track_id -> the track ids the bridge links it with (joint review).
        self.links: dict[str, list[str]] = {}
        self.link_calls: list[str] = []

    def find_links(self, track_id: str) -> list[str]:
        self.link_calls.append(track_id)
        if self.down:
            raise Unavailable("Nobody answered.", slug="call-unavailable")
        return list(self.links.get(track_id, []))

    def fetch(self, track_id: str, key_id: str) -> bytes:
        self.calls.append((track_id, key_id))
        if self.down:
            raise Unavailable("Nobody answered.", slug="call-unavailable")
        if key_id in self.withdrawn:
            raise DisclosureWithdrawn()
        if key_id not in self.keys:
            raise NotFound("No disclosure key for this track.")
        return self.keys[key_id]


def routed(
    *,
    track: str = "legal_stay",
    agency: str | None = None,
    office: str = "brussels",
    urgency: str = "normal",
    routed_at: datetime | None = None,
    track_id: str | None = None,
    purposes: Any = _DEFAULT,
    disclosure: Any = _DEFAULT,
) -> Event:
    """A `secondline.referral.track.routed` event exactly as docs/events.md defines it.

    `purposes=None` / `disclosure=None` leave the field out (an older producer). A plaintext
    `{categories, package}` is sealed for the track, as the bridge does; anything else (e.g. an
    already sealed or a malformed disclosure) is sent as it is.
    """
    track_id = track_id or f"T-{uuid.uuid4().hex}"
    if disclosure is _DEFAULT:
        disclosure = DISCLOSURE
    if isinstance(disclosure, dict) and set(disclosure) == {"categories", "package"}:
        disclosure = sealed(disclosure, track_id)
    extra: dict[str, Any] = {
        "purposes": ["referral", "feedback"] if purposes is _DEFAULT else purposes,
        "disclosure": disclosure,
    }
    return new_event(
        source="twoline/referral",
        type=TRACK_ROUTED,
        subject=track_id,
        track_id=track_id,
        track=track,
        agency=agency or (IO if track == "legal_stay" else FEDASIL),
        office=office,
        urgency=urgency,
        routed_at=(routed_at or datetime.now(UTC)).isoformat(),
        **{k: v for k, v in extra.items() if v is not None},
    )


def cancelled(
    event: Event, *, reason: str = "requester_cancelled", agency: str | None = None
) -> Event:
    """A `secondline.referral.track.cancelled` event for the track `event` routed."""
    return new_event(
        source="twoline/referral",
        type=TRACK_CANCELLED,
        subject=event.data["track_id"],
        track_id=event.data["track_id"],
        agency=agency or event.data["agency"],
        status="cancelled",
        reason=reason,
        at=datetime.now(UTC).isoformat(),
    )


@pytest.fixture
def cases(service_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The case-resolution app on a fresh database, without NATS (outbox rows stay unsent); the
    bridge's key answer comes from a `FakeBridge` (`cases.bridge`)."""
    app = create_app(service_settings(Settings, "case-resolution"))
    bridge = FakeBridge()
    app.dependency_overrides[get_key_fetcher] = lambda: bridge.fetch
    app.dependency_overrides[get_link_finder] = lambda: bridge.find_links
    with running(app) as client:
        client.bridge = bridge  # type: ignore[attr-defined]
        yield client


def feed(client: TestClient, *events: Event) -> None:
    """Apply events through the consumer's handlers, each in its own committed transaction."""
    handlers = BINDINGS[0].handlers
    for event in events:
        with contextlib.contextmanager(session_scope)(client.app.state.runtime.engine) as session:
            handlers[event.type](session, event)


def all_cases(client: TestClient) -> list[Case]:
    with Session(client.app.state.runtime.engine) as session:
        return list(session.exec(select(Case)).all())


def case_of(client: TestClient, event: Event) -> Case:
    with Session(client.app.state.runtime.engine) as session:
        case = repository.get_case_by_track(session, track_id=event.data["track_id"])
    assert case is not None
    return case


def case_of_id(client: TestClient, case_id: uuid.UUID) -> Case:
    with Session(client.app.state.runtime.engine) as session:
        case = session.get(Case, case_id)
    assert case is not None
    return case


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


def queue(client: TestClient, issuer: Any, who: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/v1/queue", headers=issuer.headers(**who))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["data"])
    return body["data"]


def accept(client: TestClient, issuer: Any, case_id: Any, track: str, who: dict[str, str]) -> Any:
    return client.post(f"/v1/cases/{case_id}/tracks/{track}/accept", headers=issuer.headers(**who))


def act(
    client: TestClient,
    issuer: Any,
    case_id: Any,
    track: str,
    verb: str,
    who: dict[str, str],
    body: dict[str, Any] | None = None,
) -> Any:
    """POST a track transition (`accept`, `reject`, `status`, `complete`)."""
    return client.post(
        f"/v1/cases/{case_id}/tracks/{track}/{verb}", headers=issuer.headers(**who), json=body
    )


def read(client: TestClient, issuer: Any, case_id: Any, who: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"/v1/cases/{case_id}", headers=issuer.headers(**who))
    assert response.status_code == 200, response.text
    return response.json()


# How to bring a fresh case to each status through the API: (verb, body) steps after routing.
_TO_STATUS: dict[str, list[tuple[str, dict[str, Any] | None]]] = {
    "requested": [],
    "accepted": [("accept", None)],
    "in-progress": [("accept", None), ("status", {"status": "in-progress"})],
    "on-hold": [("accept", None), ("status", {"status": "on-hold", "reason": "medical"})],
    "rejected": [("reject", {"reason": "not_eligible"})],
    "failed": [("accept", None), ("status", {"status": "failed", "reason": "client_unreachable"})],
    "cancelled": [("accept", None), ("status", {"status": "cancelled", "reason": "duplicate"})],
    "completed": [("accept", None), ("complete", {"outcome": "legal_stay"})],
}


def case_in(
    client: TestClient, issuer: Any, status: str, *, track: str = "legal_stay", **routing: Any
) -> tuple[Event, uuid.UUID]:
    """Route a fresh track and let its performer bring the case to `status`."""
    event = routed(track=track, **routing)
    feed(client, event)
    case_id = case_of(client, event).case_id
    for verb, body in _TO_STATUS[status]:
        response = act(client, issuer, case_id, track, verb, PERFORMER[track], body)
        assert response.status_code == 200, response.text
    assert case_of(client, event).status == status
    return event, case_id


def snapshot(client: TestClient, event: Event) -> dict[str, Any]:
    """Everything a refused call must leave unchanged: the case row and the outbox."""
    case = case_of(client, event)
    return {
        "case": {column.name: getattr(case, column.name) for column in Case.__table__.columns},
        "outbox": [row.event_id for row, _ in outbox(client)],
    }


def _text(value: Any) -> str:
    return bytes(value).decode() if isinstance(value, bytes | memoryview) else str(value)


def sealed_columns(client: TestClient, event: Event) -> tuple[Any, Any, Any]:
    """The sealed package of the event's case as stored: key id, nonce, ciphertext."""
    with client.app.state.runtime.engine.connect() as connection:
        return tuple(
            connection.execute(
                text(
                    "SELECT disclosure_key_id, disclosure_nonce, disclosure_ciphertext "
                    "FROM cases WHERE track_id = :t"
                ),
                {"t": event.data["track_id"]},
            ).one()
        )


def raw_rows(client: TestClient) -> str:
    """Every row of every table of the service's database, as stored, in one string."""
    engine = client.app.state.runtime.engine
    dump = []
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                dump.append(" ".join(_text(v) for v in row))
    return "\n".join(dump)


# ---------------------------------------------------------------- opening cases


def test_routed_track_opens_a_requested_case_under_a_fresh_pseudonym(cases):
    at = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    event = routed(urgency="urgent", routed_at=at)

    feed(cases, event)

    case = case_of(cases, event)
    assert (case.track, case.agency, case.office, case.urgency) == (
        "legal_stay",
        IO,
        "brussels",
        "urgent",
    )
    assert case.status == "requested" and case.assignee is None
    assert case.routed_at == at and case.routed_at.tzinfo is not None
    # F5: the pseudonym is random, not derived from the track id zone A's bridge handed out.
    assert CASE_REF.match(case.case_ref)
    assert case.case_ref[2:] not in event.data["track_id"].upper()
    # The opening is an audit record of ids and codes, by the system (no actor).
    [(_, audit)] = outbox(cases, "audit.case-resolution.case.create")
    assert audit.data["resource_id"] == str(case.case_id)
    assert audit.data["track_id"] == event.data["track_id"] and audit.data["actor"] is None


def test_routed_event_delivered_twice_opens_one_case(cases):
    event = routed()
    # The same event again, and the same track re-announced under a new event id.
    again = Event.model_validate({**event.model_dump(), "id": str(uuid.uuid4())})

    feed(cases, event)
    first = case_of(cases, event)
    feed(cases, event, again)

    assert len(all_cases(cases)) == 1
    assert case_of(cases, event).case_ref == first.case_ref
    assert len(outbox(cases, "audit.case-resolution.case.create")) == 1


def test_the_two_tracks_of_one_referral_share_no_identifier(cases):
    legal_stay, ret = routed(track="legal_stay"), routed(track="return")

    feed(cases, legal_stay, ret)

    a, b = case_of(cases, legal_stay), case_of(cases, ret)
    assert a.agency == IO and b.agency == FEDASIL
    assert len({a.case_id, b.case_id}) == 2 and len({a.case_ref, b.case_ref}) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"track": "asylum"},
        {"agency": "police"},
        {"urgency": "whenever"},
        {"office": ""},
        {"routed_at": "2026-11-23T09:30:00"},  # no offset: ambiguous
        {"track_id": None},
        {"purposes": ["marketing"]},
        {"purposes": "referral"},
        {"disclosure": {"categories": ["needs"]}},  # no package
        {"disclosure": {**SEALED, "consent_id": "C-1"}},
        {"disclosure": {**SEALED, "categories": "needs"}},
        {"disclosure": {k: v for k, v in SEALED.items() if k != "key_id"}},
        {"disclosure": {**SEALED, "key_id": ""}},
        # F4: a plaintext package, alone or next to a sealed one, is never stored in zone B.
        {"disclosure": DISCLOSURE},
        {"disclosure": {"categories": ["needs"], "package": {"needs": {}}}},
        {"disclosure": {**SEALED, "package": PACKAGE}},
        # Not the shape of a seal: a 96-bit nonce and a ciphertext with its 128-bit tag.
        {"disclosure": {**SEALED, "nonce": "bm9uY2U="}},
        {"disclosure": {**SEALED, "nonce": "not base64 at all"}},
        {"disclosure": {**SEALED, "ciphertext": "c2hvcnQ="}},
        {"disclosure": {**SEALED, "ciphertext": f"{PACKAGE_CANARY} in the clear"}},
    ],
)
def test_routed_event_breaking_the_contract_opens_nothing(cases, change):
    event = routed()
    broken = Event.model_validate({**event.model_dump(), "data": {**event.data, **change}})

    with pytest.raises(ValidationError):
        feed(cases, broken)

    assert all_cases(cases) == []
    assert outbox(cases) == []


def test_track_routed_to_the_wrong_agency_opens_nothing(cases):
    # A return track can only be a Fedasil case: anything else is a contract breach.
    with pytest.raises(Invalid):
        feed(cases, routed(track="return", agency=IO))

    assert all_cases(cases) == []


# ---------------------------------------------------------------- queues (F7)


def test_each_office_sees_only_its_own_agencys_queue(cases, issuer):
    icam_bxl, fedasil_bxl = routed(track="legal_stay"), routed(track="return")
    icam_antwerp = routed(track="legal_stay", office="antwerp")
    feed(cases, icam_bxl, fedasil_bxl, icam_antwerp)

    def refs(who: dict[str, str]) -> list[str]:
        return [item["case_ref"] for item in queue(cases, issuer, who)]

    assert refs(ICAM_BRUSSELS) == [case_of(cases, icam_bxl).case_ref]
    assert refs(FEDASIL_BRUSSELS) == [case_of(cases, fedasil_bxl).case_ref]
    assert refs(ICAM_ANTWERP) == [case_of(cases, icam_antwerp).case_ref]
    assert refs({**FEDASIL_BRUSSELS, "office": "antwerp"}) == []

    [item] = queue(cases, issuer, ICAM_BRUSSELS)
    assert set(item) == QUEUE_FIELDS
    case = case_of(cases, icam_bxl)
    assert item["case_id"] == str(case.case_id) and item["track"] == "legal_stay"
    assert datetime.fromisoformat(item["routed_at"]) == case.routed_at


def test_queue_lists_urgent_cases_first_then_oldest_first(cases, issuer):
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    brussels_time = timezone(timedelta(hours=1))
    events = {
        "normal-old": routed(routed_at=t0),
        "normal-new": routed(routed_at=t0 + timedelta(hours=3)),
        # 10:30 in Brussels is 09:30 UTC: older than "urgent-new" although its clock reads later.
        "urgent-mid": routed(
            urgency="urgent", routed_at=datetime(2026, 11, 23, 10, 30, tzinfo=brussels_time)
        ),
        "urgent-new": routed(urgency="urgent", routed_at=t0 + timedelta(hours=2)),
        "normal-mid": routed(routed_at=t0 + timedelta(hours=1)),
    }
    feed(cases, *events.values())
    name_of = {case_of(cases, e).case_ref: name for name, e in events.items()}

    order = [name_of[item["case_ref"]] for item in queue(cases, issuer, ICAM_BRUSSELS)]

    assert order == ["urgent-mid", "urgent-new", "normal-old", "normal-mid", "normal-new"]


def test_queue_pages_and_counts_the_whole_queue(cases, issuer):
    feed(cases, *(routed(routed_at=datetime(2026, 1, 1, h, tzinfo=UTC)) for h in range(5)))
    headers = issuer.headers(**ICAM_BRUSSELS)

    page = cases.get("/v1/queue?offset=1&limit=2", headers=headers).json()

    assert page["count"] == 5 and len(page["data"]) == 2
    assert [item["routed_at"][11:13] for item in page["data"]] == ["01", "02"]
    past_the_end = cases.get("/v1/queue?offset=9", headers=headers).json()
    assert past_the_end == {"data": [], "count": 5}
    assert_problem(cases.get("/v1/queue?limit=0", headers=headers), 422, "validation")
    assert_problem(cases.get("/v1/queue?offset=-1", headers=headers), 422, "validation")


def test_accepted_case_leaves_the_queue(cases, issuer):
    first, second = routed(), routed()
    feed(cases, first, second)

    response = accept(cases, issuer, case_of(cases, first).case_id, "legal_stay", ICAM_BRUSSELS)

    assert response.status_code == 200, response.text
    assert [i["case_ref"] for i in queue(cases, issuer, ICAM_BRUSSELS)] == [
        case_of(cases, second).case_ref
    ]


def test_queue_read_is_audited_by_office_without_case_data(cases, issuer):
    feed(cases, routed(), routed())
    queue(cases, issuer, ICAM_BRUSSELS)

    [(_, audit)] = outbox(cases, "audit.case-resolution.queue.read")
    assert audit.data["resource_id"] == f"{IO}/brussels" and audit.data["count"] == 2
    assert audit.data["roles"] == ["icam_coach"] and audit.data["office"] == "brussels"


# ---------------------------------------------------------------- reading a case (F7)


def test_coach_reads_a_case_of_their_office(cases, issuer):
    event = routed(urgency="urgent")
    feed(cases, event)
    case = case_of(cases, event)

    response = cases.get(f"/v1/cases/{case.case_id}", headers=issuer.headers(**ICAM_BRUSSELS))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["case_id"] == str(case.case_id) and body["case_ref"] == case.case_ref
    assert (body["track"], body["agency"], body["office"]) == ("legal_stay", IO, "brussels")
    assert (body["status"], body["assignee"], body["urgency"]) == ("requested", None, "urgent")
    # F5: the case never knows the bridge's identifiers, and does not show its own track id.
    assert not {"track_id", "client_ref", "referral_id"} & set(body)
    [(_, audit)] = outbox(cases, "audit.case-resolution.case.read")
    assert audit.data["resource_id"] == str(case.case_id)


def test_another_office_or_agency_gets_the_same_404_as_an_unknown_case(cases, issuer):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    unknown_id = str(uuid.uuid4())
    unknown = assert_problem(
        cases.get(f"/v1/cases/{unknown_id}", headers=issuer.headers(**ICAM_BRUSSELS)),
        404,
        "not-found",
    )
    for who in (ICAM_ANTWERP, FEDASIL_BRUSSELS):
        for response in (
            cases.get(f"/v1/cases/{case_id}", headers=issuer.headers(**who)),
            accept(cases, issuer, case_id, "legal_stay", who),
            accept(cases, issuer, case_id, "return", who),
        ):
            body = assert_problem(response, 404, "not-found")
            assert body["title"] == unknown["title"]
            assert body["detail"] == unknown["detail"].replace(unknown_id, str(case_id))
    assert case_of(cases, event).status == "requested"
    # Refused reads and accepts leave nothing behind (their transaction rolled back).
    assert [e.type for _, e in outbox(cases, "audit.case-resolution.case.")] == [
        "audit.case-resolution.case.create"
    ]


def test_malformed_case_id_is_a_validation_problem(cases, issuer):
    response = cases.get("/v1/cases/not-a-uuid", headers=issuer.headers(**ICAM_BRUSSELS))
    assert_problem(response, 422, "validation")


def test_assignee_keeps_their_case_after_moving_office(cases, issuer):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id
    coach = {**ICAM_BRUSSELS, "sub": "coach-17"}
    assert accept(cases, issuer, case_id, "legal_stay", coach).status_code == 200

    moved = cases.get(
        f"/v1/cases/{case_id}", headers=issuer.headers(**{**coach, "office": "antwerp"})
    )
    colleague = cases.get(f"/v1/cases/{case_id}", headers=issuer.headers(**ICAM_ANTWERP))

    assert moved.status_code == 200 and moved.json()["assignee"] == "coach-17"
    assert_problem(colleague, 404, "not-found")


# ---------------------------------------------------------------- accepting a track


def test_coach_accepts_a_legal_stay_track_and_becomes_its_assignee(cases, issuer):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id
    coach = {**ICAM_BRUSSELS, "sub": "coach-3"}

    response = accept(cases, issuer, case_id, "legal_stay", coach)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["assignee"] == "coach-3"
    assert datetime.fromisoformat(body["updated_at"]) >= datetime.fromisoformat(body["created_at"])
    stored = case_of(cases, event)
    assert stored.status == "accepted" and stored.assignee == "coach-3"


def test_counsellor_accepts_a_return_track(cases, issuer):
    event = routed(track="return")
    feed(cases, event)

    response = accept(cases, issuer, case_of(cases, event).case_id, "return", FEDASIL_BRUSSELS)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"


def test_icam_coach_cannot_accept_a_return_track(cases, issuer):
    event = routed(track="legal_stay")
    feed(cases, event)

    response = accept(cases, issuer, case_of(cases, event).case_id, "return", ICAM_BRUSSELS)

    assert_problem(response, 403, "not-your-track")
    assert case_of(cases, event).status == "requested"
    assert outbox(cases, ACCEPTED) == []


def test_return_counsellor_cannot_accept_a_legal_stay_track(cases, issuer):
    event = routed(track="return")
    feed(cases, event)

    response = accept(cases, issuer, case_of(cases, event).case_id, "legal_stay", FEDASIL_BRUSSELS)

    assert_problem(response, 403, "not-your-track")
    assert case_of(cases, event).status == "requested"
    assert outbox(cases, ACCEPTED) == []


def test_accepting_twice_is_a_conflict(cases, issuer):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id
    first = {**ICAM_BRUSSELS, "sub": "coach-1"}
    assert accept(cases, issuer, case_id, "legal_stay", first).status_code == 200

    again = accept(cases, issuer, case_id, "legal_stay", first)
    colleague = accept(cases, issuer, case_id, "legal_stay", {**ICAM_BRUSSELS, "sub": "coach-2"})

    assert_problem(again, 409, "illegal-transition")
    assert_problem(colleague, 409, "illegal-transition")
    assert case_of(cases, event).assignee == "coach-1"
    assert len(outbox(cases, ACCEPTED)) == 1
    assert len(outbox(cases, "audit.case-resolution.case.accept")) == 1


def test_a_stale_accept_matches_no_row(cases):
    # Two coaches load the case at once; the conditional UPDATE lets only the first one win.
    event = routed()
    feed(cases, event)
    engine = cases.app.state.runtime.engine
    with Session(engine) as session:
        stale = repository.get_case_by_track(session, track_id=event.data["track_id"])
        assert stale is not None
    for coach, expected in (("coach-1", True), ("coach-2", False)):
        with contextlib.contextmanager(session_scope)(engine) as session:
            won = repository.set_status(
                session,
                case=session.get(Case, stale.case_id),
                expected=TaskStatus.REQUESTED,
                status=TaskStatus.ACCEPTED,
                assignee=coach,
                at=datetime.now(UTC),
            )
        assert won is expected
    assert case_of(cases, event).assignee == "coach-1"


def test_unknown_track_in_the_path_is_a_validation_problem(cases, issuer):
    event = routed()
    feed(cases, event)

    response = accept(cases, issuer, case_of(cases, event).case_id, "asylum", ICAM_BRUSSELS)

    assert_problem(response, 422, "validation")


def test_accept_announces_ids_and_codes_only(cases, issuer):
    event = routed(office="brussels")
    feed(cases, event)
    case = case_of(cases, event)
    coach = {**ICAM_BRUSSELS, "sub": "Jan Peeters"}  # a name-like sub must not travel

    accept(cases, issuer, case.case_id, "legal_stay", coach)

    [(row, accepted)] = outbox(cases, ACCEPTED)
    assert accepted.type == row.subject == ACCEPTED
    assert accepted.subject == event.data["track_id"]
    assert set(accepted.data) == ACCEPTED_FIELDS
    assert accepted.data == {
        "track_id": event.data["track_id"],
        "case_id": str(case.case_id),
        "track": "legal_stay",
        "agency": IO,
        "office": "brussels",
        "previous_status": "requested",
        "status": "accepted",
        "reason": None,
        "outcome": None,
        "at": accepted.data["at"],
    }
    assert datetime.fromisoformat(accepted.data["at"]).tzinfo is not None
    assert json.loads(row.headers)["Nats-Msg-Id"] == accepted.id
    raw = row.payload.decode() + row.headers
    assert "Jan Peeters" not in raw and case.case_ref not in raw

    [(_, audit)] = outbox(cases, "audit.case-resolution.case.accept")
    assert audit.data["resource_id"] == str(case.case_id)
    assert audit.data["track_id"] == event.data["track_id"] and audit.data["status"] == "accepted"
    assert audit.data["agency"] == IO and audit.data["office"] == "brussels"


# ---------------------------------------------------------------- the performer's status changes


def test_coach_walks_a_legal_stay_track_to_completion(cases, issuer):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    steps = [
        ("accept", None, "accepted", None),
        ("status", {"status": "in-progress"}, "in-progress", None),
        (
            "status",
            {"status": "on-hold", "reason": "awaiting_documents"},
            "on-hold",
            "awaiting_documents",
        ),
        ("status", {"status": "in-progress"}, "in-progress", None),
    ]
    for verb, body, status, reason in steps:
        response = act(cases, issuer, case_id, "legal_stay", verb, COACH, body)
        assert response.status_code == 200, response.text
        assert (response.json()["status"], response.json()["status_reason"]) == (status, reason)
        assert response.json()["closed_at"] is None

    response = act(
        cases,
        issuer,
        case_id,
        "legal_stay",
        "complete",
        COACH,
        {"outcome": "protection_procedure", "note": "asylum application lodged"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["outcome"], body["outcome_category"]) == (
        "completed",
        "protection_procedure",
        "semi_permanent",
    )
    assert body["status_note"] == "asylum application lodged" and body["assignee"] == "coach-1"
    stored = case_of(cases, event)
    assert stored.status == "completed" and stored.outcome == "protection_procedure"
    assert stored.closed_at is not None and stored.closed_at.tzinfo is not None
    # A final status is final: the queue does not show it and nothing moves it any more.
    assert_problem(
        act(cases, issuer, case_id, "legal_stay", "status", COACH, {"status": "in-progress"}),
        409,
        "illegal-transition",
    )


def test_counsellor_rejects_a_requested_return_track_with_a_reason(cases, issuer):
    event = routed(track="return")
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    response = act(
        cases,
        issuer,
        case_id,
        "return",
        "reject",
        COUNSELLOR,
        {"reason": "wrong_office", "note": "belongs to Liège"},
    )

    assert response.status_code == 200, response.text
    stored = case_of(cases, event)
    assert (stored.status, stored.status_reason, stored.status_note) == (
        "rejected",
        "wrong_office",
        "belongs to Liège",
    )
    assert stored.closed_at is not None and stored.assignee is None
    assert queue(cases, issuer, FEDASIL_BRUSSELS) == []
    [(_, rejected)] = outbox(cases, "secondline.case.track.rejected")
    assert (rejected.data["status"], rejected.data["reason"]) == ("rejected", "wrong_office")


@pytest.mark.parametrize(
    ("verb", "body", "kind", "status", "reason", "outcome"),
    [
        ("accept", None, "accepted", "accepted", None, None),
        ("reject", {"reason": "duplicate"}, "rejected", "rejected", "duplicate", None),
        ("status", {"status": "in-progress"}, "status-changed", "in-progress", None, None),
        (
            "status",
            {"status": "on-hold", "reason": "medical"},
            "status-changed",
            "on-hold",
            "medical",
            None,
        ),
        (
            "status",
            {"status": "failed", "reason": "client_disengaged"},
            "status-changed",
            "failed",
            "client_disengaged",
            None,
        ),
        (
            "status",
            {"status": "cancelled", "reason": "client_request"},
            "status-changed",
            "cancelled",
            "client_request",
            None,
        ),
        ("complete", {"outcome": "return"}, "completed", "completed", None, "return"),
    ],
)
def test_each_status_change_emits_exactly_one_event_with_the_documented_fields(
    cases, issuer, verb, body, kind, status, reason, outcome
):
    start = "requested" if verb in ("accept", "reject") else "accepted"
    event, case_id = case_in(cases, issuer, start, track="return")
    before = {row.event_id for row, _ in outbox(cases)}
    body = {**body, "note": f"{NOTE_CANARY} said so"} if body else None

    response = act(cases, issuer, case_id, "return", verb, COUNSELLOR, body)

    assert response.status_code == 200, response.text
    new = [(r, e) for r, e in outbox(cases) if r.event_id not in before]
    [(row, emitted)] = [(r, e) for r, e in new if e.type.startswith("secondline.")]
    assert emitted.type == row.subject == f"secondline.case.track.{kind}"
    assert emitted.subject == event.data["track_id"]
    assert emitted.data == {
        "track_id": event.data["track_id"],
        "case_id": str(case_id),
        "track": "return",
        "agency": FEDASIL,
        "office": "brussels",
        "previous_status": start,
        "status": status,
        "reason": reason,
        "outcome": outcome,
        "at": emitted.data["at"],
    }
    assert datetime.fromisoformat(emitted.data["at"]).tzinfo is not None
    assert json.loads(row.headers)["Nats-Msg-Id"] == emitted.id
    # The change is one audit record of codes; the note stays on the case, in zone B.
    [(audit_row, audit)] = [(r, e) for r, e in new if e.type.startswith("audit.")]
    assert audit.data["resource_id"] == str(case_id)
    assert (audit.data["previous_status"], audit.data["status"]) == (start, status)
    assert (audit.data["reason"], audit.data["track_outcome"]) == (reason, outcome)
    # `outcome` of an audit record is whether the action succeeded, never the track's outcome.
    assert audit.data["outcome"] == "success"
    if body:
        assert case_of(cases, event).status_note == f"{NOTE_CANARY} said so"
    for r in (row, audit_row):
        assert NOTE_CANARY not in r.payload.decode() + r.headers


# Calls that the FHIR Task table forbids from the state the case is in.
ILLEGAL_CALLS = [
    ("requested", "status", {"status": "in-progress"}),
    ("requested", "status", {"status": "on-hold", "reason": "medical"}),
    ("requested", "status", {"status": "failed", "reason": "other"}),
    ("requested", "complete", {"outcome": "legal_stay"}),
    ("accepted", "accept", None),
    ("accepted", "reject", {"reason": "not_eligible"}),
    ("in-progress", "status", {"status": "in-progress"}),
    ("on-hold", "status", {"status": "on-hold", "reason": "medical"}),
    ("on-hold", "complete", {"outcome": "legal_stay"}),
    ("completed", "status", {"status": "cancelled", "reason": "other"}),
    ("completed", "complete", {"outcome": "return"}),
    ("rejected", "accept", None),
    ("cancelled", "status", {"status": "in-progress"}),
    ("failed", "status", {"status": "on-hold", "reason": "medical"}),
]


@pytest.mark.parametrize(("start", "verb", "body"), ILLEGAL_CALLS)
def test_illegal_transition_is_409_and_changes_nothing(cases, issuer, start, verb, body):
    event, case_id = case_in(cases, issuer, start)
    before = snapshot(cases, event)

    response = act(cases, issuer, case_id, "legal_stay", verb, COACH, body)

    assert_problem(response, 409, "illegal-transition")
    assert snapshot(cases, event) == before


@pytest.mark.parametrize(
    ("start", "verb", "body", "slug"),
    [
        ("requested", "reject", {}, "validation"),
        ("requested", "reject", {"note": "no"}, "validation"),
        ("requested", "status", {"status": "cancelled"}, "reason-required"),
        ("accepted", "status", {"status": "on-hold"}, "reason-required"),
        ("accepted", "status", {"status": "failed", "note": "gone"}, "reason-required"),
        ("in-progress", "status", {"status": "cancelled", "reason": None}, "reason-required"),
        ("accepted", "complete", {}, "validation"),
        # A status that takes no reason refuses one, so a resumed track carries no stale reason.
        ("on-hold", "status", {"status": "in-progress", "reason": "medical"}, "reason-not-allowed"),
    ],
)
def test_missing_or_misplaced_reason_is_422_and_changes_nothing(
    cases, issuer, start, verb, body, slug
):
    event, case_id = case_in(cases, issuer, start)
    before = snapshot(cases, event)

    response = act(cases, issuer, case_id, "legal_stay", verb, COACH, body)

    assert_problem(response, 422, slug)
    assert snapshot(cases, event) == before


@pytest.mark.parametrize("reason", ["consent_withdrawn", "requester_cancelled"])
@pytest.mark.parametrize(
    ("start", "verb", "status"),
    [
        ("requested", "reject", None),
        ("accepted", "status", "cancelled"),
        ("on-hold", "status", "failed"),
    ],
)
def test_performer_cannot_set_the_requesters_reasons(cases, issuer, reason, start, verb, status):
    event, case_id = case_in(cases, issuer, start)
    before = snapshot(cases, event)
    body = {"reason": reason, **({"status": status} if status else {})}

    response = act(cases, issuer, case_id, "legal_stay", verb, COACH, body)

    assert_problem(response, 422, "reason-not-allowed")
    assert snapshot(cases, event) == before


def test_performer_cannot_complete_with_the_withdrawal_outcome(cases, issuer):
    event, case_id = case_in(cases, issuer, "in-progress")
    before = snapshot(cases, event)

    response = act(
        cases, issuer, case_id, "legal_stay", "complete", COACH, {"outcome": "consent_withdrawn"}
    )

    assert_problem(response, 422, "outcome-not-allowed")
    assert snapshot(cases, event) == before


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("reject", {"reason": "not_eligible", "comment": "x"}),  # unknown field
        ("reject", {"reason": "because"}),  # not a reason code
        ("reject", {"reason": 3}),
        ("reject", {"reason": "other", "note": ""}),
        ("reject", {"reason": "other", "note": "x" * 2001}),
        ("reject", {"reason": "other", "note": 42}),
        ("status", {"status": "completed"}),  # has its own route
        ("status", {"status": "accepted"}),
        ("status", {"status": "requested"}),  # the requester's
        ("status", {"status": "in progress"}),
        ("status", {"status": ["on-hold"], "reason": "medical"}),
        ("status", {"reason": "medical"}),
        ("complete", {"outcome": "deported"}),
        ("complete", {"outcome": "return", "reason": "other"}),
        ("complete", None),
    ],
)
def test_malformed_bodies_are_validation_problems_that_store_nothing(cases, issuer, verb, body):
    start = "requested" if verb == "reject" else "accepted"
    event, case_id = case_in(cases, issuer, start)
    before = snapshot(cases, event)

    response = act(cases, issuer, case_id, "legal_stay", verb, COACH, body)

    assert_problem(response, 422, "validation")
    assert snapshot(cases, event) == before


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("accept", None),
        ("reject", {"reason": "not_eligible"}),
        ("status", {"status": "in-progress"}),
        ("complete", {"outcome": "return"}),
    ],
)
def test_coach_cannot_change_a_return_track_nor_counsellor_a_legal_stay_track(
    cases, issuer, verb, body
):
    start = "requested" if verb in ("accept", "reject") else "accepted"
    legal_stay, legal_stay_id = case_in(cases, issuer, start, track="legal_stay")
    ret, ret_id = case_in(cases, issuer, start, track="return")
    before = snapshot(cases, legal_stay), snapshot(cases, ret)

    # Each sees their own agency's case, but the other track in the path is not theirs.
    coach = act(cases, issuer, legal_stay_id, "return", verb, COACH, body)
    counsellor = act(cases, issuer, ret_id, "legal_stay", verb, COUNSELLOR, body)

    assert_problem(coach, 403, "not-your-track")
    assert_problem(counsellor, 403, "not-your-track")
    assert (snapshot(cases, legal_stay), snapshot(cases, ret)) == before


def test_a_stale_status_change_matches_no_row(cases, issuer):
    # Two coaches load an accepted case at once; the one who completes second loses.
    event, case_id = case_in(cases, issuer, "in-progress")
    engine = cases.app.state.runtime.engine
    for status, expected in ((TaskStatus.COMPLETED, True), (TaskStatus.FAILED, False)):
        with contextlib.contextmanager(session_scope)(engine) as session:
            won = repository.set_status(
                session,
                case=session.get(Case, case_id),
                expected=TaskStatus.IN_PROGRESS,
                status=status,
                assignee="coach-1",
                at=datetime.now(UTC),
            )
        assert won is expected
    assert case_of(cases, event).status == "completed"


# ---------------------------------------------------------------- another office (F7)


def test_another_office_can_neither_see_nor_work_on_the_case(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", office="brussels")
    before = snapshot(cases, event)
    who = issuer.headers(**ICAM_ANTWERP)
    base = f"/v1/cases/{case_id}"
    today = dt.date.today().isoformat()

    responses = [
        cases.get(base, headers=who),
        cases.post(f"{base}/tracks/legal_stay/reject", headers=who, json={"reason": "other"}),
        cases.post(f"{base}/tracks/legal_stay/status", headers=who, json={"status": "in-progress"}),
        cases.post(f"{base}/tracks/legal_stay/complete", headers=who, json={"outcome": "return"}),
        cases.put(
            f"{base}/tracks/legal_stay/options/9bis", headers=who, json={"assessment": "viable"}
        ),
        cases.post(f"{base}/tracks/return/steps", headers=who, json={"step": "informing"}),
        cases.post(
            f"{base}/sessions",
            headers=who,
            json={"date": today, "mode": "phone", "interpreter": False},
        ),
        cases.post(f"{base}/decisions", headers=who, json={"decision": "undecided", "date": today}),
        # Even a malformed body gets the 404 first: nothing tells the case exists.
        cases.post(f"{base}/decisions", headers=who, json={"decision": "nonsense"}),
    ]

    for response in responses:
        assert_problem(response, 404, "not-found")
    assert snapshot(cases, event) == before
    assert queue(cases, issuer, ICAM_ANTWERP) == []


# ---------------------------------------------------------------- the disclosure (F2, F4, F9)


def test_disclosure_is_returned_exactly_as_routed(cases, issuer):
    event = routed(purposes=["referral", "feedback"])
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    body = read(cases, issuer, case_id, COACH)

    assert body["disclosure"] == PACKAGE
    assert sorted(body["disclosed_categories"]) == ["identity", "intentions", "needs"]
    assert body["disclosure_status"] == "disclosed"
    assert body["purposes"] == ["referral", "feedback"]
    # The key was asked of the bridge for this read, with the ids zone B holds.
    assert cases.bridge.calls == [(event.data["track_id"], KEY_ID)]
    # F9: the read names the categories it showed, never their values.
    [(row, audit)] = outbox(cases, "audit.case-resolution.case.read")
    assert audit.data["categories"] == ["identity", "intentions", "needs"]
    assert audit.data["disclosure_status"] == "disclosed"
    assert audit.data["actor"] == "coach-1" and audit.data["resource_id"] == str(case_id)
    assert PACKAGE_CANARY not in row.payload.decode()


def test_zone_b_stores_only_the_sealed_package_and_never_the_key(cases, issuer, caplog):
    caplog.set_level(logging.DEBUG)
    event = routed()
    feed(cases, event)
    assert read(cases, issuer, case_of(cases, event).case_id, COACH)["disclosure"] == PACKAGE

    # F4: the row holds the key id, nonce and ciphertext exactly as routed, nothing in clear.
    disclosure = event.data["disclosure"]
    assert sealed_columns(cases, event) == (
        KEY_ID,
        disclosure["nonce"],
        disclosure["ciphertext"],
    )
    dump = raw_rows(cases)
    assert disclosure["ciphertext"] in dump
    assert PACKAGE_CANARY not in dump and "display_name" not in dump and "shelter" not in dump
    # The key the bridge handed out is in no table, outbox row (events, audit) or log line.
    everything = dump + "".join(r.payload.decode() + r.headers for r, _ in outbox(cases))
    for form in (encode_key(KEY), KEY.hex()):
        assert form not in everything and form not in caplog.text
    assert PACKAGE_CANARY not in caplog.text


def test_disclosure_of_one_category_shows_no_empty_keys_for_the_others(cases, issuer):
    only_needs = {"categories": ["needs"], "package": {"needs": PACKAGE["needs"]}}
    event = routed(disclosure=only_needs)
    feed(cases, event)

    body = read(cases, issuer, case_of(cases, event).case_id, COACH)

    assert body["disclosure"] == {"needs": PACKAGE["needs"]}
    assert body["disclosed_categories"] == ["needs"]


def test_track_routed_without_a_disclosure_opens_a_case_with_an_empty_one(cases, issuer):
    event = routed(purposes=None, disclosure=None)
    feed(cases, event)

    body = read(cases, issuer, case_of(cases, event).case_id, COACH)

    assert (body["disclosure"], body["disclosed_categories"], body["purposes"]) == ({}, [], [])
    assert body["disclosure_status"] == "disclosed"
    assert cases.bridge.calls == []  # nothing sealed, nothing to ask for
    [(_, audit)] = outbox(cases, "audit.case-resolution.case.read")
    assert audit.data["categories"] == []


@pytest.mark.parametrize(
    "categories",
    [["passport"], ["needs", "needs"], ["Needs"]],
)
def test_disclosure_naming_unknown_or_repeated_categories_stores_nothing(cases, categories):
    disclosure = {**SEALED, "categories": categories}

    with pytest.raises(Invalid) as raised:
        feed(cases, routed(disclosure=disclosure))

    assert raised.value.slug == "invalid-disclosure"
    assert all_cases(cases) == []
    assert outbox(cases) == []


@pytest.mark.parametrize(
    "disclosure",
    [
        # A key the categories do not name: data the consent does not cover.
        {"categories": ["needs"], "package": {**PACKAGE}},
        # A category without its object.
        {"categories": ["identity", "needs"], "package": {"needs": PACKAGE["needs"]}},
        {"categories": ["needs"], "package": {"needs": ["shelter"]}},
        {"categories": ["needs"], "package": {"needs": PACKAGE_CANARY}},
        {"categories": ["needs"], "package": {"needs": None}},
    ],
)
def test_package_that_breaks_its_contract_is_never_shown(cases, issuer, disclosure, caplog):
    """F2: the package is sealed, so zone B checks it each time it opens it; what the consented
    categories do not describe exactly is never shown, and the case still is."""
    event = routed(disclosure=disclosure)
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    response = cases.get(f"/v1/cases/{case_id}", headers=issuer.headers(**COACH))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["disclosure"], body["disclosure_status"]) == (None, "unavailable")
    assert body["disclosed_categories"] == disclosure["categories"]
    assert PACKAGE_CANARY not in response.text and "shelter" not in response.text
    [(_, audit)] = outbox(cases, "audit.case-resolution.case.read")
    assert (audit.data["categories"], audit.data["disclosure_status"]) == ([], "unavailable")
    # An id-only line for the operators: which case, which failure, no value.
    [line] = [r.getMessage() for r in caplog.records if str(case_id) in r.getMessage()]
    assert "InvalidDisclosure" in line and PACKAGE_CANARY not in caplog.text


@pytest.mark.parametrize(
    "tamper",
    ["another_track", "another_key", "flipped_bit"],
)
def test_a_package_that_does_not_open_is_never_shown(cases, issuer, tamper, caplog):
    """A sealed package opens only with its consent's key and only as its own track's package:
    copied onto another case, sealed under another key, or altered, it shows nothing."""
    track_id = f"T-{uuid.uuid4().hex}"
    disclosure = {
        "another_track": lambda: sealed(DISCLOSURE, track_id, aad="T-another-track"),
        "another_key": lambda: sealed(DISCLOSURE, track_id, key=new_data_key()),
        "flipped_bit": lambda: {
            **(good := sealed(DISCLOSURE, track_id)),
            "ciphertext": ("B" if good["ciphertext"][0] == "A" else "A") + good["ciphertext"][1:],
        },
    }[tamper]()
    event = routed(track_id=track_id, disclosure=disclosure)
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    body = read(cases, issuer, case_id, COACH)

    assert (body["disclosure"], body["disclosure_status"]) == (None, "unavailable")
    assert (body["case_id"], body["status"]) == (str(case_id), "requested")
    [line] = [r.getMessage() for r in caplog.records if str(case_id) in r.getMessage()]
    assert "CannotOpen" in line


def test_once_the_bridge_refuses_the_key_the_case_shows_no_disclosure(cases, issuer):
    """F4: the bridge destroyed the key; before the cancel even arrives, nothing is shown."""
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id
    assert read(cases, issuer, case_id, COACH)["disclosure"] == PACKAGE

    cases.bridge.withdrawn.add(KEY_ID)
    response = cases.get(f"/v1/cases/{case_id}", headers=issuer.headers(**COACH))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["disclosure"], body["disclosure_status"]) == (None, "withdrawn")
    assert (body["status"], body["disclosed_categories"]) == (
        "requested",
        ["identity", "needs", "intentions"],
    )
    assert PACKAGE_CANARY not in response.text
    # The read is still audited, with the categories it showed: none.
    audits = [e.data for _, e in outbox(cases, "audit.case-resolution.case.read")]
    assert [(a["categories"], a["disclosure_status"]) for a in audits] == [
        (["identity", "intentions", "needs"], "disclosed"),
        ([], "withdrawn"),
    ]


@pytest.mark.parametrize("bridge", ["down", "unknown_key"])
def test_a_bridge_that_does_not_hand_out_the_key_leaves_the_case_readable(
    cases, issuer, bridge, caplog
):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id
    if bridge == "down":
        cases.bridge.down = True
    else:
        cases.bridge.keys.clear()

    response = cases.get(f"/v1/cases/{case_id}", headers=issuer.headers(**COACH))

    # Not a 500, not an error for the whole case: the case without its disclosure.
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["disclosure"], body["disclosure_status"]) == (None, "unavailable")
    assert body["case_id"] == str(case_id)
    slug = "call-unavailable" if bridge == "down" else "not-found"
    [line] = [
        r.getMessage()
        for r in caplog.records
        if str(case_id) in r.getMessage() and "key" in r.getMessage()
    ]
    assert slug in line
    # Nothing is stored about it: the next read asks again.
    assert case_of(cases, event).disclosure_status == "disclosed"


def test_without_a_broker_link_the_case_is_shown_with_its_disclosure_unavailable(
    service_settings, issuer
):
    """The real key fetcher, no NATS at all: the call fails fast and the case is still read."""
    with running(create_app(service_settings(Settings, "case-resolution"))) as client:
        event = routed()
        feed(client, event)
        body = read(client, issuer, case_of(client, event).case_id, COACH)
    assert (body["disclosure"], body["disclosure_status"]) == (None, "unavailable")


def test_transition_responses_do_not_carry_the_package(cases, issuer):
    event = routed()
    feed(cases, event)

    response = accept(cases, issuer, case_of(cases, event).case_id, "legal_stay", COACH)

    assert "disclosure" not in response.json()
    assert PACKAGE_CANARY not in response.text
    assert outbox(cases, "audit.case-resolution.case.read") == []
    # A transition does not open the package: the bridge is not asked.
    assert cases.bridge.calls == []


# ---------------------------------------------------------------- who looked (F9)

READ = "secondline.case.disclosure.read"


def test_every_read_that_shows_a_disclosure_tells_the_bridge_who_read_what(cases, issuer):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    read(cases, issuer, case_id, COACH)
    read(cases, issuer, case_id, {**COACH, "sub": "coach-2"})

    reads = [e for _, e in outbox(cases, READ)]
    assert len(reads) == 2
    first = reads[0]
    assert set(first.data) == {
        "read_id",
        "track_id",
        "role",
        "agency",
        "office",
        "categories",
        "at",
    }
    assert (first.subject, first.data["track_id"]) == (event.data["track_id"],) * 2
    assert {k: first.data[k] for k in ("role", "agency", "office", "categories")} == {
        "role": "icam_coach",
        "agency": IO,
        "office": "brussels",
        "categories": ["identity", "intentions", "needs"],
    }
    assert reads[0].data["read_id"] != reads[1].data["read_id"]
    # Who is a role and an office, never a name: no `sub`, no case id or reference, no data.
    for sent in reads:
        text = json.dumps(sent.data)
        for hidden in ("coach-1", "coach-2", str(case_id), case_of(cases, event).case_ref):
            assert hidden not in text
        assert PACKAGE_CANARY not in text


@pytest.mark.parametrize("situation", ["withdrawn", "bridge_down", "nothing_disclosed"])
def test_a_read_that_shows_no_disclosure_tells_the_bridge_nothing(cases, issuer, situation):
    event = routed(disclosure=None) if situation == "nothing_disclosed" else routed()
    feed(cases, event)
    if situation == "withdrawn":
        cases.bridge.withdrawn.add(KEY_ID)
    elif situation == "bridge_down":
        cases.bridge.down = True

    body = read(cases, issuer, case_of(cases, event).case_id, COACH)

    assert not body["disclosure"]
    assert outbox(cases, READ) == []


def test_the_reader_role_is_the_one_of_the_cases_agency():
    assert domain.reader_role({"icam_coach"}, agency=IO) == "icam_coach"
    assert domain.reader_role({"return_counsellor"}, agency=FEDASIL) == "return_counsellor"
    assert domain.reader_role({"return_counsellor"}, agency=IO) == "second_line"


# ---------------------------------------------------------------- joint review (F5, F6)


def _linked_pair(client: TestClient, issuer: Any) -> tuple[uuid.UUID, uuid.UUID]:
    """An ICAM case and a Fedasil case the bridge links (joint review on both consents)."""
    legal, legal_id = case_in(client, issuer, "in-progress")
    ret, ret_id = case_in(client, issuer, "on-hold", track="return")
    client.bridge.links = {  # type: ignore[attr-defined]
        legal.data["track_id"]: [ret.data["track_id"]],
        ret.data["track_id"]: [legal.data["track_id"]],
    }
    return legal_id, ret_id


def test_under_joint_review_each_case_worker_sees_the_other_tracks_status_and_outcome(
    cases, issuer
):
    legal_id, ret_id = _linked_pair(cases, issuer)
    completed = act(
        cases, issuer, legal_id, "legal_stay", "complete", COACH, {"outcome": "legal_stay"}
    )
    assert completed.status_code == 200, completed.text

    coach_view = cases.get(f"/v1/cases/{legal_id}", headers=issuer.headers(**COACH))
    counsellor_view = cases.get(f"/v1/cases/{ret_id}", headers=issuer.headers(**COUNSELLOR))

    assert coach_view.status_code == counsellor_view.status_code == 200
    [other_of_coach] = coach_view.json()["joint_review"]["tracks"]
    [other_of_counsellor] = counsellor_view.json()["joint_review"]["tracks"]
    assert coach_view.json()["joint_review"]["status"] == "linked"
    assert {k: other_of_coach[k] for k in ("agency", "track", "status", "outcome")} == {
        "agency": FEDASIL,
        "track": "return",
        "status": "on-hold",
        "outcome": None,
    }
    assert {k: other_of_counsellor[k] for k in ("agency", "track", "status", "outcome")} == {
        "agency": IO,
        "track": "legal_stay",
        "status": "completed",
        "outcome": "legal_stay",
    }
    assert other_of_counsellor["outcome_category"] == "permanent"
    # Status and outcome only: nothing of the other case itself (id, pseudonym, assignee, notes,
    # reason, disclosure) reaches the other agency.
    assert set(other_of_coach) == {
        "agency",
        "track",
        "status",
        "outcome",
        "outcome_category",
        "closed_at",
        "updated_at",
    }
    legal_case, ret_case = (
        case_of_id(cases, legal_id),
        case_of_id(cases, ret_id),
    )
    for hidden in (str(legal_id), legal_case.case_ref, "coach-1", legal_case.track_id):
        assert hidden not in counsellor_view.text
    for hidden in (str(ret_id), ret_case.case_ref, "counsellor-1", ret_case.track_id):
        assert hidden not in coach_view.text
    # The read record names the linked case by id (for the auditor), never its contents.
    reads = [e.data for _, e in outbox(cases, "audit.case-resolution.case.read")]
    assert [(r["resource_id"], r["joint_review"], r["linked_case_ids"]) for r in reads] == [
        (str(legal_id), "linked", [str(ret_id)]),
        (str(ret_id), "linked", [str(legal_id)]),
    ]


def test_without_joint_review_a_case_shows_nothing_of_the_other_agency(cases, issuer):
    legal_id, _ = _linked_pair(cases, issuer)
    cases.bridge.links = {}

    body = read(cases, issuer, legal_id, COACH)

    assert body["joint_review"] == {"status": "not_consented", "tracks": []}
    assert FEDASIL not in json.dumps(body)
    [record] = [e.data for _, e in outbox(cases, "audit.case-resolution.case.read")]
    assert (record["joint_review"], record["linked_case_ids"]) == ("not_consented", [])


def test_the_bridge_is_asked_on_every_read_so_an_unlink_shows_at_once(cases, issuer):
    """Zone B keeps no link: a withdrawn joint review is honoured by the very next read."""
    legal_id, _ = _linked_pair(cases, issuer)
    assert read(cases, issuer, legal_id, COACH)["joint_review"]["status"] == "linked"

    cases.bridge.links.clear()

    assert read(cases, issuer, legal_id, COACH)["joint_review"]["status"] == "not_consented"
    track_id = case_of_id(cases, legal_id).track_id
    assert cases.bridge.link_calls == [track_id, track_id]


def test_a_link_to_a_case_of_the_same_agency_is_never_shown(cases, issuer):
    """Whatever the bridge answers, joint review is between the two agencies only (F7)."""
    legal, legal_id = case_in(cases, issuer, "accepted")
    other, _ = case_in(cases, issuer, "requested", office="antwerp")
    cases.bridge.links = {legal.data["track_id"]: [other.data["track_id"], "T-unknown"]}

    body = read(cases, issuer, legal_id, COACH)

    assert body["joint_review"] == {"status": "linked", "tracks": []}
    assert "antwerp" not in json.dumps(body["joint_review"])


def test_a_bridge_without_a_joint_review_answer_leaves_the_case_readable(cases, issuer, caplog):
    legal_id, _ = _linked_pair(cases, issuer)
    cases.bridge.down = True

    body = read(cases, issuer, legal_id, COACH)

    assert body["joint_review"] == {"status": "unavailable", "tracks": []}
    assert body["case_id"] == str(legal_id) and body["status"] == "in-progress"
    assert any(
        str(legal_id) in r.getMessage() and "joint-review" in r.getMessage() for r in caplog.records
    )


class _Runtime:
    """A stand-in for the runtime's blocking call (a pure unit test of the reply check)."""

    def __init__(self, reply: Any) -> None:
        self.reply, self.asked = reply, []

    def call(self, link: str, subject: str, payload: Any, *, timeout: float) -> Any:
        self.asked.append((link, subject, payload))
        return self.reply


@pytest.mark.parametrize(
    "reply",
    [
        {},
        {"linked_track_ids": "T-1"},
        {"linked_track_ids": [1]},
        {"linked_track_ids": [""]},
        {"linked_track_ids": ["x" * 65]},
        {"linked_track_ids": [f"T-{i}" for i in range(17)]},
    ],
)
def test_a_malformed_joint_review_reply_is_a_failed_call(reply):
    with pytest.raises(Unavailable) as raised:
        bridge_link_finder(_Runtime(reply), timeout=1.0)("T-0")  # type: ignore[arg-type]
    assert raised.value.slug == "call-failed"


def test_the_joint_review_call_names_the_track_only():
    runtime = _Runtime({"linked_track_ids": ["T-2"]})
    assert bridge_link_finder(runtime, timeout=1.0)("T-1") == ["T-2"]  # type: ignore[arg-type]
    assert runtime.asked == [("default", "svc.referral.joint-review", {"track_id": "T-1"})]


# ---------------------------------------------------------------- requester cancel and withdrawal (F4)


def test_requester_cancel_cancels_a_requested_case_and_removes_it_from_the_queue(cases, issuer):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id
    assert [i["case_id"] for i in queue(cases, issuer, ICAM_BRUSSELS)] == [str(case_id)]

    feed(cases, cancelled(event, reason="requester_cancelled"))

    stored = case_of(cases, event)
    assert (stored.status, stored.status_reason) == ("cancelled", "requester_cancelled")
    assert stored.closed_at is not None
    assert queue(cases, issuer, ICAM_BRUSSELS) == []
    # The bridge sent this: nothing goes back to it.
    assert outbox(cases, "secondline.") == []
    [(_, audit)] = outbox(cases, "audit.case-resolution.case.cancel")
    assert (audit.data["actor"], audit.data["previous_status"], audit.data["reason"]) == (
        None,
        "requested",
        "requester_cancelled",
    )
    # A requester cancel keeps the package: only a withdrawal purges it.
    assert read(cases, issuer, case_id, COACH)["disclosure"] == PACKAGE


def test_requester_cancel_delivered_twice_changes_nothing_more(cases, issuer):
    event, _ = case_in(cases, issuer, "in-progress")
    cancel = cancelled(event, reason="client_request")

    feed(cases, cancel)
    first = case_of(cases, event)
    feed(cases, cancel, cancelled(event, reason="client_request"))

    assert snapshot(cases, event)["case"] == {
        column.name: getattr(first, column.name) for column in Case.__table__.columns
    }
    assert (first.status, first.status_reason, first.assignee) == (
        "cancelled",
        "client_request",
        "coach-1",
    )
    assert len(outbox(cases, "audit.case-resolution.case.cancel")) == 1


def test_requester_cancel_leaves_a_finished_case_as_it_is(cases, issuer):
    event, _ = case_in(cases, issuer, "completed")
    before = snapshot(cases, event)

    feed(cases, cancelled(event, reason="requester_cancelled"))

    assert snapshot(cases, event) == before


def test_consent_withdrawn_cancels_an_open_case_and_purges_its_disclosure(cases, issuer):
    event, case_id = case_in(cases, issuer, "on-hold")

    feed(cases, cancelled(event, reason="consent_withdrawn"))

    stored = case_of(cases, event)
    assert (stored.status, stored.status_reason) == ("cancelled", "consent_withdrawn")
    assert sealed_columns(cases, event) == (None, None, None)
    assert stored.disclosure_status == "withdrawn"
    body = read(cases, issuer, case_id, COACH)
    assert (body["disclosure"], body["disclosure_status"]) == (None, "withdrawn")
    # The metadata stays for audit: which categories were once disclosed, and the case itself.
    assert sorted(body["disclosed_categories"]) == ["identity", "intentions", "needs"]
    dump = raw_rows(cases)
    assert PACKAGE_CANARY not in dump and event.data["disclosure"]["ciphertext"] not in dump


def test_consent_withdrawn_purges_the_disclosure_even_on_a_completed_case(cases, issuer):
    event, case_id = case_in(cases, issuer, "completed")
    ciphertext = event.data["disclosure"]["ciphertext"]
    assert ciphertext in raw_rows(cases)  # the sealed package really was stored

    feed(cases, cancelled(event, reason="consent_withdrawn"))
    feed(cases, cancelled(event, reason="consent_withdrawn"))  # idempotent

    stored = case_of(cases, event)
    assert (stored.status, stored.outcome) == ("completed", "legal_stay")
    assert stored.disclosure_status == "withdrawn"
    # The raw row holds no sealed package any more: SQL NULL in all three columns.
    assert sealed_columns(cases, event) == (None, None, None)
    dump = raw_rows(cases)
    assert ciphertext not in dump and event.data["disclosure"]["nonce"] not in dump
    assert PACKAGE_CANARY not in dump and "shelter" not in dump
    [(_, purge)] = outbox(cases, "audit.case-resolution.case-disclosure.purge")
    assert purge.data["resource_id"] == str(case_id) and purge.data["actor"] is None
    assert sorted(purge.data["categories"]) == ["identity", "intentions", "needs"]
    assert outbox(cases, "audit.case-resolution.case.cancel") == []
    body = read(cases, issuer, case_id, COACH)
    assert (body["disclosure"], body["status"], body["outcome_category"]) == (
        None,
        "completed",
        "permanent",
    )
    [(_, audit)] = outbox(cases, "audit.case-resolution.case.read")
    assert audit.data["categories"] == []


def test_cancel_of_an_unknown_track_is_kept_with_an_id_only_log_line(cases, caplog):
    caplog.set_level(logging.INFO, logger="twoline")
    ghost = routed(track_id="T-ghost")

    feed(cases, cancelled(ghost, reason="consent_withdrawn"))

    assert all_cases(cases) == []
    assert [(p.track_id, p.reason, p.agency) for p in pending_cancels(cases)] == [
        ("T-ghost", "consent_withdrawn", IO)
    ]
    # Nothing goes back to the bridge; the audit record holds the track id and the code.
    [(_, audit)] = outbox(cases)
    assert audit.type == "audit.case-resolution.case-pending-cancel.create"
    assert (audit.data["resource_id"], audit.data["reason"], audit.data["actor"]) == (
        "T-ghost",
        "consent_withdrawn",
        None,
    )
    [line] = [r.getMessage() for r in caplog.records if "T-ghost" in r.getMessage()]
    assert "consent_withdrawn" not in line and PACKAGE_CANARY not in caplog.text


@pytest.mark.parametrize(
    "change",
    [
        {"status": "completed"},
        {"reason": "because"},
        {"at": "2026-11-23T09:30:00"},
        {"agency": "police"},
    ],
)
def test_cancel_event_breaking_the_contract_changes_nothing(cases, change):
    event = routed()
    feed(cases, event)
    cancel = cancelled(event)
    broken = Event.model_validate({**cancel.model_dump(), "data": {**cancel.data, **change}})

    with pytest.raises(ValidationError):
        feed(cases, broken)

    assert case_of(cases, event).status == "requested"


def test_cancel_naming_another_agency_is_invalid(cases):
    event = routed(track="legal_stay")
    feed(cases, event)

    with pytest.raises(Invalid):
        feed(cases, cancelled(event, reason="consent_withdrawn", agency=FEDASIL))

    assert case_of(cases, event).disclosure_ciphertext == event.data["disclosure"]["ciphertext"]


# ---------------------------------------------------------------- a cancel before its track (F4)


def pending_cancels(client: TestClient) -> list[CasePendingCancel]:
    with Session(client.app.state.runtime.engine) as session:
        return list(session.exec(select(CasePendingCancel)).all())


def disclosure_is_sql_null(client: TestClient, event: Event) -> bool:
    return sealed_columns(client, event) == (None, None, None)


@pytest.mark.parametrize("reason", ["consent_withdrawn", "requester_cancelled"])
@pytest.mark.parametrize("cancel_first", [True, False], ids=["cancel-first", "routed-first"])
def test_cancel_and_routing_in_either_order_end_in_the_same_cancelled_case(
    cases, issuer, reason, cancel_first
):
    event = routed()
    cancel = cancelled(event, reason=reason)

    feed(cases, *([cancel, event] if cancel_first else [event, cancel]))

    stored = case_of(cases, event)
    assert (stored.status, stored.status_reason) == ("cancelled", reason)
    assert stored.closed_at == datetime.fromisoformat(cancel.data["at"])
    assert queue(cases, issuer, ICAM_BRUSSELS) == []
    # The categories stay as metadata either way; only a withdrawal drops the package (F4).
    assert sorted(stored.disclosed_categories) == ["identity", "intentions", "needs"]
    withdrawn = reason == "consent_withdrawn"
    assert stored.disclosure_status == ("withdrawn" if withdrawn else "disclosed")
    assert disclosure_is_sql_null(cases, event) is withdrawn
    assert (event.data["disclosure"]["ciphertext"] in raw_rows(cases)) is not withdrawn
    assert PACKAGE_CANARY not in raw_rows(cases)
    body = read(cases, issuer, stored.case_id, COACH)
    assert body["disclosure"] == (None if withdrawn else PACKAGE)
    assert pending_cancels(cases) == []
    # The bridge sent the cancel: no status goes back to it.
    assert outbox(cases, "secondline.case.track.") == []


@pytest.mark.parametrize("reason", ["consent_withdrawn", "requester_cancelled"])
def test_track_cancelled_before_it_was_routed_opens_cancelled_and_never_queues(
    cases, issuer, reason
):
    event = routed(urgency="urgent")
    feed(cases, cancelled(event, reason=reason))
    assert all_cases(cases) == [] and queue(cases, issuer, ICAM_BRUSSELS) == []

    feed(cases, event)

    stored = case_of(cases, event)
    assert (stored.status, stored.status_reason, stored.assignee) == ("cancelled", reason, None)
    assert queue(cases, issuer, ICAM_BRUSSELS) == []
    # Born cancelled, in one record of ids and codes: it never was a requested case.
    [(_, created)] = outbox(cases, "audit.case-resolution.case.create")
    assert (created.data["resource_id"], created.data["track_id"]) == (
        str(stored.case_id),
        event.data["track_id"],
    )
    assert (created.data["status"], created.data["reason"], created.data["actor"]) == (
        "cancelled",
        reason,
        None,
    )
    withdrawn = reason == "consent_withdrawn"
    assert created.data["disclosure_status"] == ("withdrawn" if withdrawn else "disclosed")
    assert outbox(cases, "audit.case-resolution.case.cancel") == []
    for row, _ in outbox(cases):
        assert PACKAGE_CANARY not in row.payload.decode() + row.headers
    if withdrawn:
        assert disclosure_is_sql_null(cases, event)
        dump = raw_rows(cases)
        assert event.data["disclosure"]["ciphertext"] not in dump
        assert PACKAGE_CANARY not in dump and "shelter" not in dump
    # The performer cannot pick it up.
    response = accept(cases, issuer, stored.case_id, "legal_stay", COACH)
    assert_problem(response, 409, "illegal-transition")


def test_cancel_redelivered_before_routing_is_kept_once(cases, issuer):
    event = routed()
    cancel = cancelled(event, reason="consent_withdrawn")
    # The same event again, and the same cancel re-announced under a new event id.
    again = Event.model_validate({**cancel.model_dump(), "id": str(uuid.uuid4())})

    feed(cases, cancel, cancel, again)

    assert len(pending_cancels(cases)) == 1
    assert len(outbox(cases, "audit.case-resolution.case-pending-cancel.create")) == 1

    feed(cases, event)
    opened = snapshot(cases, event)
    feed(cases, cancel, again, event)

    assert len(all_cases(cases)) == 1 and pending_cancels(cases) == []
    assert snapshot(cases, event) == opened
    assert opened["case"]["status"] == "cancelled"
    assert opened["case"]["disclosure_ciphertext"] is None
    assert len(outbox(cases, "audit.case-resolution.case.create")) == 1
    assert outbox(cases, "audit.case-resolution.case.cancel") == []
    assert outbox(cases, "audit.case-resolution.case-disclosure.purge") == []


def test_withdrawal_after_a_cancel_before_routing_still_withholds_the_package(cases, issuer):
    event = routed()
    first = cancelled(event, reason="requester_cancelled")
    later = (datetime.fromisoformat(first.data["at"]) + timedelta(seconds=1)).isoformat()
    withdrawal = cancelled(event, reason="consent_withdrawn")
    withdrawal = Event.model_validate(
        {**withdrawal.model_dump(), "data": {**withdrawal.data, "at": later}}
    )

    feed(cases, first, withdrawal, event)

    # As if both came after the track: the first cancel's reason, and the package purged.
    stored = case_of(cases, event)
    assert (stored.status, stored.status_reason) == ("cancelled", "requester_cancelled")
    assert stored.disclosure_status == "withdrawn" and disclosure_is_sql_null(cases, event)
    assert event.data["disclosure"]["ciphertext"] not in raw_rows(cases)
    assert pending_cancels(cases) == []


def test_withdrawal_being_applied_holds_back_the_track_arriving_meanwhile(cases, monkeypatch):
    """Two replicas, through the inbox: the routing waits for the withdrawal's commit (F4)."""
    event = routed()
    engine = cases.app.state.runtime.engine
    consumer = InboxConsumer(engine=engine, binding=BINDINGS[0], js=None)  # type: ignore[arg-type]
    kept, release = threading.Event(), threading.Event()
    add_pending_cancel = repository.add_pending_cancel

    def add_and_hold(session: Session, **kwargs: Any) -> None:
        add_pending_cancel(session, **kwargs)
        kept.set()
        assert release.wait(10)  # the withdrawal's transaction stays open meanwhile

    monkeypatch.setattr(repository, "add_pending_cancel", add_and_hold)
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            withdrawing = pool.submit(consumer.apply, cancelled(event, reason="consent_withdrawn"))
            assert kept.wait(10)
            routing = pool.submit(consumer.apply, event)
            # Were it not held back, the routing would open the case with its package meanwhile.
            time.sleep(0.5)
        finally:
            release.set()
        assert withdrawing.result(timeout=30) and routing.result(timeout=30)

    stored = case_of(cases, event)
    assert (stored.status, stored.disclosure_status) == ("cancelled", "withdrawn")
    assert event.data["disclosure"]["ciphertext"] not in raw_rows(cases)


def test_cancel_before_routing_naming_another_agency_is_not_applied(cases, issuer, caplog):
    event = routed(track="legal_stay")
    feed(cases, cancelled(event, reason="consent_withdrawn", agency=FEDASIL))

    feed(cases, event)

    # As if it had come after the track: it breaks its contract, and the case stays queued.
    stored = case_of(cases, event)
    assert stored.status == "requested" and not disclosure_is_sql_null(cases, event)
    assert read(cases, issuer, stored.case_id, COACH)["disclosure"] == PACKAGE
    assert [i["case_id"] for i in queue(cases, issuer, ICAM_BRUSSELS)] == [str(stored.case_id)]
    assert pending_cancels(cases) == []
    assert "another agency" in caplog.text and "consent_withdrawn" not in caplog.text


# ---------------------------------------------------------------- track work: legal-stay options


def put_option(client, issuer, case_id, option, body, who=COACH, track="legal_stay") -> Any:
    return client.put(
        f"/v1/cases/{case_id}/tracks/{track}/options/{option}",
        headers=issuer.headers(**who),
        json=body,
    )


def test_coach_assesses_options_and_every_assessment_is_kept(cases, issuer):
    _, case_id = case_in(cases, issuer, "in-progress")

    first = put_option(cases, issuer, case_id, "9bis", {"assessment": "viable"})
    later = put_option(
        cases,
        issuer,
        case_id,
        "9bis",
        {"assessment": "applied", "note": "filed"},
        who={**ICAM_BRUSSELS, "sub": "coach-2"},
    )
    other = put_option(cases, issuer, case_id, "9ter", {"assessment": "needs_info"})

    for response in (first, later, other):
        assert response.status_code == 200, response.text
    assert later.json()["assessment"] == "applied" and later.json()["assessed_by"] == "coach-2"
    options = read(cases, issuer, case_id, COACH)["options"]
    assert [(o["option"], o["assessment"], o["assessed_by"], o["note"]) for o in options] == [
        ("9bis", "applied", "coach-2", "filed"),
        ("9ter", "needs_info", "coach-1", None),
    ]
    with Session(cases.app.state.runtime.engine) as session:
        history = session.exec(
            select(CaseOptionAssessment).order_by(CaseOptionAssessment.assessed_at)
        ).all()
    assert [(h.option, h.assessment, h.assessed_by) for h in history] == [
        ("9bis", "viable", "coach-1"),
        ("9bis", "applied", "coach-2"),
        ("9ter", "needs_info", "coach-1"),
    ]
    assert all(h.assessed_at.tzinfo is not None for h in history)
    audits = [e.data for _, e in outbox(cases, "audit.case-resolution.case-option.")]
    assert [(a["action"], a["option"], a["assessment"]) for a in audits] == [
        ("create", "9bis", "viable"),
        ("update", "9bis", "applied"),
        ("create", "9ter", "needs_info"),
    ]
    # Track work is not an event: nothing but status and outcome flows back (F6).
    assert [e.type for _, e in outbox(cases, "secondline.case.track.")] == [
        ACCEPTED,
        "secondline.case.track.status-changed",
    ]


@pytest.mark.parametrize(
    ("option", "body"),
    [
        ("asylum", {"assessment": "viable"}),
        ("9bis", {"assessment": "promising"}),
        ("9bis", {}),
        ("9bis", {"assessment": "viable", "by": "x"}),
        ("9bis", {"assessment": ["viable"]}),
        ("9bis", {"assessment": "viable", "note": 7}),
    ],
)
def test_option_assessment_is_validated(cases, issuer, option, body):
    event, case_id = case_in(cases, issuer, "accepted")
    before = snapshot(cases, event)

    assert_problem(put_option(cases, issuer, case_id, option, body), 422, "validation")
    assert snapshot(cases, event) == before


def test_a_return_track_has_no_options(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", track="return")
    before = snapshot(cases, event)

    own_track = put_option(
        cases, issuer, case_id, "9bis", {"assessment": "viable"}, COUNSELLOR, "return"
    )
    other_track = put_option(cases, issuer, case_id, "9bis", {"assessment": "viable"}, COUNSELLOR)

    assert_problem(own_track, 404, "not-found")
    assert_problem(other_track, 403, "not-your-track")
    assert snapshot(cases, event) == before
    assert read(cases, issuer, case_id, COUNSELLOR)["options"] is None


# ---------------------------------------------------------------- track work: return steps


def post_step(client, issuer, case_id, body, who=COUNSELLOR, track="return") -> Any:
    return client.post(
        f"/v1/cases/{case_id}/tracks/{track}/steps", headers=issuer.headers(**who), json=body
    )


PREPARATION = {
    "travel_documents": "requested",
    "fit_to_fly": "yes",
    "reintegration_plan": "drafted",
    "partner": "iom",
}


def test_counsellor_moves_a_return_case_through_its_steps(cases, issuer):
    event, case_id = case_in(cases, issuer, "in-progress", track="return")
    moves = [
        {"step": "informing"},
        {"step": "considering"},
        {"step": "registered"},
        {"step": "preparing", "preparation": {"travel_documents": "requested"}},
        {"step": "preparing", "preparation": PREPARATION},  # updating the preparation
        {"step": "departed"},
        {"step": "follow_up", "note": "reintegration going well"},
    ]

    for move in moves:
        response = post_step(cases, issuer, case_id, move)
        assert response.status_code == 201, response.text
        assert response.json()["step"] == move["step"]

    body = read(cases, issuer, case_id, COUNSELLOR)
    assert body["return_step"] == "follow_up"
    history = body["return_steps"]
    assert [(h["previous_step"], h["step"]) for h in history] == [
        (None, "informing"),
        ("informing", "considering"),
        ("considering", "registered"),
        ("registered", "preparing"),
        ("preparing", "preparing"),
        ("preparing", "departed"),
        ("departed", "follow_up"),
    ]
    assert history[3]["preparation"] == {
        "travel_documents": "requested",
        "fit_to_fly": "unknown",
        "reintegration_plan": "none",
        "partner": None,
    }
    assert history[4]["preparation"] == PREPARATION
    assert all(h["recorded_by"] == "counsellor-1" for h in history)
    assert history[6]["note"] == "reintegration going well"
    audits = [e.data for _, e in outbox(cases, "audit.case-resolution.case-return-step.update")]
    assert [a["step"] for a in audits] == [m["step"] for m in moves]
    assert case_of(cases, event).return_step == "follow_up"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], "registered"),  # the first step is informing or considering
        ([], "declined_by_client"),
        (["informing"], "informing"),  # only preparing repeats
        (["informing"], "registered"),  # no skipping
        (["considering"], "informing"),  # no going back
        (["considering", "registered", "preparing"], "follow_up"),
        (["considering", "registered", "preparing", "departed"], "declined_by_client"),
        (["considering", "registered", "preparing", "departed", "follow_up"], "informing"),
        (["informing", "declined_by_client"], "registered"),
        (["informing", "declined_by_client"], "declined_by_client"),
    ],
)
def test_illegal_return_step_is_409_and_changes_nothing(cases, issuer, path, target):
    event, case_id = case_in(cases, issuer, "accepted", track="return")
    for step in path:
        assert post_step(cases, issuer, case_id, {"step": step}).status_code == 201
    before = snapshot(cases, event)

    assert_problem(post_step(cases, issuer, case_id, {"step": target}), 409, "illegal-step")
    assert snapshot(cases, event) == before


def test_a_person_who_declined_may_reconsider(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", track="return")
    for step in ("informing", "considering", "registered", "preparing", "declined_by_client"):
        assert post_step(cases, issuer, case_id, {"step": step}).status_code == 201

    response = post_step(cases, issuer, case_id, {"step": "considering"})

    assert response.status_code == 201, response.text
    assert response.json()["previous_step"] == "declined_by_client"
    assert case_of(cases, event).return_step == "considering"


@pytest.mark.parametrize(
    "body",
    [
        {"step": "informing", "preparation": PREPARATION},  # preparation belongs to preparing
        {"step": "boarding"},
        {"step": "preparing", "preparation": {**PREPARATION, "travel_documents": "lost"}},
        {"step": "preparing", "preparation": {**PREPARATION, "fit_to_fly": True}},
        {"step": "preparing", "preparation": {**PREPARATION, "partner": "frontex"}},
        {"step": "preparing", "preparation": {**PREPARATION, "flight": "SN 123"}},
        {"step": "preparing", "preparation": "ready"},
        {"step": "preparing", "when": "now"},
    ],
)
def test_return_step_body_is_validated(cases, issuer, body):
    event, case_id = case_in(cases, issuer, "accepted", track="return")
    for step in ("considering", "registered"):
        assert post_step(cases, issuer, case_id, {"step": step}).status_code == 201
    before = snapshot(cases, event)

    assert post_step(cases, issuer, case_id, body).status_code == 422
    assert snapshot(cases, event) == before


def test_a_legal_stay_track_has_no_return_steps(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted")
    before = snapshot(cases, event)

    own_track = post_step(cases, issuer, case_id, {"step": "informing"}, COACH, "legal_stay")
    other_track = post_step(cases, issuer, case_id, {"step": "informing"}, COACH)

    assert_problem(own_track, 404, "not-found")
    assert_problem(other_track, 403, "not-your-track")
    assert snapshot(cases, event) == before
    body = read(cases, issuer, case_id, COACH)
    assert (body["return_step"], body["return_steps"]) == (None, None)


def test_a_stale_return_step_matches_no_row(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", track="return")
    engine = cases.app.state.runtime.engine
    for step, expected in ((ReturnStep.INFORMING, True), (ReturnStep.CONSIDERING, False)):
        with contextlib.contextmanager(session_scope)(engine) as session:
            won = repository.set_return_step(
                session,
                case=session.get(Case, case_id),
                expected=None,
                step=step,
                at=datetime.now(UTC),
            )
        assert won is expected
    assert case_of(cases, event).return_step == "informing"


# ---------------------------------------------------------------- track work: sessions and decisions


def post_session(client, issuer, case_id, body, who=COACH) -> Any:
    return client.post(f"/v1/cases/{case_id}/sessions", headers=issuer.headers(**who), json=body)


def post_decision(client, issuer, case_id, body, who=COACH) -> Any:
    return client.post(f"/v1/cases/{case_id}/decisions", headers=issuer.headers(**who), json=body)


TODAY = dt.date.today()
SESSION = {
    "date": (TODAY - dt.timedelta(days=2)).isoformat(),
    "mode": "in_person",
    "language": "ar",
    "interpreter": True,
    "topics": ["legal_stay_options", "voluntary_return"],
}


def test_created_work_is_read_back_at_its_location_and_only_in_its_own_case(cases, issuer):
    """Every 201 names the row it created; that row is read there, and another case's path to
    it is a 404 (the read is audited, by ids only)."""
    _, case_id = case_in(cases, issuer, "in-progress")
    _, other_case = case_in(cases, issuer, "in-progress")
    created = {
        "session": post_session(cases, issuer, case_id, {**SESSION, "note": "first talk"}),
        "decision": post_decision(
            cases, issuer, case_id, {"decision": "undecided", "date": TODAY.isoformat()}
        ),
    }
    for kind, response in created.items():
        assert response.status_code == 201, response.text
        location = response.headers["location"]
        assert location == f"/v1/cases/{case_id}/{kind}s/{response.json()['id']}"
        read_back = cases.get(location, headers=issuer.headers(**COACH))
        assert read_back.status_code == 200, read_back.text
        assert read_back.json() == response.json()
        elsewhere = location.replace(str(case_id), str(other_case))
        assert_problem(cases.get(elsewhere, headers=issuer.headers(**COACH)), 404)
    reads = [
        e.data for _, e in outbox(cases, "audit.case-resolution.") if e.data["action"] == "read"
    ]
    kinds = {r["resource_type"] for r in reads}
    assert {"case-session", "case-decision"} <= kinds
    assert all("first talk" not in json.dumps(r) for r in reads)


def test_sessions_are_recorded_on_the_case(cases, issuer):
    _, case_id = case_in(cases, issuer, "in-progress")

    response = post_session(cases, issuer, case_id, {**SESSION, "note": "first talk"})
    phone = post_session(
        cases, issuer, case_id, {"date": TODAY.isoformat(), "mode": "phone", "interpreter": False}
    )

    assert response.status_code == 201, response.text
    assert phone.status_code == 201, phone.text
    sessions = read(cases, issuer, case_id, COACH)["sessions"]
    assert [
        (s["date"], s["mode"], s["language"], s["interpreter"], s["topics"], s["note"])
        for s in sessions
    ] == [
        (SESSION["date"], "in_person", "ar", True, SESSION["topics"], "first talk"),
        (TODAY.isoformat(), "phone", None, False, [], None),
    ]
    assert sessions[0]["recorded_by"] == "coach-1" and sessions[0]["id"] == response.json()["id"]
    [first, _] = [e.data for _, e in outbox(cases, "audit.case-resolution.case-session.create")]
    assert (first["session_id"], first["mode"]) == (response.json()["id"], "in_person")


@pytest.mark.parametrize(
    "change",
    [
        {"date": (TODAY + dt.timedelta(days=3)).isoformat()},
        {"date": "yesterday"},
        {"mode": "carrier_pigeon"},
        {"language": "xx"},
        {"language": "fra"},
        {"language": "FR"},
        {"interpreter": "yes"},
        {"interpreter": 1},
        {"topics": ["Legal Stay"]},
        {"topics": ["9bis"]},
        {"topics": "legal_stay"},
        {"topics": [f"t{i}" for i in range(21)]},
        {"note": ""},
        {"duration": 60},
    ],
)
def test_session_is_validated(cases, issuer, change):
    event, case_id = case_in(cases, issuer, "accepted")
    before = snapshot(cases, event)

    assert_problem(post_session(cases, issuer, case_id, {**SESSION, **change}), 422, "validation")
    assert snapshot(cases, event) == before


def test_decisions_are_recorded_as_the_persons_own(cases, issuer):
    _, case_id = case_in(cases, issuer, "in-progress")

    response = post_decision(
        cases,
        issuer,
        case_id,
        {"decision": "pursue_legal_stay", "option": "9ter", "date": TODAY.isoformat()},
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["decided_by"], created["recorded_by"]) == ("client", "coach-1")
    [decision] = read(cases, issuer, case_id, COACH)["decisions"]
    assert (decision["decision"], decision["option"], decision["decided_by"]) == (
        "pursue_legal_stay",
        "9ter",
        "client",
    )
    [(_, audit)] = outbox(cases, "audit.case-resolution.case-decision.create")
    assert (audit.data["decision"], audit.data["option"]) == ("pursue_legal_stay", "9ter")
    assert audit.data["decision_id"] == created["id"]


@pytest.mark.parametrize(
    ("body", "slug"),
    [
        ({"decision": "give_up", "date": TODAY.isoformat()}, "validation"),
        (
            {"decision": "undecided", "date": (TODAY + dt.timedelta(days=3)).isoformat()},
            "validation",
        ),
        ({"decision": "undecided"}, "validation"),
        (
            {"decision": "pursue_legal_stay", "option": "asylum", "date": TODAY.isoformat()},
            "validation",
        ),
        ({"decision": "undecided", "date": TODAY.isoformat(), "decided_by": "coach"}, "validation"),
        # An option goes with a legal-stay decision only.
        ({"decision": "accept_return", "option": "9bis", "date": TODAY.isoformat()}, "invalid"),
    ],
)
def test_decision_is_validated(cases, issuer, body, slug):
    event, case_id = case_in(cases, issuer, "accepted")
    before = snapshot(cases, event)

    assert_problem(post_decision(cases, issuer, case_id, body), 422, slug)
    assert snapshot(cases, event) == before


@pytest.mark.parametrize(
    ("path", "decision", "step"),
    [
        (["informing"], "decline_return", "declined_by_client"),
        (
            ["informing", "considering", "registered", "preparing"],
            "decline_return",
            "declined_by_client",
        ),
        (["considering"], "accept_return", "registered"),
        (["informing"], "accept_return", "registered"),
    ],
)
def test_client_decision_moves_the_return_step(cases, issuer, path, decision, step):
    event, case_id = case_in(cases, issuer, "in-progress", track="return")
    for move in path:
        assert post_step(cases, issuer, case_id, {"step": move}).status_code == 201

    response = post_decision(
        cases, issuer, case_id, {"decision": decision, "date": TODAY.isoformat()}, COUNSELLOR
    )

    assert response.status_code == 201, response.text
    assert response.json()["return_step"] == step
    body = read(cases, issuer, case_id, COUNSELLOR)
    assert body["return_step"] == step
    last = body["return_steps"][-1]
    assert (last["previous_step"], last["step"]) == (path[-1], step)
    assert last["decision_id"] == response.json()["id"]
    assert case_of(cases, event).status == "in-progress"  # the task itself is the counsellor's call


@pytest.mark.parametrize(
    ("path", "decision"),
    [
        ([], "decline_return"),  # no step yet
        (["considering", "registered", "preparing", "departed"], "decline_return"),
        (["informing", "declined_by_client"], "decline_return"),
        (["considering", "registered"], "accept_return"),
        (["informing"], "undecided"),
        (["informing"], "decline_legal_stay"),
    ],
)
def test_client_decision_leaves_the_step_where_no_move_fits(cases, issuer, path, decision):
    event, case_id = case_in(cases, issuer, "accepted", track="return")
    for move in path:
        assert post_step(cases, issuer, case_id, {"step": move}).status_code == 201

    response = post_decision(
        cases, issuer, case_id, {"decision": decision, "date": TODAY.isoformat()}, COUNSELLOR
    )

    assert response.status_code == 201, response.text
    assert response.json()["return_step"] is None
    assert case_of(cases, event).return_step == (path[-1] if path else None)
    assert len(read(cases, issuer, case_id, COUNSELLOR)["return_steps"]) == len(path)


def test_decline_return_on_a_legal_stay_case_is_only_recorded(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted")

    response = post_decision(
        cases, issuer, case_id, {"decision": "decline_return", "date": TODAY.isoformat()}
    )

    assert response.status_code == 201, response.text
    assert case_of(cases, event).return_step is None


@pytest.mark.parametrize("status", ["requested", "rejected", "completed", "cancelled", "failed"])
def test_track_work_needs_an_active_track(cases, issuer, status):
    legal_stay, ls_id = case_in(cases, issuer, status)
    ret, ret_id = case_in(cases, issuer, status, track="return")
    before = snapshot(cases, legal_stay), snapshot(cases, ret)

    for response in (
        put_option(cases, issuer, ls_id, "9bis", {"assessment": "viable"}),
        post_step(cases, issuer, ret_id, {"step": "informing"}),
        post_session(cases, issuer, ls_id, SESSION),
        post_decision(
            cases,
            issuer,
            ret_id,
            {"decision": "decline_return", "date": TODAY.isoformat()},
            COUNSELLOR,
        ),
    ):
        assert_problem(response, 409, "track-not-active")
    assert (snapshot(cases, legal_stay), snapshot(cases, ret)) == before


def test_counsellor_cannot_record_work_on_a_legal_stay_case_of_their_own_office(cases, issuer):
    # A counsellor sees only Fedasil cases: ICAM's case is as unknown to them as any other.
    _, case_id = case_in(cases, issuer, "accepted")

    assert_problem(post_session(cases, issuer, case_id, SESSION, COUNSELLOR), 404, "not-found")
    assert_problem(
        post_decision(
            cases, issuer, case_id, {"decision": "undecided", "date": TODAY.isoformat()}, COUNSELLOR
        ),
        404,
        "not-found",
    )


def test_case_read_shows_the_whole_case_and_no_bridge_identifier(cases, issuer):
    event, case_id = case_in(cases, issuer, "in-progress", track="return", urgency="urgent")
    assert post_step(cases, issuer, case_id, {"step": "informing"}).status_code == 201
    assert post_session(cases, issuer, case_id, SESSION, COUNSELLOR).status_code == 201
    assert (
        post_decision(
            cases, issuer, case_id, {"decision": "undecided", "date": TODAY.isoformat()}, COUNSELLOR
        ).status_code
        == 201
    )

    body = read(cases, issuer, case_id, COUNSELLOR)

    assert set(body) == {
        "case_id",
        "case_ref",
        "track",
        "agency",
        "office",
        "urgency",
        "routed_at",
        "status",
        "status_reason",
        "status_note",
        "outcome",
        "outcome_category",
        "closed_at",
        "assignee",
        "purposes",
        "disclosed_categories",
        "disclosure_status",
        "disclosure",
        "options",
        "return_step",
        "return_steps",
        "sessions",
        "decisions",
        "disclosure_requests",
        "joint_review",
        "created_at",
        "updated_at",
    }
    assert (body["track"], body["agency"], body["urgency"], body["assignee"]) == (
        "return",
        FEDASIL,
        "urgent",
        "counsellor-1",
    )
    assert (body["return_step"], len(body["return_steps"]), body["options"]) == (
        "informing",
        1,
        None,
    )
    assert (len(body["sessions"]), len(body["decisions"])) == (1, 1)
    assert event.data["track_id"] not in json.dumps(body)


def test_notes_and_package_never_reach_events_audit_records_or_logs(cases, issuer, caplog):
    caplog.set_level(logging.DEBUG)
    note = f"{NOTE_CANARY} the person told me"
    legal_stay, ls_id = case_in(cases, issuer, "requested")
    _, ret_id = case_in(cases, issuer, "requested", track="return")
    today = TODAY.isoformat()

    calls = [
        act(cases, issuer, ls_id, "legal_stay", "accept", COACH),
        act(
            cases,
            issuer,
            ls_id,
            "legal_stay",
            "status",
            COACH,
            {"status": "on-hold", "reason": "medical", "note": note},
        ),
        act(
            cases,
            issuer,
            ls_id,
            "legal_stay",
            "status",
            COACH,
            {"status": "in-progress", "note": note},
        ),
        put_option(cases, issuer, ls_id, "9ter", {"assessment": "applied", "note": note}),
        post_session(cases, issuer, ls_id, {**SESSION, "note": note}),
        post_decision(
            cases, issuer, ls_id, {"decision": "pursue_legal_stay", "date": today, "note": note}
        ),
        act(
            cases,
            issuer,
            ls_id,
            "legal_stay",
            "complete",
            COACH,
            {"outcome": "legal_stay", "note": note},
        ),
        act(cases, issuer, ret_id, "return", "accept", COUNSELLOR),
        post_step(cases, issuer, ret_id, {"step": "considering", "note": note}),
        post_decision(
            cases,
            issuer,
            ret_id,
            {"decision": "decline_return", "date": today, "note": note},
            COUNSELLOR,
        ),
        act(
            cases, issuer, ret_id, "return", "reject", COUNSELLOR, {"reason": "other", "note": note}
        ),
    ]
    reads = [
        cases.get(f"/v1/cases/{i}", headers=issuer.headers(**w))
        for i, w in ((ls_id, COACH), (ret_id, COUNSELLOR))
    ]
    feed(cases, cancelled(legal_stay, reason="consent_withdrawn"))

    assert [r.status_code for r in calls] == [200, 200, 200, 200, 201, 201, 200, 200, 201, 201, 409]
    assert all(r.status_code == 200 and PACKAGE_CANARY in r.text for r in reads)
    rows = outbox(cases)
    assert {e.type.split(".")[0] for _, e in rows} == {"audit", "secondline"}
    assert len(rows) > 15
    for row, _ in rows:
        raw = row.payload.decode() + row.headers
        assert NOTE_CANARY not in raw and PACKAGE_CANARY not in raw
        assert encode_key(KEY) not in raw
    assert NOTE_CANARY not in caplog.text and PACKAGE_CANARY not in caplog.text
    assert encode_key(KEY) not in caplog.text
    # The notes themselves stay in zone B's tables; the package never was in them.
    assert NOTE_CANARY in raw_rows(cases) and PACKAGE_CANARY not in raw_rows(cases)


# ---------------------------------------------------------------- who may call at all


@pytest.mark.parametrize(
    "who",
    [
        NGO_GHENT,
        AUDITOR,
        {"role": "ngo_admin", "org": "ngo-ghent"},
        {"role": "service"},
        # A second-line role without the scope it needs, or with the other agency's scope.
        {"role": "icam_coach", "agency": "immigration_office"},
        {"role": "icam_coach", "agency": "fedasil", "office": "brussels"},
        {"role": "return_counsellor", "agency": "immigration_office", "office": "brussels"},
    ],
)
def test_only_second_line_case_workers_may_use_the_routes(cases, issuer, who):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id
    headers = issuer.headers(**who)

    assert_problem(cases.get("/v1/queue", headers=headers), 403, "forbidden")
    assert_problem(cases.get(f"/v1/cases/{case_id}", headers=headers), 403, "forbidden")
    assert_problem(accept(cases, issuer, case_id, "legal_stay", who), 403, "forbidden")
    assert case_of(cases, event).status == "requested"


def test_no_token_is_401(cases):
    event = routed()
    feed(cases, event)
    case_id = case_of(cases, event).case_id

    for response in (
        cases.get("/v1/queue"),
        cases.get(f"/v1/cases/{case_id}"),
        cases.post(f"/v1/cases/{case_id}/tracks/legal_stay/accept"),
        cases.get("/v1/queue", headers={"Authorization": "Bearer not-a-jwt"}),
    ):
        assert_problem(response, 401, "unauthorized")


# ---------------------------------------------------------------- the rule itself (no I/O)


def test_only_the_performer_of_a_track_may_set_performer_statuses():
    coach, counsellor = frozenset({"icam_coach"}), frozenset({"return_counsellor"})
    assert domain.performs(roles=coach, agency=IO, track=Track.LEGAL_STAY)
    assert not domain.performs(roles=coach, agency=IO, track=Track.RETURN)
    assert not domain.performs(roles=coach, agency=FEDASIL, track=Track.LEGAL_STAY)
    assert domain.performs(roles=counsellor, agency=FEDASIL, track=Track.RETURN)
    assert not domain.performs(roles=counsellor, agency=FEDASIL, track=Track.LEGAL_STAY)
    assert domain.agency_for(Track.LEGAL_STAY) == Agency.IMMIGRATION_OFFICE
    assert domain.agency_for(Track.RETURN) == Agency.FEDASIL

    for status in TaskStatus:
        performer_may = status not in (TaskStatus.REQUESTED,)
        requester_may = status in (TaskStatus.REQUESTED, TaskStatus.CANCELLED)
        for party, may in (
            (domain.Party.PERFORMER, performer_may),
            (domain.Party.REQUESTER, requester_may),
        ):
            if may:
                domain.check_may_set(party=party, target=status)
            else:
                with pytest.raises(Forbidden):
                    domain.check_may_set(party=party, target=status)
        with pytest.raises(Forbidden):
            domain.check_may_set(party=None, target=status)


def test_cancels_before_routing_apply_as_if_they_came_after():
    R = StatusReason
    assert domain.cancel_on_arrival(reasons=[R.REQUESTER_CANCELLED]) == (
        R.REQUESTER_CANCELLED,
        False,
    )
    assert domain.cancel_on_arrival(reasons=[R.CONSENT_WITHDRAWN]) == (R.CONSENT_WITHDRAWN, True)
    # The first cancel sets the reason; a withdrawal among them withholds the package (F4).
    assert domain.cancel_on_arrival(reasons=[R.DUPLICATE, R.CONSENT_WITHDRAWN]) == (
        R.DUPLICATE,
        True,
    )
    with pytest.raises(ValueError):
        domain.cancel_on_arrival(reasons=[])


def test_task_transitions_follow_fhir_and_terminal_states_are_final():
    S = TaskStatus
    domain.check_transition(current=S.REQUESTED, target=S.ACCEPTED)
    domain.check_transition(current=S.ACCEPTED, target=S.IN_PROGRESS)
    domain.check_transition(current=S.IN_PROGRESS, target=S.COMPLETED)
    domain.check_transition(current=S.REQUESTED, target=S.REJECTED, reason="out_of_scope")
    for terminal in (S.COMPLETED, S.CANCELLED, S.REJECTED, S.FAILED):
        for target in S:
            with pytest.raises(Conflict):
                domain.check_transition(current=terminal, target=target, reason="r")
    with pytest.raises(Conflict):
        domain.check_transition(current=S.ACCEPTED, target=S.ACCEPTED)
    with pytest.raises(Conflict):
        domain.check_transition(current=S.REQUESTED, target=S.COMPLETED)
    for needs_reason in (S.REJECTED, S.CANCELLED):
        with pytest.raises(Invalid):
            domain.check_transition(current=S.REQUESTED, target=needs_reason)


S = TaskStatus
# The performer's legal moves, written out from the FHIR Task table of the HL7 Gravity guide.
PERFORMER_MOVES = {
    (S.REQUESTED, S.ACCEPTED),
    (S.REQUESTED, S.REJECTED),
    (S.REQUESTED, S.CANCELLED),
    (S.ACCEPTED, S.IN_PROGRESS),
    (S.ACCEPTED, S.ON_HOLD),
    (S.ACCEPTED, S.COMPLETED),
    (S.ACCEPTED, S.FAILED),
    (S.ACCEPTED, S.CANCELLED),
    (S.IN_PROGRESS, S.ON_HOLD),
    (S.IN_PROGRESS, S.COMPLETED),
    (S.IN_PROGRESS, S.FAILED),
    (S.IN_PROGRESS, S.CANCELLED),
    (S.ON_HOLD, S.IN_PROGRESS),
    (S.ON_HOLD, S.FAILED),
    (S.ON_HOLD, S.CANCELLED),
}
WITH_REASON = {S.REJECTED, S.CANCELLED, S.ON_HOLD, S.FAILED}


def _well_formed(target: TaskStatus) -> dict[str, Any]:
    """A reason where the target needs one and an outcome where it is completion."""
    return {
        "reason": StatusReason.OTHER if target in WITH_REASON else None,
        "outcome": Outcome.LEGAL_STAY if target == S.COMPLETED else None,
    }


def test_every_performer_transition_in_the_table_is_legal_and_every_other_is_a_conflict():
    performer_targets = [s for s in S if s != S.REQUESTED]
    for current in S:
        for target in performer_targets:
            kwargs = _well_formed(target)
            if (current, target) in PERFORMER_MOVES:
                domain.check_performer_change(current=current, target=target, **kwargs)
            else:
                with pytest.raises(domain.IllegalTransition):
                    domain.check_performer_change(current=current, target=target, **kwargs)
        # `requested` is the requester's to set, from anywhere.
        with pytest.raises(domain.NotYourTrack):
            domain.check_performer_change(current=current, target=S.REQUESTED)


def test_statuses_that_need_a_reason_do_not_move_without_one():
    for current, target in PERFORMER_MOVES:
        if target in WITH_REASON:
            with pytest.raises(domain.ReasonRequired):
                domain.check_performer_change(current=current, target=target)


def test_performer_cannot_claim_the_requesters_reasons_or_the_withdrawal_outcome():
    for current, target in PERFORMER_MOVES:
        if target in WITH_REASON:
            for reason in (StatusReason.CONSENT_WITHDRAWN, StatusReason.REQUESTER_CANCELLED):
                with pytest.raises(domain.ReasonNotAllowed):
                    domain.check_performer_change(current=current, target=target, reason=reason)
    with pytest.raises(domain.OutcomeNotAllowed):
        domain.check_performer_change(
            current=S.IN_PROGRESS, target=S.COMPLETED, outcome=Outcome.CONSENT_WITHDRAWN
        )
    # The bridge's side may use them.
    domain.check_transition(
        current=S.ACCEPTED, target=S.CANCELLED, reason=StatusReason.CONSENT_WITHDRAWN
    )


def test_a_reason_goes_only_where_needed_and_an_outcome_only_with_completion():
    with pytest.raises(domain.ReasonNotAllowed):
        domain.check_performer_change(
            current=S.ON_HOLD, target=S.IN_PROGRESS, reason=StatusReason.MEDICAL
        )
    with pytest.raises(domain.ReasonNotAllowed):
        domain.check_performer_change(
            current=S.REQUESTED, target=S.ACCEPTED, reason=StatusReason.OTHER
        )
    with pytest.raises(domain.OutcomeNotAllowed):
        domain.check_performer_change(current=S.ACCEPTED, target=S.COMPLETED)
    with pytest.raises(domain.OutcomeNotAllowed):
        domain.check_performer_change(
            current=S.ACCEPTED,
            target=S.FAILED,
            reason=StatusReason.OTHER,
            outcome=Outcome.NO_SOLUTION,
        )


def test_track_work_is_allowed_only_on_an_active_track():
    for status in S:
        if status in (S.ACCEPTED, S.IN_PROGRESS, S.ON_HOLD):
            domain.check_track_work(status=status)
        else:
            with pytest.raises(domain.TrackNotActive):
                domain.check_track_work(status=status)


@pytest.mark.parametrize(
    ("categories", "package"),
    [
        ([], {}),
        (["needs"], {"needs": {}}),
        (["health", "identity"], {"identity": {"display_name": "x"}, "health": {"health": {}}}),
        ([c.value for c in DataCategory], {c.value: {} for c in DataCategory}),
    ],
)
def test_disclosure_check_accepts_exactly_one_object_per_category(categories, package):
    domain.check_disclosure(categories=categories, package=package)


@pytest.mark.parametrize(
    ("categories", "package"),
    [
        (["needs"], {"needs": {}, "health": {}}),  # a key not disclosed
        (["needs", "health"], {"needs": {}}),  # a category without its object
        ([], {"needs": {}}),
        (["passport"], {"passport": {}}),
        (["Needs"], {"Needs": {}}),
        (["needs", "needs"], {"needs": {}}),
        (["needs"], {"needs": []}),
        (["needs"], {"needs": "shelter"}),
        (["needs"], {"needs": None}),
    ],
)
def test_disclosure_check_refuses_anything_else(categories, package):
    with pytest.raises(domain.InvalidDisclosure):
        domain.check_disclosure(categories=categories, package=package)


R = ReturnStep
# The legal return steps, written out from the design: in order, declining until departure,
# reconsidering after declining, and `preparing` again to update the preparation.
STEP_MOVES = {
    (None, R.INFORMING),
    (None, R.CONSIDERING),
    (R.INFORMING, R.CONSIDERING),
    (R.CONSIDERING, R.REGISTERED),
    (R.REGISTERED, R.PREPARING),
    (R.PREPARING, R.PREPARING),
    (R.PREPARING, R.DEPARTED),
    (R.DEPARTED, R.FOLLOW_UP),
    (R.INFORMING, R.DECLINED_BY_CLIENT),
    (R.CONSIDERING, R.DECLINED_BY_CLIENT),
    (R.REGISTERED, R.DECLINED_BY_CLIENT),
    (R.PREPARING, R.DECLINED_BY_CLIENT),
    (R.DECLINED_BY_CLIENT, R.CONSIDERING),
}


def test_every_return_step_in_the_table_is_legal_and_every_other_is_a_conflict():
    for current in [None, *R]:
        for target in R:
            if (current, target) in STEP_MOVES:
                domain.check_step(current=current, target=target, with_preparation=False)
            else:
                with pytest.raises(domain.IllegalStep):
                    domain.check_step(current=current, target=target, with_preparation=False)


def test_preparation_details_go_with_the_preparing_step_only():
    domain.check_step(current=R.REGISTERED, target=R.PREPARING, with_preparation=True)
    domain.check_step(current=R.PREPARING, target=R.PREPARING, with_preparation=True)
    for target in R:
        if target != R.PREPARING:
            with pytest.raises(Invalid):
                domain.check_step(current=R.PREPARING, target=target, with_preparation=True)


def test_client_decisions_move_a_return_case_only_where_a_move_fits():
    D = ClientDecision
    for current in [None, *R]:
        declined = domain.step_after_decision(
            track=Track.RETURN, decision=D.DECLINE_RETURN, current=current
        )
        may_decline = current in (R.INFORMING, R.CONSIDERING, R.REGISTERED, R.PREPARING)
        assert declined == (R.DECLINED_BY_CLIENT if may_decline else None), current
        accepted = domain.step_after_decision(
            track=Track.RETURN, decision=D.ACCEPT_RETURN, current=current
        )
        assert accepted == (R.REGISTERED if current in (R.INFORMING, R.CONSIDERING) else None)
        for other in (D.PURSUE_LEGAL_STAY, D.DECLINE_LEGAL_STAY, D.UNDECIDED):
            assert (
                domain.step_after_decision(track=Track.RETURN, decision=other, current=current)
                is None
            )
    for decision in D:
        assert (
            domain.step_after_decision(
                track=Track.LEGAL_STAY, decision=decision, current=R.INFORMING
            )
            is None
        )


def test_an_option_goes_only_with_a_legal_stay_decision():
    D = ClientDecision
    domain.check_decision(decision=D.PURSUE_LEGAL_STAY, option=domain.LegalStayOption.MEDICAL_9TER)
    domain.check_decision(decision=D.DECLINE_LEGAL_STAY, option=None)
    for decision in (D.ACCEPT_RETURN, D.DECLINE_RETURN, D.UNDECIDED):
        domain.check_decision(decision=decision, option=None)
        with pytest.raises(Invalid):
            domain.check_decision(decision=decision, option=domain.LegalStayOption.OTHER)


def test_only_legal_stay_has_options_and_only_return_has_steps():
    domain.check_has_options(track=Track.LEGAL_STAY)
    domain.check_has_steps(track=Track.RETURN)
    with pytest.raises(NotFound):
        domain.check_has_options(track=Track.RETURN)
    with pytest.raises(NotFound):
        domain.check_has_steps(track=Track.LEGAL_STAY)


# ---------------------------------------------------------------- through the real NATS server


async def _publish(url: str, passwords: dict[str, str], events: list[Event]) -> None:
    nc = await connect(url, credential("sl-admin", passwords), name="test:sl-admin")
    try:
        js = nc.jetstream()
        for event in events:
            await js.publish(event.type, encode(event), headers=headers_for(event), timeout=5)
    finally:
        await nc.close()


async def _last(url: str, passwords: dict[str, str], subject: str) -> Any:
    """The newest message on `subject` in SECONDLINE, read with the zone's admin user."""
    nc = await connect(url, credential("sl-admin", passwords), name="test:sl-admin")
    try:
        return await nc.jetstream().get_last_msg("SECONDLINE", subject)
    except NotFoundError:
        return None
    finally:
        await nc.close()


@pytest.mark.nats
def test_routed_track_reaches_the_queue_and_acceptance_reaches_the_stream(
    service_settings, nats_server, issuer
):
    url, passwords = nats_server.url, nats_server.passwords
    with running(create_app(service_settings(Settings, "case-resolution"))) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "the NATS link")
        event = routed(track="return", urgency="urgent")
        asyncio.run(_publish(url, passwords, [event]))

        def in_queue() -> list[dict[str, Any]]:
            return queue(client, issuer, FEDASIL_BRUSSELS)

        [item] = eventually(in_queue, "the SECONDLINE/case-resolution consumer to open the case")
        assert (item["track"], item["urgency"]) == ("return", "urgent")
        assert queue(client, issuer, ICAM_BRUSSELS) == []

        response = accept(client, issuer, item["case_id"], "return", FEDASIL_BRUSSELS)
        assert response.status_code == 200, response.text

        message = eventually(
            lambda: asyncio.run(_last(url, passwords, ACCEPTED)),
            "the relay to publish track.accepted",
        )
        accepted = decode(message.data)
        assert set(accepted.data) == ACCEPTED_FIELDS
        assert accepted.data["track_id"] == event.data["track_id"]
        assert accepted.data["case_id"] == item["case_id"]
        assert (accepted.data["agency"], accepted.data["status"]) == (FEDASIL, "accepted")
        assert message.headers["Nats-Msg-Id"] == accepted.id
        assert item["case_ref"] not in message.data.decode()

        # The audit records went out too, through the AUDIT account's service import.
        def all_sent() -> bool:
            with Session(client.app.state.runtime.engine) as session:
                rows = session.exec(select(OutboxMessage)).all()
                unsent = session.exec(
                    select(func.count()).where(OutboxMessage.sent_at.is_(None))  # type: ignore[union-attr]
                ).one()
                return len(rows) >= 4 and unsent == 0

        eventually(all_sent, "every outbox row (event and audit records) to be published")


@pytest.mark.nats
def test_bad_package_is_dead_lettered_and_withdrawal_purges_through_the_real_server(
    service_settings, nats_server, issuer
):
    """A plaintext package (an old or a rogue producer) is never stored: the event is
    dead-lettered; the sealed one opens, and a withdrawal deletes it from the case (F4)."""
    url, passwords = nats_server.url, nats_server.passwords
    app = create_app(service_settings(Settings, "case-resolution"))
    bridge = FakeBridge()
    app.dependency_overrides[get_key_fetcher] = lambda: bridge.fetch
    app.dependency_overrides[get_link_finder] = lambda: bridge.find_links
    with running(app) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "the NATS link")
        smuggled = routed(disclosure=DISCLOSURE)
        smuggled = Event.model_validate(
            {**smuggled.model_dump(), "data": {**smuggled.data, "disclosure": DISCLOSURE}}
        )
        good = routed(track="return")
        asyncio.run(_publish(url, passwords, [smuggled, good]))

        [item] = eventually(
            lambda: queue(client, issuer, FEDASIL_BRUSSELS), "the consumer to open the case"
        )

        def dead() -> list[DeadLetter]:
            with Session(client.app.state.runtime.engine) as session:
                return list(session.exec(select(DeadLetter)).all())

        [letter] = eventually(dead, "the plaintext package to be dead-lettered")
        assert (letter.event_id, letter.error) == (smuggled.id, "ValidationError")
        assert queue(client, issuer, ICAM_BRUSSELS) == []
        assert PACKAGE_CANARY not in raw_rows(client)
        assert read(client, issuer, item["case_id"], COUNSELLOR)["disclosure"] == PACKAGE

        asyncio.run(_publish(url, passwords, [cancelled(good, reason="consent_withdrawn")]))

        def purged() -> bool:
            return case_of(client, good).disclosure_status == "withdrawn"

        eventually(purged, "the withdrawal to purge the package")
        stored = case_of(client, good)
        assert (stored.status, stored.status_reason) == ("cancelled", "consent_withdrawn")
        assert disclosure_is_sql_null(client, good)
        assert good.data["disclosure"]["ciphertext"] not in raw_rows(client)
        # No status went back to the bridge for a cancel it sent itself.
        assert outbox(client, "secondline.case.track.") == []


# ---------------------------------------------------------------- with the real bridge


# One object per category, a canary in each, as intake would disclose it.
FULL_RECORD = {
    c.value: {"value": f"{PACKAGE_CANARY}-{c.value}", "n": i} for i, c in enumerate(DataCategory)
}


@pytest.mark.nats
def test_case_read_opens_the_package_with_the_key_the_real_bridge_hands_out(
    service_settings, nats_server, issuer
):
    """Bridge and zone B on the project's own nats-server: the routed package is sealed, the
    case read asks the real `referral-sl` responder for the key, and the coach sees exactly the
    consented categories; once the consent is withdrawn the next read shows nothing (F4)."""
    from twoline_consent.app import create_app as create_consent
    from twoline_consent.config import Settings as ConsentSettings
    from twoline_intake.app import create_app as create_intake
    from twoline_intake.config import Settings as IntakeSettings
    from twoline_referral.app import create_app as create_bridge
    from twoline_referral.config import Settings as BridgeSettings
    from twoline_referral.models import DataKey
    from twoline_referral.routes import get_disclosure_fetcher

    consented = ["identity", "needs"]
    ngo = issuer.headers(**NGO_GHENT)
    bridge_app = create_bridge(
        service_settings(
            BridgeSettings, "referral", nats_sl_password=nats_server.passwords["referral-sl"]
        )
    )

    def fetch(ref: str, org: str, categories: list[str]) -> dict[str, Any]:
        return {c: FULL_RECORD[c] for c in categories}

    # The package comes from this stand-in; the consent the bridge decides on, and the one it
    # asks about before each key it hands out, from the real consent service.
    bridge_app.dependency_overrides[get_disclosure_fetcher] = lambda: fetch
    with (
        running(create_intake(service_settings(IntakeSettings, "intake"))) as intake,
        running(create_consent(service_settings(ConsentSettings, "consent"))) as consents,
        running(bridge_app) as bridge,
        running(create_app(service_settings(Settings, "case-resolution"))) as client,
    ):
        for service in (intake, consents, bridge, client):
            eventually(lambda s=service: s.get("/readyz").status_code == 200, "a NATS link")
        registered = intake.post("/v1/clients", json={"display_name": "X"}, headers=ngo)
        client_ref = registered.json()["client_ref"]
        granted = consents.post(
            "/v1/consents",
            headers=ngo,
            json={
                "client_ref": client_ref,
                "recipient": IO,
                "purposes": ["referral"],
                "categories": consented,
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            },
        )
        assert granted.status_code == 201, granted.text
        created = bridge.post(
            "/v1/referrals",
            json={"client_ref": client_ref, "tracks": ["legal_stay"]},
            headers=ngo,
        )
        assert created.status_code == 201, created.text

        [item] = eventually(
            lambda: queue(client, issuer, ICAM_BRUSSELS), "the routed track to reach the queue"
        )
        response = client.get(f"/v1/cases/{item['case_id']}", headers=issuer.headers(**COACH))

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["disclosure_status"] == "disclosed"
        assert body["disclosure"] == {c: FULL_RECORD[c] for c in consented}
        for category in FULL_RECORD:
            assert (f"{PACKAGE_CANARY}-{category}" in response.text) is (category in consented)
        # Zone B holds the sealed form only; the bridge audited the key it handed out.
        assert PACKAGE_CANARY not in raw_rows(client)
        with Session(bridge.app.state.runtime.engine) as session:
            released = [
                decode(r.payload).data
                for r in session.exec(select(OutboxMessage)).all()
                if r.subject == "audit.referral.disclosure-key.release"
            ]
            [key] = session.exec(select(DataKey)).all()
        assert [(a["outcome"], a["track_id"], a["key_id"]) for a in released] == [
            ("success", created.json()["tracks"][0]["track_id"], key.key_id)
        ]

        # The client withdraws: from that answer on the bridge hands out no key, so the next
        # read shows nothing (and the bridge then destroys the key).
        withdrawn = consents.post(
            f"/v1/consents/{granted.json()['consent_id']}/withdraw", headers=ngo
        )
        assert withdrawn.status_code == 200, withdrawn.text
        response = client.get(f"/v1/cases/{item['case_id']}", headers=issuer.headers(**COACH))
        assert response.status_code == 200, response.text
        assert (response.json()["disclosure"], response.json()["disclosure_status"]) == (
            None,
            "withdrawn",
        )
        assert PACKAGE_CANARY not in response.text

        # And the cancel deletes zone B's sealed copy too.
        def cancelled_and_deleted() -> Case | None:
            with Session(client.app.state.runtime.engine) as session:
                case = session.get(Case, uuid.UUID(item["case_id"]))
            return case if case.disclosure_status == "withdrawn" else None

        case = eventually(cancelled_and_deleted, "the withdrawal's cancel to reach zone B")
        assert (case.status, case.status_reason) == ("cancelled", "consent_withdrawn")
        assert case.sealed_disclosure() is None


# ---------------------------------------------------------------- step-up requests (F5)

DISCLOSURE_REQUESTED = "secondline.case.disclosure.requested"
NEEDS_ONLY = {"categories": ["needs"], "package": {"needs": PACKAGE["needs"]}}
STEP_UP = {"categories": ["identity"], "reason": "identity_verification"}


def ask(
    client: TestClient, issuer: Any, case_id: Any, body: Any = None, who: dict[str, str] = COACH
) -> Any:
    return client.post(
        f"/v1/cases/{case_id}/disclosure-requests",
        headers=issuer.headers(**who),
        json=STEP_UP if body is None else body,
    )


def released(event: Event, request_id: str, disclosure: dict[str, Any], **sealing: Any) -> Event:
    track_id = event.data["track_id"]
    return new_event(
        source="twoline/referral",
        type="secondline.referral.disclosure.released",
        subject=track_id,
        request_id=request_id,
        track_id=track_id,
        disclosure=sealed(disclosure, track_id, **sealing),
        at=datetime.now(UTC).isoformat(),
    )


def refused(event: Event, request_id: str) -> Event:
    track_id = event.data["track_id"]
    return new_event(
        source="twoline/referral",
        type="secondline.referral.disclosure.refused",
        subject=track_id,
        request_id=request_id,
        track_id=track_id,
        at=datetime.now(UTC).isoformat(),
    )


def test_performer_asks_for_more_categories_with_a_code_and_the_bridge_hears_it(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)

    response = ask(cases, issuer, case_id)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "request_id",
        "categories",
        "reason",
        "status",
        "requested_at",
        "decided_at",
    }
    assert (body["categories"], body["reason"], body["status"]) == (
        ["identity"],
        "identity_verification",
        "pending",
    )
    [(_, sent)] = outbox(cases, DISCLOSURE_REQUESTED)
    # F5: the track id only, codes only.
    assert set(sent.data) == {"request_id", "track_id", "categories", "reason", "at"}
    assert (sent.data["request_id"], sent.data["track_id"], sent.data["categories"]) == (
        body["request_id"],
        event.data["track_id"],
        ["identity"],
    )
    audits = [
        e.data
        for _, e in outbox(cases, "audit.")
        if e.data["resource_type"] == "case-disclosure-request"
    ]
    assert [(a["request_id"], a["categories"], a["reason"]) for a in audits] == [
        (body["request_id"], ["identity"], "identity_verification")
    ]
    shown = read(cases, issuer, case_id, COACH)["disclosure_requests"]
    assert [(r["request_id"], r["status"], r["decided_at"]) for r in shown] == [
        (body["request_id"], "pending", None)
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"categories": [], "reason": "other"},
        {"categories": ["identity"]},
        {"categories": ["identity"], "reason": "because I want to"},
        {"categories": ["passport"], "reason": "other"},
        {"categories": ["identity", "identity"], "reason": "other"},
        {"categories": ["identity"], "reason": "other", "note": "free text"},
    ],
)
def test_a_malformed_disclosure_request_is_422(cases, issuer, body):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    before = snapshot(cases, event)
    assert_problem(ask(cases, issuer, case_id, body), 422, "validation")
    assert snapshot(cases, event) == before


def test_asking_for_an_already_disclosed_category_is_422(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    before = snapshot(cases, event)
    response = ask(cases, issuer, case_id, {"categories": ["identity", "needs"], "reason": "other"})
    assert_problem(response, 422, "category-already-disclosed")
    assert snapshot(cases, event) == before


def test_one_pending_request_per_case_and_only_on_an_active_track(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    assert ask(cases, issuer, case_id).status_code == 201
    before = snapshot(cases, event)
    assert_problem(
        ask(cases, issuer, case_id, {"categories": ["health"], "reason": "medical_assessment"}),
        409,
        "disclosure-request-pending",
    )
    assert snapshot(cases, event) == before
    for status in ("requested", "completed", "cancelled"):
        _, other_id = case_in(cases, issuer, status, disclosure=NEEDS_ONLY)
        assert_problem(ask(cases, issuer, other_id), 409, "track-not-active")
    assert len(outbox(cases, DISCLOSURE_REQUESTED)) == 1


def test_only_the_tracks_performer_of_the_office_may_ask(cases, issuer):
    _, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    assert_problem(ask(cases, issuer, case_id, who=COUNSELLOR), 404, "not-found")
    assert_problem(ask(cases, issuer, case_id, who=ICAM_ANTWERP), 404, "not-found")
    assert outbox(cases, DISCLOSURE_REQUESTED) == []


def test_refusal_reaches_the_case_worker(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    request_id = ask(cases, issuer, case_id).json()["request_id"]

    feed(cases, refused(event, request_id), refused(event, request_id))

    body = read(cases, issuer, case_id, COACH)
    [shown] = body["disclosure_requests"]
    assert shown["status"] == "refused" and shown["decided_at"] is not None
    assert body["disclosed_categories"] == ["needs"]
    # A refused request no longer blocks a new one.
    assert (
        ask(cases, issuer, case_id, {"categories": ["health"], "reason": "other"}).status_code
        == 201
    )


def test_release_replaces_the_sealed_package_and_the_case_worker_reads_the_new_category(
    cases, issuer
):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    request_id = ask(cases, issuer, case_id).json()["request_id"]
    assert read(cases, issuer, case_id, COACH)["disclosure"] == {"needs": PACKAGE["needs"]}
    new_key_id, new_key = "7d0c8a6e-1111-4222-8333-944455556666", new_data_key()
    cases.bridge.keys[new_key_id] = new_key
    wider = {
        "categories": ["identity", "needs"],
        "package": {"identity": PACKAGE["identity"], "needs": PACKAGE["needs"]},
    }

    feed(cases, released(event, request_id, wider, key=new_key, key_id=new_key_id))

    body = read(cases, issuer, case_id, COACH)
    assert body["disclosed_categories"] == ["identity", "needs"]
    assert body["disclosure"] == wider["package"]
    assert [r["status"] for r in body["disclosure_requests"]] == ["released"]
    # Stored sealed under the new key only: no plaintext in any table.
    assert sealed_columns(cases, event)[0] == new_key_id
    assert PACKAGE_CANARY not in raw_rows(cases)
    # A redelivery changes nothing; a withdrawal under the new consent purges it as before.
    feed(cases, released(event, request_id, NEEDS_ONLY, key=new_key, key_id=new_key_id))
    assert case_of(cases, event).disclosed_categories == ["identity", "needs"]
    feed(cases, cancelled(event, reason="consent_withdrawn"))
    after = read(cases, issuer, case_id, COACH)
    assert (after["disclosure"], after["disclosure_status"]) == (None, "withdrawn")
    assert sealed_columns(cases, event) == (None, None, None)


def test_a_release_after_a_withdrawal_never_brings_the_package_back(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    request_id = ask(cases, issuer, case_id).json()["request_id"]
    feed(cases, cancelled(event, reason="consent_withdrawn"))

    feed(cases, released(event, request_id, DISCLOSURE))

    assert sealed_columns(cases, event) == (None, None, None)
    assert case_of(cases, event).disclosure_status == "withdrawn"


def test_a_decision_for_another_cases_request_changes_nothing(cases, issuer):
    _, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    other, _ = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    request_id = ask(cases, issuer, case_id).json()["request_id"]

    feed(cases, refused(other, request_id), released(other, request_id, DISCLOSURE))

    assert [r["status"] for r in read(cases, issuer, case_id, COACH)["disclosure_requests"]] == [
        "pending"
    ]
    assert case_of(cases, other).disclosed_categories == ["needs"]


def test_a_released_event_with_a_plaintext_package_breaks_the_contract(cases, issuer):
    event, case_id = case_in(cases, issuer, "accepted", disclosure=NEEDS_ONLY)
    request_id = ask(cases, issuer, case_id).json()["request_id"]
    bad = released(event, request_id, DISCLOSURE)
    bad.data["disclosure"]["package"] = PACKAGE
    with pytest.raises(ValidationError):
        feed(cases, bad)
    assert case_of(cases, event).disclosed_categories == ["needs"]


def test_step_up_rule_asks_only_for_new_categories_one_request_at_a_time():
    domain.check_step_up(requested=["identity"], disclosed=["needs"], pending=False)
    with pytest.raises(domain.CategoryAlreadyDisclosed):
        domain.check_step_up(requested=["identity", "needs"], disclosed=["needs"], pending=False)
    with pytest.raises(domain.DisclosureRequestPending):
        domain.check_step_up(requested=["identity"], disclosed=["needs"], pending=True)
