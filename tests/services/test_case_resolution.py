"""Case-resolution service (zone B): one case per routed track under a fresh pseudonym (F5),
office queues (F7), who may accept which track (FHIR Task rule), id-only events and audit records
(F8), and the flow through the project's own NATS server."""

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, select

from tests.conftest import (
    AUDITOR,
    FEDASIL_BRUSSELS,
    ICAM_BRUSSELS,
    NGO_GHENT,
    assert_problem,
    eventually,
    running,
)
from twoline.natsserver import credential
from twoline_case_resolution import domain, repository
from twoline_case_resolution.app import create_app
from twoline_case_resolution.config import Settings
from twoline_case_resolution.consumers import BINDINGS, TRACK_ROUTED
from twoline_case_resolution.models import (
    Case,
)
from twoline_shared.auth import Agency
from twoline_shared.broker import connect
from twoline_shared.codes import TaskStatus, Track
from twoline_shared.db import session_scope
from twoline_shared.errors import Conflict, Forbidden, Invalid
from twoline_shared.events import Event, decode, encode, headers_for, new_event
from twoline_shared.outbox import OutboxMessage

ICAM_ANTWERP = {**ICAM_BRUSSELS, "office": "antwerp"}
ACCEPTED = "secondline.case.track.accepted"
ACCEPTED_FIELDS = {"track_id", "case_id", "track", "agency", "office", "status", "at"}
QUEUE_FIELDS = {"case_id", "case_ref", "track", "urgency", "routed_at"}
IO = Agency.IMMIGRATION_OFFICE.value
FEDASIL = Agency.FEDASIL.value
CASE_REF = re.compile(r"^K-[0-9A-HJKMNP-TV-Z]{8}$")


# ---------------------------------------------------------------- helpers


def routed(
    *,
    track: str = "legal_stay",
    agency: str | None = None,
    office: str = "brussels",
    urgency: str = "normal",
    routed_at: datetime | None = None,
    track_id: str | None = None,
) -> Event:
    """A `secondline.referral.track.routed` event exactly as docs/events.md defines it."""
    track_id = track_id or f"T-{uuid.uuid4().hex}"
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
    )


@pytest.fixture
def cases(service_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The case-resolution app on a fresh database, without NATS (outbox rows stay unsent)."""
    with running(create_app(service_settings(Settings, "case-resolution"))) as client:
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


def outbox(client: TestClient, prefix: str = "") -> list[tuple[OutboxMessage, Event]]:
    with Session(client.app.state.runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.seq)).all()
    return [(r, decode(r.payload)) for r in rows if r.subject.startswith(prefix)]


def queue(client: TestClient, issuer: Any, who: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/v1/queue", headers=issuer.headers(**who))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["data"])
    return body["data"]


def accept(client: TestClient, issuer: Any, case_id: Any, track: str, who: dict[str, str]) -> Any:
    return client.post(f"/v1/cases/{case_id}/tracks/{track}/accept", headers=issuer.headers(**who))


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
    assert "disclosure" not in body and "track_id" not in body
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
        "status": "accepted",
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
