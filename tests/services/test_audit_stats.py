"""Outcome statistics (oversight): counts per group read off audit metadata, for auditors only,
with every count below 5 withheld and no withheld cell recoverable by subtraction."""

import contextlib
import itertools
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUDITOR, ICAM_BRUSSELS, NGO_GHENT, assert_problem, running
from twoline_audit import repository, service, stats
from twoline_audit.app import create_app
from twoline_audit.config import Settings
from twoline_shared.db import session_scope
from twoline_shared.events import Event, new_event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LT5 = stats.SUPPRESSED


# ---------------------------------------------------------------- records as services write them


def record(service_name: str, resource_type: str, action: str, *, at: datetime, **fields: Any):
    """An audit record as `twoline_shared.audit.record_audit` makes it, at a chosen time."""
    data = {
        "service": service_name,
        "action": action,
        "resource_type": resource_type,
        "resource_id": str(uuid.uuid4()),
        "outcome": "success",
        "actor": "someone",
        "roles": [],
        "org": None,
        "agency": None,
        "office": None,
        "trace_id": None,
        **fields,
    }
    event = new_event(
        source=f"twoline/{service_name}",
        type=f"audit.{service_name}.{resource_type}.{action}",
        subject=data["resource_id"],
        **data,
    )
    return event.model_copy(update={"time": at.isoformat()})


class Log:
    """Builds a realistic audit log: registrations, referrals, zone B's acts, withdrawals."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ids: set[str] = set()

    def _add(self, event: Event) -> Event:
        self.events.append(event)
        return event

    def register(self, *, at: datetime) -> str:
        client_ref = f"C-{uuid.uuid4().hex[:8]}"
        self.ids.add(client_ref)
        self._add(record("intake", "client", "create", at=at, resource_id=client_ref))
        return client_ref

    def refer(
        self, *, at: datetime, tracks: tuple[str, ...] = ("legal_stay",), offices: Any = None
    ) -> list[str]:
        """A referral: the bridge's per-track `disclose` records and its `referral.create`."""
        referral_id, client_ref = str(uuid.uuid4()), f"C-{uuid.uuid4().hex[:8]}"
        agencies = [{"legal_stay": "immigration_office", "return": "fedasil"}[t] for t in tracks]
        offices = list(offices or ["brussels"] * len(tracks))
        track_ids = [str(uuid.uuid4()) for _ in tracks]
        self.ids.update([referral_id, client_ref, *track_ids])
        for track_id, agency, office in zip(track_ids, agencies, offices, strict=True):
            self._add(
                record(
                    "referral",
                    "track",
                    "disclose",
                    at=at,
                    resource_id=track_id,
                    track_id=track_id,
                    referral_id=referral_id,
                    agency=agency,
                    office=office,
                )
            )
        self._add(
            record(
                "referral",
                "referral",
                "create",
                at=at,
                resource_id=referral_id,
                client_ref=client_ref,
                track_ids=track_ids,
                tracks=list(tracks),
                agencies=agencies,
                offices=offices,
                consent_ids=[str(uuid.uuid4()) for _ in tracks],
                purpose="referral",
            )
        )
        return track_ids

    def zone_b(
        self, action: str, track_id: str, *, at: datetime, track: str = "legal_stay", **codes: Any
    ) -> None:
        """Zone B's status change (`case.accept` etc.), and the bridge's mirror of it, which
        must not count twice."""
        status = {"accept": "accepted", "reject": "rejected", "complete": "completed"}[action]
        outcome = codes.pop("outcome", None)
        self._add(
            record(
                "case-resolution",
                "case",
                action,
                at=at,
                track_id=track_id,
                track=track,
                status=status,
                reason=codes.get("reason"),
                track_outcome=outcome,
            )
        )
        self._add(
            record(
                "referral",
                "track",
                "update",
                at=at + timedelta(seconds=1),
                resource_id=track_id,
                status=status,
                track_outcome=outcome,
            )
        )

    def withdraw(self, *, at: datetime, recipient: str = "immigration_office") -> None:
        consent_id = str(uuid.uuid4())
        self.ids.add(consent_id)
        self._add(
            record(
                "consent",
                "consent",
                "withdraw",
                at=at,
                resource_id=consent_id,
                consent_id=consent_id,
                recipient=recipient,
            )
        )


def story() -> Log:
    """From 2 March 2026: 6 clients; 6 legal-stay tracks (5 accepted after 1..5 days, 1 rejected, 5
    completed after 10..50 days: 3 legal stay, 2 protection procedure); 2 return tracks (one
    accepted after 7 days); 1 consent withdrawn. Around it: records that must not count."""
    log = Log()
    for n in range(6):
        log.register(at=T0 + timedelta(hours=n))
    legal = [log.refer(at=T0)[0] for _ in range(6)]
    returns = log.refer(at=T0, tracks=("return",), offices=["antwerp"]) + log.refer(
        at=T0, tracks=("return",), offices=["antwerp"]
    )
    for n, track_id in enumerate(legal[:5], start=1):
        log.zone_b("accept", track_id, at=T0 + timedelta(days=n))
    log.zone_b("reject", legal[5], at=T0 + timedelta(days=2), reason="not_eligible")
    log.zone_b("accept", returns[0], at=T0 + timedelta(days=7), track="return")
    outcomes = ["legal_stay"] * 3 + ["protection_procedure"] * 2
    for n, (track_id, outcome) in enumerate(zip(legal[:5], outcomes, strict=True), start=1):
        log.zone_b("complete", track_id, at=T0 + timedelta(days=10 * n), outcome=outcome)
    log.withdraw(at=T0 + timedelta(days=3), recipient="fedasil")
    # Must not count: a refusal, and an accept redelivered for an already accepted track.
    denied = record("case-resolution", "case", "accept", at=T0, track_id=legal[0])
    log._add(denied.model_copy(update={"data": {**denied.data, "outcome": "denied"}}))
    log.zone_b("accept", legal[0], at=T0 + timedelta(days=9))
    return log


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def log(service_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[TestClient]:
    """The audit app on a fresh database, without NATS."""
    settings = service_settings(Settings, "audit", signing_key_path=tmp_path / "signing-key.pem")
    with running(create_app(settings)) as client:
        yield client


def append(client: TestClient, events: list[Event]) -> None:
    with contextlib.contextmanager(session_scope)(client.app.state.runtime.engine) as session:
        for event in events:
            service.append(session, event=event)


def get_stats(client: TestClient, issuer: Any, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/stats", params=params, headers=issuer.headers(**AUDITOR))
    assert response.status_code == 200, response.text
    return response.json()


def rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["group"]: row for row in body["rows"]}


# ---------------------------------------------------------------- suppression (pure)


def cells(**values: int) -> dict[stats.Cell, int]:
    return {(None, name): value for name, value in values.items()}


def rel(total: str, *parts: str) -> stats.Relation:
    return ((None, total), [(None, p) for p in parts])


def test_counts_below_five_are_withheld_and_five_is_shown():
    hidden = stats.suppress(cells(a=0, b=4, c=5, d=70), [])
    assert hidden == {(None, "a"), (None, "b")}


def test_one_withheld_part_of_a_shown_total_withholds_the_next_smallest_part():
    hidden = stats.suppress(cells(total=38, a=2, b=6, c=30), [rel("total", "a", "b", "c")])
    # 38 - 6 - 30 would give a: so b (the next smallest) goes too; the total stays.
    assert hidden == {(None, "a"), (None, "b")}


def test_withheld_parts_that_add_up_to_less_than_five_withhold_another():
    hidden = stats.suppress(cells(total=32, a=1, b=1, c=30), [rel("total", "a", "b", "c")])
    # 32 - 30 = 2 would say a + b = 2: c goes too.
    assert hidden == {(None, "a"), (None, "b"), (None, "c")}


def test_a_total_with_one_part_is_withheld_with_it():
    assert stats.suppress(cells(total=3, a=3), [rel("total", "a")]) == {
        (None, "total"),
        (None, "a"),
    }


def test_secondary_suppression_cascades_across_rows_and_columns():
    # Two groups x two parts, row totals, a total row: x1 is small.
    values = {
        ("x", "p"): 2, ("x", "q"): 20, ("x", "t"): 22,
        ("y", "p"): 9, ("y", "q"): 11, ("y", "t"): 20,
        (None, "p"): 11, (None, "q"): 31, (None, "t"): 42,
    }  # fmt: skip
    relations = [
        (("x", "t"), [("x", "p"), ("x", "q")]),
        (("y", "t"), [("y", "p"), ("y", "q")]),
        ((None, "t"), [(None, "p"), (None, "q")]),
        ((None, "p"), [("x", "p"), ("y", "p")]),
        ((None, "q"), [("x", "q"), ("y", "q")]),
        ((None, "t"), [("x", "t"), ("y", "t")]),
    ]
    hidden = stats.suppress(values, relations)
    assert_no_relation_leaks(values, relations, hidden)
    assert ("x", "p") in hidden and ("y", "p") in hidden and ("x", "q") in hidden


def assert_no_relation_leaks(values, relations, hidden):
    """No relation gives a withheld cell away, and no small cell is determined by all of them
    together (a withheld cell is determined iff dropping its column lowers the rank)."""
    assert all(cell in hidden for cell, value in values.items() if value < stats.THRESHOLD)
    for total, parts in relations:
        withheld = [p for p in parts if p in hidden]
        if total in hidden:
            assert withheld or not parts, total
        elif withheld:
            assert len(withheld) >= 2, (total, withheld)
            assert sum(values[p] for p in withheld) >= stats.THRESHOLD, (total, withheld)
    unknowns = sorted(hidden, key=str)
    matrix = [
        [Fraction(1 if c == t else -1 if c in parts else 0) for c in unknowns]
        for t, parts in relations
    ]
    full = rank(matrix)
    for n, cell in enumerate(unknowns):
        if values[cell] < stats.THRESHOLD:
            without = [row[:n] + row[n + 1 :] for row in matrix]
            assert rank(without) == full, f"{cell} is determined by the shown cells"


def rank(matrix: list[list[Fraction]]) -> int:
    rows = [list(r) for r in matrix if any(r)]
    found = 0
    for col in range(len(rows[0]) if rows else 0):
        pivot = next((r for r in range(found, len(rows)) if rows[r][col] != 0), None)
        if pivot is None:
            continue
        rows[found], rows[pivot] = rows[pivot], rows[found]
        for r in range(len(rows)):
            if r != found and rows[r][col] != 0:
                factor = rows[r][col] / rows[found][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[found], strict=True)]
        found += 1
    return found


@pytest.mark.parametrize("seed", range(200))
def test_no_random_table_leaves_a_withheld_cell_to_subtraction(seed):
    rng = random.Random(seed)
    groups = [f"g{n}" for n in range(rng.randint(1, 5))]
    parts = ["p", "q", "r"][: rng.randint(1, 3)]
    values: dict[stats.Cell, int] = {}
    for group, part in itertools.product(groups, parts):
        values[(group, part)] = rng.choice([0, 1, 2, 3, 4, 5, 6, 9, 14, 40])
    for group in groups:
        values[(group, "t")] = sum(values[(group, p)] for p in parts)
    for name in [*parts, "t"]:
        values[(None, name)] = sum(values[(g, name)] for g in groups)
    relations = [((g, "t"), [(g, p) for p in parts]) for g in [None, *groups]]
    relations += [((None, n), [(g, n) for g in groups]) for n in [*parts, "t"]]
    assert_no_relation_leaks(values, relations, stats.suppress(values, relations))


def test_a_median_needs_five_tracks():
    def facts(*days: float) -> list[stats.Fact]:
        return [stats.Fact(stats.Kind.ACCEPTED, key=str(d), at=T0, days=d) for d in days]

    assert stats.median_days(facts(1, 2, 3, 4)) is None
    assert stats.median_days(facts(1, 2, 3, 4, 10)) == 3
    assert stats.median_days(facts(1, 2, 3, 4, 5, 6.5)) == 3.5
    assert stats.median_days([*facts(1, 2, 3, 4), stats.Fact(stats.Kind.ACCEPTED, "x", T0)]) is None


# ---------------------------------------------------------------- counting rules (pure)


def facts_of(log: Log, start: datetime | None = None, end: datetime | None = None):
    records = [stats.Record(e.type, e.time, dict(e.data)) for e in log.events]
    return stats.collect(records, start=start, end=end)


def test_each_figure_has_one_source_and_each_track_counts_once():
    found = facts_of(story())
    kinds = [f.kind.value for f in found]
    # The bridge's disclose and track.update mirrors, the refusal and the redelivered accept
    # count nowhere.
    assert kinds.count("referrals") == 8
    assert kinds.count("accepted") == 6
    assert kinds.count("rejected") == 1
    assert kinds.count("completed") == 5
    assert kinds.count("clients_reached") == 6
    assert kinds.count("consents_withdrawn") == 1
    accepted = sorted(f.days for f in found if f.kind is stats.Kind.ACCEPTED)
    assert accepted == [1, 2, 3, 4, 5, 7]


def test_zone_b_facts_take_office_from_the_referral_and_agency_from_the_track():
    log = Log()
    track_id = log.refer(at=T0, tracks=("return",), offices=["liege"])[0]
    log.zone_b("accept", track_id, at=T0 + timedelta(days=2), track="return")
    orphan = str(uuid.uuid4())  # its referral record is not in the log
    log.zone_b("accept", orphan, at=T0 + timedelta(days=2))
    accepted = {f.key: f for f in facts_of(log) if f.kind is stats.Kind.ACCEPTED}
    assert (accepted[track_id].agency, accepted[track_id].office) == ("fedasil", "liege")
    assert accepted[track_id].days == 2
    assert (accepted[orphan].agency, accepted[orphan].office) == ("immigration_office", None)
    assert accepted[orphan].days is None
    assert stats.group_of(accepted[orphan], stats.By.OFFICE) == "immigration_office/unknown"


def test_a_period_counts_what_happened_in_it_with_medians_from_the_routing_before_it():
    start = T0 + timedelta(days=3)
    found = facts_of(story(), start=start, end=T0 + timedelta(days=6))
    assert sorted((f.kind.value, f.days) for f in found) == [
        ("accepted", 3),
        ("accepted", 4),
        ("accepted", 5),
        ("consents_withdrawn", None),
    ]


def test_grouping_keys_are_codes_and_months():
    fact = stats.Fact(
        stats.Kind.COMPLETED,
        key="t",
        at=T0,
        track=stats.Track.LEGAL_STAY,
        agency="immigration_office",
        office="brussels",
        outcome=stats.Outcome.PROTECTION_PROCEDURE,
    )
    assert stats.group_of(fact, None) == "all"
    assert stats.group_of(fact, stats.By.AGENCY) == "immigration_office"
    assert stats.group_of(fact, stats.By.OFFICE) == "immigration_office/brussels"
    assert stats.group_of(fact, stats.By.TRACK) == "legal_stay"
    assert stats.group_of(fact, stats.By.OUTCOME) == "protection_procedure"
    assert stats.group_of(fact, stats.By.MONTH) == "2026-03"
    assert fact.cell() == "completed.semi_permanent"
    client = stats.Fact(stats.Kind.CLIENT, key="c", at=T0)
    assert stats.group_of(client, stats.By.AGENCY) is None  # in the total only


def test_grouped_rows_and_the_total_cannot_give_away_a_small_group():
    log = Log()
    for _ in range(9):
        log.refer(at=T0)
    log.refer(at=T0, tracks=("return",))
    table = stats.tabulate(facts_of(log), by=stats.By.TRACK)
    by_group = {row["group"]: row for row in table["rows"]}
    # 10 in all; return has 1: legal_stay (9) is withheld too, so 10 - 9 gives nothing away.
    assert table["total"]["referrals"] == {"legal_stay": LT5, "return": LT5, "total": 10}
    assert by_group["return"]["referrals"] == {"legal_stay": None, "return": LT5, "total": LT5}
    # And the legal-stay row's 9, or the total row's 10 less it would give return away.
    assert by_group["legal_stay"]["referrals"] == {"legal_stay": LT5, "return": None, "total": LT5}


# ---------------------------------------------------------------- the route


def test_auditor_sees_outcome_figures_with_small_cells_suppressed(log, issuer):
    append(log, story().events)

    body = get_stats(log, issuer)

    assert body["from"] is None and body["to"] is None and body["by"] is None
    assert body["suppressed_below"] == 5
    assert body["rows"] == [body["total"]]
    assert body["total"] == {
        "group": "all",
        "clients_reached": 6,
        # return (2) is withheld; legal stay (6) too, or 8 - 6 would give return away.
        "referrals": {"legal_stay": LT5, "return": LT5, "total": 8},
        "accepted": 6,
        "rejected": LT5,
        "completed": {"permanent": LT5, "semi_permanent": LT5, "none": LT5, "total": 5},
        "consents_withdrawn": LT5,
        "median_days_to_acceptance": 3.5,
        "median_days_to_completion": 30.0,
    }


def both_tracks() -> Log:
    """6 legal-stay tracks accepted after 1..6 days, 5 return tracks after 2, 2, 2, 4, 6."""
    log = Log()
    for days in (1, 2, 3, 4, 5, 6):
        track_id = log.refer(at=T0)[0]
        log.zone_b("accept", track_id, at=T0 + timedelta(days=days))
    for days in (2, 2, 2, 4, 6):
        track_id = log.refer(at=T0, tracks=("return",), offices=["antwerp"])[0]
        log.zone_b("accept", track_id, at=T0 + timedelta(days=days), track="return")
    return log


def test_stats_by_track_show_figures_of_five_or_more_exactly(log, issuer):
    append(log, both_tracks().events)

    body = get_stats(log, issuer, by="track")

    assert body["by"] == "track"
    legal, ret = rows(body)["legal_stay"], rows(body)["return"]
    assert legal["referrals"] == {"legal_stay": 6, "return": None, "total": 6}
    assert ret["referrals"] == {"legal_stay": None, "return": 5, "total": 5}
    assert (legal["accepted"], ret["accepted"], body["total"]["accepted"]) == (6, 5, 11)
    assert legal["median_days_to_acceptance"] == 3.5
    assert ret["median_days_to_acceptance"] == 2.0
    assert body["total"]["median_days_to_acceptance"] == 3.0
    # A client has no track: in the total only. Nothing was rejected: 0 is withheld too.
    assert legal["clients_reached"] is None and body["total"]["clients_reached"] == LT5
    assert legal["rejected"] == ret["rejected"] == body["total"]["rejected"] == LT5


def test_stats_by_track_withhold_a_second_group_beside_a_small_one(log, issuer):
    append(log, story().events)

    body = get_stats(log, issuer, by="track")

    legal, ret = rows(body)["legal_stay"], rows(body)["return"]
    # Accepted: 5 legal stay, 1 return, 6 in all: 6 - 5 would give return's 1 away.
    assert (legal["accepted"], ret["accepted"], body["total"]["accepted"]) == (LT5, LT5, 6)
    # A median beside a withheld count would tell it is 5 or more.
    assert legal["median_days_to_acceptance"] is None
    assert body["total"]["median_days_to_acceptance"] == 3.5


def test_stats_by_agency_office_outcome_and_month(log, issuer):
    append(log, story().events)

    agencies = rows(get_stats(log, issuer, by="agency"))
    assert set(agencies) == {"immigration_office", "fedasil"}
    assert agencies["fedasil"]["consents_withdrawn"] == LT5
    assert agencies["fedasil"]["referrals"]["legal_stay"] is None
    assert agencies["immigration_office"]["clients_reached"] is None

    offices = rows(get_stats(log, issuer, by="office"))
    assert set(offices) == {"immigration_office/brussels", "fedasil/antwerp"}
    assert offices["fedasil/antwerp"]["consents_withdrawn"] is None  # a consent has no office

    outcomes = get_stats(log, issuer, by="outcome")
    assert set(rows(outcomes)) == {"legal_stay", "protection_procedure"}
    legal = rows(outcomes)["legal_stay"]
    assert legal["completed"] == {
        "permanent": LT5,
        "semi_permanent": None,
        "none": None,
        "total": LT5,
    }
    assert legal["accepted"] is None and legal["median_days_to_acceptance"] is None
    assert outcomes["total"]["completed"]["total"] == 5

    months = get_stats(log, issuer, by="month")
    # Completions after 30, 40 and 50 days fall in April.
    assert set(rows(months)) == {"2026-03", "2026-04"}
    assert rows(months)["2026-03"]["clients_reached"] == LT5  # April's 0 is withheld, so is this
    assert months["total"]["clients_reached"] == 6


def test_the_period_is_from_inclusive_to_exclusive(log, issuer):
    append(log, story().events)

    body = get_stats(log, issuer, **{"from": "2026-03-04", "to": "2026-03-07"})

    assert (body["from"], body["to"]) == ("2026-03-04", "2026-03-07")
    # Accepted after 2, 3 and 4 days; the one after 5 days (2026-03-07) is out; no registration.
    assert body["total"]["accepted"] == LT5
    assert body["total"]["clients_reached"] == LT5
    assert body["total"]["median_days_to_acceptance"] is None
    later = get_stats(log, issuer, **{"from": "2027-01-01"})["total"]
    assert later["referrals"] == {"legal_stay": LT5, "return": LT5, "total": LT5}


def test_a_period_has_its_own_figures_with_medians_from_referrals_before_it(log, issuer):
    april = Log()
    for days in (1, 2, 2, 3, 9):
        track_id = april.refer(at=T0, tracks=("return",))[0]  # routed in March
        april.zone_b("accept", track_id, at=T0 + timedelta(days=30 + days), track="return")
    append(log, [*story().events, *april.events])

    body = get_stats(log, issuer, **{"from": "2026-04-01", "to": "2026-05-01"})

    total = body["total"]
    assert total["accepted"] == 5
    assert total["median_days_to_acceptance"] == 32.0
    assert total["referrals"]["total"] == LT5  # referred in March
    assert total["completed"]["total"] == LT5  # the 3 completions of April


def test_the_period_is_filtered_in_sql_keeping_earlier_referrals_for_the_join(log):
    append(log, story().events)
    engine = log.app.state.runtime.engine
    with contextlib.contextmanager(session_scope)(engine) as session:
        found = repository.stats_records(
            session,
            types=stats.PERIOD_TYPES,
            join_types=stats.JOIN_TYPES,
            since="2026-03-05",
            until="2026-03-08",
        )
    assert {type_ for type_, _, _ in found} == {
        stats.CASE_ACCEPTED,
        stats.CONSENT_WITHDRAWN,
        stats.REFERRAL_CREATED,
    }
    assert all(time < "2026-03-08" for _, time, _ in found)
    assert all(time >= "2026-03-05" for type_, time, _ in found if type_ != stats.REFERRAL_CREATED)


def test_output_holds_codes_and_counts_never_ids(log, issuer):
    events = story()
    append(log, events.events)
    for by in (None, "agency", "office", "track", "outcome", "month"):
        text = log.get(
            "/v1/stats", params={"by": by} if by else {}, headers=issuer.headers(**AUDITOR)
        ).text
        assert not [i for i in events.ids if i in text]


@pytest.mark.parametrize("caller", [NGO_GHENT, ICAM_BRUSSELS])
def test_only_auditors_read_stats(log, issuer, caller):
    assert_problem(log.get("/v1/stats", headers=issuer.headers(**caller)), 403)


def test_stats_need_a_token(log):
    assert_problem(log.get("/v1/stats"), 401)


@pytest.mark.parametrize(
    "params",
    [
        {"by": "foo"},
        {"by": "client"},
        {"from": "2026-13-01"},
        {"to": "yesterday"},
        {"from": "2026-03-01", "to": "2026-03-01"},
        {"from": "2026-04-01", "to": "2026-03-01"},
    ],
)
def test_bad_stats_parameters_are_422_problems(log, issuer, params):
    response = log.get("/v1/stats", params=params, headers=issuer.headers(**AUDITOR))
    assert_problem(response, 422)


def test_extreme_dates_are_an_open_period_not_an_error(log, issuer):
    append(log, story().events)
    body = get_stats(log, issuer, **{"from": date.min.isoformat(), "to": date.max.isoformat()})
    assert body["total"]["accepted"] == 6
