"""Flow traces (oversight): an auditor follows one referral through every service's audit
records — the consent grants, the bridge's referral and disclosures, zone B's cases, the key
releases — and is shown what looks wrong: a disclosure no consent permits, a read after
withdrawal, a status set by a role that may not set it, an event the next service never took up.
"""

import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import (
    AUDITOR,
    FEDASIL_BRUSSELS,
    ICAM_BRUSSELS,
    NGO_GHENT,
    assert_problem,
    running,
)
from twoline_audit import traces
from twoline_audit.app import create_app
from twoline_audit.config import Settings
from twoline_audit.consumers import on_audit_record
from twoline_audit.routes import get_trace_grace
from twoline_shared.db import session_scope
from twoline_shared.events import Event, new_event

NGO = {"roles": ["ngo_caseworker"], "org": "ngo-ghent", "agency": None, "office": None}
COACH = {"roles": ["icam_coach"], "org": None, "agency": "immigration_office", "office": "brussels"}
COUNSELLOR = {
    "roles": ["return_counsellor"],
    "org": None,
    "agency": "fedasil",
    "office": "brussels",
}
NOBODY = {"roles": [], "org": None, "agency": None, "office": None}
AGENCY = {"legal_stay": "immigration_office", "return": "fedasil"}
CATEGORIES = ["identity", "needs"]
LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


# ---------------------------------------------------------------- records as services make them


def audit(
    service: str,
    resource_type: str,
    action: str,
    *,
    resource_id: str,
    at: datetime,
    who: dict[str, Any] = NOBODY,
    outcome: str | None = "success",
    **fields: Any,
) -> Event:
    """An audit record with the fields `twoline_shared.audit.record_audit` writes, at `at`."""
    data = {
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "outcome": outcome,
        "actor": f"{service}-actor" if who["roles"] else None,
        **who,
        "trace_id": None,
        **fields,
    }
    event = new_event(
        source=f"twoline/{service}",
        type=f"audit.{service}.{resource_type}.{action}",
        subject=resource_id,
        **data,
    )
    return event.model_copy(update={"time": at.isoformat()})


class Flow:
    """One client referred for both tracks: the records each service makes, at times from
    `start`, one second apart."""

    def __init__(self, start: datetime = LONG_AGO) -> None:
        self.referral_id = str(uuid.uuid4())
        self.tracks = {"legal_stay": str(uuid.uuid4()), "return": str(uuid.uuid4())}
        self.consents = {t: str(uuid.uuid4()) for t in self.tracks}
        self.cases = {t: str(uuid.uuid4()) for t in self.tracks}
        self.keys = {t: uuid.uuid4().hex for t in self.tracks}
        self.clock = start

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def grant(self, track: str, *, recipient: str | None = None) -> Event:
        consent_id = self.consents[track]
        return audit(
            "consent",
            "consent",
            "create",
            resource_id=consent_id,
            at=self.tick(),
            who=NGO,
            consent_id=consent_id,
            recipient=recipient or AGENCY[track],
            purposes=["feedback", "referral"],
            categories=CATEGORIES,
        )

    def withdraw(self, track: str) -> Event:
        consent_id = self.consents[track]
        return audit(
            "consent",
            "consent",
            "withdraw",
            resource_id=consent_id,
            at=self.tick(),
            who=NGO,
            consent_id=consent_id,
            recipient=AGENCY[track],
            purposes=["feedback", "referral"],
            categories=CATEGORIES,
        )

    def disclose(self, track: str, *, consent_id: str | None = None) -> Event:
        track_id = self.tracks[track]
        return audit(
            "referral",
            "track",
            "disclose",
            resource_id=track_id,
            at=self.tick(),
            who={**NGO, "agency": AGENCY[track], "office": "brussels"},
            track_id=track_id,
            referral_id=self.referral_id,
            consent_id=consent_id or self.consents[track],
            key_id=self.keys[track],
            categories=CATEGORIES,
            purpose="referral",
        )

    def create(self) -> Event:
        return audit(
            "referral",
            "referral",
            "create",
            resource_id=self.referral_id,
            at=self.tick(),
            who=NGO,
            client_ref="C-TRACE0001",
            urgency="normal",
            track_ids=list(self.tracks.values()),
            tracks=list(self.tracks),
            agencies=[AGENCY[t] for t in self.tracks],
            offices=["brussels", "brussels"],
            consent_ids=list(self.consents.values()),
            purpose="referral",
        )

    def open_case(self, track: str) -> Event:
        return audit(
            "case-resolution",
            "case",
            "create",
            resource_id=self.cases[track],
            at=self.tick(),
            track_id=self.tracks[track],
            track=track,
            status="requested",
            reason=None,
            disclosure_status="stored",
            categories=CATEGORIES,
        )

    def set_status(
        self,
        track: str,
        status: str,
        *,
        action: str = "update",
        who: dict[str, Any] | None = None,
        previous: str = "requested",
    ) -> Event:
        return audit(
            "case-resolution",
            "case",
            action,
            resource_id=self.cases[track],
            at=self.tick(),
            who=who or (COACH if track == "legal_stay" else COUNSELLOR),
            # zone B writes the track's outcome (here none yet) where the audit outcome goes.
            outcome=None,
            track_id=self.tracks[track],
            track=track,
            previous_status=previous,
            status=status,
            reason=None,
        )

    def accept(self, track: str, *, who: dict[str, Any] | None = None) -> Event:
        return self.set_status(track, "accepted", action="accept", who=who)

    def bridge_update(self, track: str, status: str, previous: str = "requested") -> Event:
        return audit(
            "referral",
            "track",
            "update",
            resource_id=self.tracks[track],
            at=self.tick(),
            referral_id=self.referral_id,
            agency=AGENCY[track],
            office="brussels",
            previous_status=previous,
            status=status,
            reason=None,
            track_outcome=None,
        )

    def release_key(self, track: str) -> Event:
        return audit(
            "referral",
            "disclosure-key",
            "release",
            resource_id=self.keys[track],
            at=self.tick(),
            key_id=self.keys[track],
            track_id=self.tracks[track],
            consent_id=self.consents[track],
            agency=AGENCY[track],
            office="brussels",
        )

    def read(self, track: str, *, categories: list[str] = CATEGORIES) -> Event:
        return audit(
            "case-resolution",
            "case",
            "read",
            resource_id=self.cases[track],
            at=self.tick(),
            who=COACH if track == "legal_stay" else COUNSELLOR,
            track_id=self.tracks[track],
            categories=categories,
            disclosure_status="stored" if categories else "withdrawn",
            joint_review="not_consented",
            linked_case_ids=[],
        )

    def withdrawal_applied(self, track: str) -> list[Event]:
        """The bridge and zone B apply a withdrawal: cancel, key destroyed, package purged."""
        track_id, consent_id = self.tracks[track], self.consents[track]
        return [
            audit(
                "referral",
                "disclosure-key",
                "destroy",
                resource_id=self.keys[track],
                at=self.tick(),
                key_id=self.keys[track],
                consent_id=consent_id,
                agency=AGENCY[track],
                reason="consent_withdrawn",
            ),
            audit(
                "referral",
                "track",
                "cancel",
                resource_id=track_id,
                at=self.tick(),
                referral_id=self.referral_id,
                agency=AGENCY[track],
                office="brussels",
                consent_id=consent_id,
                previous_status="accepted",
                status="cancelled",
                reason="consent_withdrawn",
                purge_requested=True,
            ),
            audit(
                "case-resolution",
                "case",
                "cancel",
                resource_id=self.cases[track],
                at=self.tick(),
                track_id=track_id,
                track=track,
                previous_status="accepted",
                status="cancelled",
                reason="consent_withdrawn",
            ),
            audit(
                "case-resolution",
                "case-disclosure",
                "purge",
                resource_id=self.cases[track],
                at=self.tick(),
                track_id=track_id,
                categories=CATEGORIES,
                reason="consent_withdrawn",
            ),
        ]

    def clean(self) -> list[Event]:
        """Consented, referred, both cases opened and accepted, both read."""
        return [
            self.grant("legal_stay"),
            self.grant("return"),
            self.disclose("legal_stay"),
            self.disclose("return"),
            self.create(),
            self.open_case("legal_stay"),
            self.open_case("return"),
            self.accept("legal_stay"),
            self.bridge_update("legal_stay", "accepted"),
            self.accept("return"),
            self.bridge_update("return", "accepted"),
            self.release_key("legal_stay"),
            self.read("legal_stay"),
            self.release_key("return"),
            self.read("return"),
        ]


# ---------------------------------------------------------------- the service


@pytest.fixture
def make_log(
    service_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[..., TestClient]]:
    """The audit app on a fresh database, without NATS; the grace period as the test says."""
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            settings = service_settings(
                Settings, "audit", signing_key_path=tmp_path / "signing-key.pem", **overrides
            )
            return stack.enter_context(running(create_app(settings)))

        yield make


@pytest.fixture
def log(make_log: Callable[..., TestClient]) -> TestClient:
    return make_log()


def feed(client: TestClient, *events: Event) -> None:
    """Append each record through the consumer's handler, each in its own transaction."""
    for event in events:
        with contextlib.contextmanager(session_scope)(client.app.state.runtime.engine) as session:
            on_audit_record(session, event)


def trace(client: TestClient, issuer: Any, referral_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/traces/{referral_id}", headers=issuer.headers(**AUDITOR))
    assert response.status_code == 200, response.text
    return response.json()


def codes(body: dict[str, Any]) -> list[str]:
    return [f["code"] for f in body["findings"]]


def of(body: dict[str, Any], code: str) -> list[dict[str, Any]]:
    """The findings with `code` (a partial flow has other findings too)."""
    return [f for f in body["findings"] if f["code"] == code]


# ---------------------------------------------------------------- the records of one referral


def test_a_trace_holds_exactly_the_referrals_records_in_log_order_with_their_indexes(log, issuer):
    flow, other = Flow(), Flow()
    mine = flow.clean()
    theirs = other.clean()
    # Two referrals' records interleaved, as they arrive from independent relays.
    interleaved = [e for pair in zip(mine, theirs, strict=True) for e in pair]
    feed(log, *interleaved)

    body = trace(log, issuer, flow.referral_id)

    assert body["referral_id"] == flow.referral_id
    assert body["count"] == len(mine) == len(body["records"])
    assert [r["index"] for r in body["records"]] == list(range(0, 2 * len(mine), 2))
    assert [(r["service"], r["resource_type"], r["action"]) for r in body["records"]] == [
        (e.source.removeprefix("twoline/"), e.data["resource_type"], e.data["action"]) for e in mine
    ]
    assert [r["time"] for r in body["records"]] == [e.time for e in mine]
    assert body["findings"] == []
    first = body["records"][0]
    assert first["consent_id"] == flow.consents["legal_stay"]
    assert first["roles"] == ["ngo_caseworker"]
    accept = body["records"][7]
    assert (accept["track_id"], accept["status"], accept["roles"]) == (
        flow.tracks["legal_stay"],
        "accepted",
        ["icam_coach"],
    )
    assert (accept["agency"], accept["office"]) == ("immigration_office", "brussels")
    # The bridge's track records name the track as their resource: shown as the track id too.
    assert body["records"][8]["track_id"] == flow.tracks["legal_stay"]
    shown = repr(body)
    for id_ in [other.referral_id, *other.tracks.values(), *other.consents.values()]:
        assert id_ not in shown
    # Ids and codes only: not the actor's sub, nor the NGO's client pseudonym.
    assert "actor" not in shown and "C-TRACE0001" not in shown


def test_zone_b_records_that_arrive_before_the_referral_are_found_by_their_track(log, issuer):
    flow = Flow()
    events = flow.clean()
    zone_b = [e for e in events if e.source == "twoline/case-resolution"]
    rest = [e for e in events if e.source != "twoline/case-resolution"]

    feed(log, *zone_b, *rest)

    body = trace(log, issuer, flow.referral_id)
    assert body["count"] == len(events)
    assert [r["index"] for r in body["records"]] == list(range(len(events)))
    assert body["findings"] == []


def test_a_later_referral_under_the_same_consent_is_not_in_the_trace(log, issuer):
    first = Flow()
    second = Flow()
    second.consents = dict(first.consents)
    feed(log, *first.clean(), second.disclose("legal_stay"), second.create())

    body = trace(log, issuer, first.referral_id)

    assert second.referral_id not in repr(body)
    # The consent's own records are the first referral's as well as the second's.
    assert (
        sum(
            r["resource_type"] == "consent"
            for r in trace(log, issuer, second.referral_id)["records"]
        )
        == 2
    )


def test_a_joint_review_link_shows_in_both_referrals_traces_and_joins_nothing_else(log, issuer):
    coach_side, counsellor_side = Flow(), Flow()
    events = [*coach_side.clean(), *counsellor_side.clean()]
    link = audit(
        "referral",
        "joint-review",
        "disclose",
        resource_id=coach_side.tracks["legal_stay"],
        at=counsellor_side.tick(),
        track_id=coach_side.tracks["legal_stay"],
        referral_id=coach_side.referral_id,
        agency="immigration_office",
        office="brussels",
        consent_id=coach_side.consents["legal_stay"],
        linked_track_ids=[counsellor_side.tracks["return"]],
        linked_consent_ids=[counsellor_side.consents["return"]],
        purpose="joint_review",
    )
    feed(log, *events, link)

    mine, theirs = (trace(log, issuer, f.referral_id) for f in (coach_side, counsellor_side))

    assert (
        mine["records"][-1]["resource_type"]
        == theirs["records"][-1]["resource_type"]
        == ("joint-review")
    )
    assert mine["count"] == theirs["count"] == 16
    assert counsellor_side.referral_id not in repr(mine["records"][:-1])
    assert coach_side.referral_id not in repr(theirs["records"][:-1])
    # The coach's consent never granted joint_review: the link is a finding in its own trace.
    assert codes(mine) == ["disclosure-without-consent"] and theirs["findings"] == []


# ---------------------------------------------------------------- findings


def test_a_disclosure_under_a_consent_never_granted_is_a_finding(log, issuer):
    flow = Flow()
    stray = str(uuid.uuid4())
    events = flow.clean()
    events.insert(3, flow.disclose("return", consent_id=stray))
    feed(log, *events)

    body = trace(log, issuer, flow.referral_id)

    [finding] = body["findings"]
    assert finding["code"] == "disclosure-without-consent"
    assert finding["indexes"] == [3]
    assert stray in finding["text"] and flow.tracks["return"] in finding["text"]


def test_a_disclosure_after_the_consent_was_withdrawn_is_a_finding(log, issuer):
    flow = Flow()
    feed(log, flow.grant("legal_stay"), flow.withdraw("legal_stay"), flow.disclose("legal_stay"))

    [finding] = of(trace(log, issuer, flow.referral_id), "disclosure-without-consent")

    assert finding["code"] == "disclosure-without-consent"
    assert finding["indexes"] == [2, 1]
    assert "after its withdrawal" in finding["text"]


def test_a_grant_to_the_other_agency_does_not_permit_a_disclosure(log, issuer):
    flow = Flow()
    feed(log, flow.grant("legal_stay", recipient="fedasil"), flow.disclose("legal_stay"))

    assert len(of(trace(log, issuer, flow.referral_id), "disclosure-without-consent")) == 1


def test_a_grant_whose_record_is_still_on_its_way_is_not_yet_a_finding(make_log, issuer):
    log = make_log(trace_grace_seconds=60)
    flow = Flow(start=datetime.now(UTC))
    feed(log, flow.disclose("legal_stay"), flow.create())

    assert "disclosure-without-consent" not in codes(trace(log, issuer, flow.referral_id))


def test_a_read_that_shows_data_after_withdrawal_is_a_finding(log, issuer):
    flow = Flow()
    events = flow.clean()
    feed(log, *events, flow.withdraw("legal_stay"), *flow.withdrawal_applied("legal_stay"))
    withdrawn_at = len(events)
    late_read = flow.read("legal_stay")
    empty_read = flow.read("legal_stay", categories=[])
    feed(log, late_read, empty_read)

    body = trace(log, issuer, flow.referral_id)

    [finding] = body["findings"]
    assert finding["code"] == "read-after-withdrawal"
    assert finding["indexes"] == [withdrawn_at + 5, withdrawn_at]
    assert flow.tracks["legal_stay"] in finding["text"]
    assert "consent withdraw" in finding["text"]


def test_a_read_after_the_package_was_purged_is_a_finding(log, issuer):
    flow = Flow()
    purge = flow.withdrawal_applied("return")[-1]
    feed(log, *flow.clean()[:7], purge, flow.read("return"))

    body = trace(log, issuer, flow.referral_id)

    assert codes(body) == ["read-after-withdrawal"]
    assert body["findings"][0]["indexes"] == [8, 7]


def test_a_clean_withdrawal_has_no_findings(log, issuer):
    flow = Flow()
    feed(
        log,
        *flow.clean(),
        flow.withdraw("return"),
        *flow.withdrawal_applied("return"),
        flow.read("return", categories=[]),
    )

    assert trace(log, issuer, flow.referral_id)["findings"] == []


@pytest.mark.parametrize(
    ("track", "who"),
    [
        ("legal_stay", COUNSELLOR),
        ("return", COACH),
        ("legal_stay", {**COACH, "agency": "fedasil"}),
        ("legal_stay", NGO),
        ("return", NOBODY),
    ],
)
def test_a_status_set_by_a_role_that_may_not_set_it_is_a_finding(log, issuer, track, who):
    flow = Flow()
    events = flow.clean()
    events[7 if track == "legal_stay" else 9] = flow.accept(track, who=who)
    feed(log, *events)

    body = trace(log, issuer, flow.referral_id)

    [finding] = body["findings"]
    assert finding["code"] == "status-by-wrong-role"
    assert finding["indexes"] == [7 if track == "legal_stay" else 9]
    assert flow.tracks[track] in finding["text"]


def test_a_performer_setting_requested_is_a_finding(log, issuer):
    flow = Flow()
    feed(log, *flow.clean(), flow.set_status("legal_stay", "requested", previous="accepted"))

    findings = trace(log, issuer, flow.referral_id)["findings"]

    assert [f["code"] for f in findings] == ["status-by-wrong-role"]
    assert "never sets requested" in findings[0]["text"]


def test_a_routed_track_that_no_case_was_opened_for_is_a_finding_after_the_grace_period(
    make_log, issuer
):
    flow = Flow()
    log = make_log(trace_grace_seconds=60)
    feed(
        log,
        flow.grant("legal_stay"),
        flow.grant("return"),
        flow.disclose("legal_stay"),
        flow.disclose("return"),
        flow.create(),
        flow.open_case("legal_stay"),
        flow.accept("legal_stay"),
        flow.bridge_update("legal_stay", "accepted"),
    )

    [finding] = trace(log, issuer, flow.referral_id)["findings"]

    assert finding["code"] == "event-not-consumed"
    assert finding["indexes"] == [3]
    assert flow.tracks["return"] in finding["text"]


def test_a_routed_track_within_the_grace_period_is_not_yet_a_finding(make_log, issuer):
    flow = Flow(start=datetime.now(UTC) - timedelta(seconds=10))
    log = make_log(trace_grace_seconds=60)
    feed(log, *flow.clean()[:5])

    assert trace(log, issuer, flow.referral_id)["findings"] == []

    # The same records with no grace at all: neither routed track has its case.
    log.app.dependency_overrides[get_trace_grace] = lambda: 0.0
    assert codes(trace(log, issuer, flow.referral_id)) == ["event-not-consumed"] * 2


def test_a_status_the_bridge_never_recorded_is_a_finding(log, issuer):
    flow = Flow()
    events = flow.clean()
    del events[10]  # the bridge's `track` `update` of the return track
    feed(log, *events)

    [finding] = trace(log, issuer, flow.referral_id)["findings"]

    assert finding["code"] == "event-not-consumed"
    assert finding["indexes"] == [9]
    assert "set to accepted in zone B" in finding["text"]
    assert flow.tracks["return"] in finding["text"]


def test_a_status_after_the_requester_cancelled_is_not_expected_at_the_bridge(log, issuer):
    flow = Flow()
    events = flow.clean()[:7]
    cancel = audit(
        "referral",
        "referral",
        "cancel",
        resource_id=flow.referral_id,
        at=flow.tick(),
        who=NGO,
        track_ids=list(flow.tracks.values()),
        agencies=list(AGENCY.values()),
        previous_statuses=["requested", "requested"],
        reason="client_request",
    )
    zone_b = [
        audit(
            "case-resolution",
            "case",
            "cancel",
            resource_id=flow.cases[t],
            at=flow.tick(),
            track_id=flow.tracks[t],
            track=t,
            previous_status="requested",
            status="cancelled",
            reason="client_request",
        )
        for t in flow.tracks
    ]
    feed(log, *events, cancel, flow.accept("legal_stay"), *zone_b)

    assert trace(log, issuer, flow.referral_id)["findings"] == []


def test_a_cancel_zone_b_never_recorded_and_a_key_never_destroyed_are_findings(log, issuer):
    flow = Flow()
    events = [*flow.clean(), flow.withdraw("legal_stay")]
    destroy, cancel, _case_cancel, _purge = flow.withdrawal_applied("legal_stay")
    feed(log, *events, cancel)

    findings = trace(log, issuer, flow.referral_id)["findings"]

    assert [f["code"] for f in findings] == ["event-not-consumed"] * 2
    texts = " ".join(f["text"] for f in findings)
    assert "never destroyed its data key" in texts
    assert "never recorded the cancel" in texts
    assert destroy.data["key_id"] not in texts


# ---------------------------------------------------------------- who may ask, and bad input


@pytest.mark.parametrize(
    "who",
    [
        NGO_GHENT,
        ICAM_BRUSSELS,
        FEDASIL_BRUSSELS,
        {"role": "ngo_admin", "org": "ngo-ghent"},
        {"role": "service"},
    ],
)
def test_only_auditors_read_a_trace(log, issuer, who):
    flow = Flow()
    feed(log, *flow.clean())

    response = log.get(f"/v1/traces/{flow.referral_id}", headers=issuer.headers(**who))

    assert_problem(response, 403, "forbidden")
    assert flow.tracks["legal_stay"] not in response.text


def test_a_trace_without_a_token_is_401(log):
    flow = Flow()
    feed(log, *flow.clean())
    assert_problem(log.get(f"/v1/traces/{flow.referral_id}"), 401, "unauthorized")
    bad = {"Authorization": "Bearer x.y.z"}
    assert_problem(log.get(f"/v1/traces/{flow.referral_id}", headers=bad), 401)


def test_an_unknown_referral_is_404_and_a_malformed_id_422(log, issuer):
    flow = Flow()
    feed(log, *flow.clean())
    headers = issuer.headers(**AUDITOR)

    assert_problem(log.get(f"/v1/traces/{uuid.uuid4()}", headers=headers), 404, "trace-not-found")
    # A track id is no referral id: the trace starts from the referral.
    assert_problem(log.get(f"/v1/traces/{flow.tracks['return']}", headers=headers), 404)
    for bad in ("not-a-uuid", "1", "%27%20OR%201=1", "x" * 300):
        assert_problem(log.get(f"/v1/traces/{bad}", headers=headers), 422)


def test_a_record_with_fields_of_the_wrong_shape_is_shown_without_them(log, issuer):
    flow = Flow()
    odd = flow.disclose("legal_stay")
    odd = odd.model_copy(
        update={"data": {**odd.data, "roles": "icam_coach", "categories": {"a": 1}, "key_id": 7}}
    )
    feed(log, flow.grant("legal_stay"), odd, flow.create())

    body = trace(log, issuer, flow.referral_id)

    record = body["records"][1]
    assert record["roles"] == [] and record["categories"] == [] and record["key_id"] is None


# ---------------------------------------------------------------- refs (no I/O)


def test_refs_name_referrals_tracks_and_consents_but_not_a_search_by_client_ref():
    refs = traces.entry_refs(
        {
            "action": "search",
            "resource_type": "referral",
            "resource_id": "C-CLIENT",
            "referral_ids": ["r1", "r2"],
        }
    )
    assert refs == {("referral", "r1"), ("referral", "r2")}
    assert traces.entry_refs(
        {
            "action": "disclose",
            "resource_type": "joint-review",
            "resource_id": "t1",
            "track_id": "t1",
            "referral_id": "r1",
            "consent_id": "c1",
            "linked_track_ids": ["t2"],
            "linked_consent_ids": ["c2"],
        }
    ) == {("referral", "r1"), ("track", "t1"), ("track", "t2"), ("consent", "c1")}
    assert traces.entry_refs({"track_id": "x" * 65, "consent_id": 5}) == set()
    assert traces.entry_refs(None) == set()


def test_the_migration_indexes_entries_logged_before_traces_existed(log, issuer):
    from alembic import command
    from alembic.config import Config

    from twoline_audit.app import SPEC
    from twoline_shared.migrations import upgrade

    flow = Flow()
    feed(log, *flow.clean())
    before = trace(log, issuer, flow.referral_id)
    engine = log.app.state.runtime.engine
    config = Config()
    config.set_main_option("script_location", str(SPEC.migrations))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert not sa.inspect(engine).has_table("audit_entry_ref")

    upgrade(engine, SPEC.migrations)

    assert trace(log, issuer, flow.referral_id) == before
