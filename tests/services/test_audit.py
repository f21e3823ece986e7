"""Audit service (oversight): every service's audit records in one append-only hash chain that
auditors — and only auditors — can read and verify, and that shows a changed or removed entry."""

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
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
from twoline_audit import domain
from twoline_audit.app import SPEC, create_app
from twoline_audit.config import Settings
from twoline_audit.consumers import BINDINGS, on_audit_record
from twoline_audit.models import AuditEntry
from twoline_intake.app import create_app as create_intake_app
from twoline_intake.config import Settings as IntakeSettings
from twoline_shared.db import session_scope
from twoline_shared.events import Event, new_event
from twoline_shared.inbox import InboxConsumer, InboxRecord
from twoline_shared.outbox import OutboxMessage

CANARY = "CANARY-91c2 Mariam Diallo"


# ---------------------------------------------------------------- helpers


def audit_record(n: int = 0, **data: Any) -> Event:
    """An audit record as `twoline_shared.audit.record_audit` makes them: ids and codes."""
    fields = {
        "action": "read",
        "resource_type": "case",
        "resource_id": str(uuid.uuid4()),
        "outcome": "success",
        "actor": f"icam_coach-{n}",
        "roles": ["icam_coach"],
        "org": None,
        "agency": "immigration_office",
        "office": "brussels",
        "trace_id": None,
        **data,
    }
    return new_event(
        source="twoline/case-resolution",
        type=f"audit.case-resolution.{fields['resource_type']}.{fields['action']}",
        subject=fields["resource_id"],
        **fields,
    )


@pytest.fixture
def log(service_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The audit app on a fresh database, without NATS."""
    with running(create_app(service_settings(Settings, "audit"))) as client:
        yield client


def feed(client: TestClient, *events: Event) -> None:
    """Apply events through the consumer's handlers, each in its own committed transaction."""
    handlers = BINDINGS[0].handlers
    for event in events:
        with contextlib.contextmanager(session_scope)(client.app.state.runtime.engine) as session:
            handler = handlers.get(event.type)
            assert handler is not None
            handler(session, event)


def entries(client: TestClient, issuer: Any, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/log/entries", params=params, headers=issuer.headers(**AUDITOR))
    assert response.status_code == 200, response.text
    return response.json()


def verify(client: TestClient, issuer: Any) -> dict[str, Any]:
    response = client.get("/v1/log/verify", headers=issuer.headers(**AUDITOR))
    assert response.status_code == 200, response.text
    return response.json()


def execute(client: TestClient, sql: str, **params: Any) -> None:
    """Tamper with the stored log behind the service's back, as a database admin could."""
    with client.app.state.runtime.engine.begin() as connection:
        connection.execute(text(sql), params)


# ---------------------------------------------------------------- the chain


def test_empty_log_verifies(log, issuer):
    assert verify(log, issuer) == {
        "ok": True,
        "size": 0,
        "head_hash": None,
        "first_bad_index": None,
    }
    assert entries(log, issuer) == {"data": [], "count": 0}


def test_records_are_chained_in_arrival_order_and_the_chain_verifies(log, issuer):
    records = [audit_record(n) for n in range(3)]

    feed(log, *records)

    body = entries(log, issuer)
    assert body["count"] == 3
    assert [e["index"] for e in body["data"]] == [0, 1, 2]
    assert [e["event_id"] for e in body["data"]] == [r.id for r in records]
    for entry, record in zip(body["data"], records, strict=True):
        # Exactly what the record carried, nothing added.
        assert (entry["type"], entry["source"], entry["time"]) == (
            record.type,
            record.source,
            record.time,
        )
        assert entry["data"] == record.data
    assert body["data"][0]["prev_hash"] == domain.GENESIS
    for before, after in zip(body["data"], body["data"][1:], strict=False):
        assert after["prev_hash"] == before["entry_hash"]
    assert verify(log, issuer) == {
        "ok": True,
        "size": 3,
        "head_hash": body["data"][2]["entry_hash"],
        "first_bad_index": None,
    }


def test_chain_grows_and_the_head_moves(log, issuer):
    feed(log, audit_record(0))
    first = verify(log, issuer)
    feed(log, audit_record(1))
    second = verify(log, issuer)

    assert (first["size"], second["size"]) == (1, 2)
    assert first["ok"] and second["ok"]
    assert second["head_hash"] != first["head_hash"]
    assert entries(log, issuer)["data"][1]["prev_hash"] == first["head_hash"]


def test_entry_hash_is_recomputable_from_the_entry_alone(log, issuer):
    feed(log, audit_record(0), audit_record(1))
    for entry in entries(log, issuer)["data"]:
        fields = {k: entry[k] for k in ("index", "event_id", "type", "source", "time", "data")}
        assert domain.entry_hash(prev_hash=entry["prev_hash"], **fields) == entry["entry_hash"]


def test_records_of_every_service_and_type_are_appended(log, issuer):
    intake = new_event(
        source="twoline/intake",
        type="audit.intake.client.create",
        subject="C-1",
        action="create",
        resource_type="client",
        resource_id="C-1",
        categories=["identity", "needs"],
    )
    future = new_event(source="twoline/new", type="audit.new-service.thing.frobnicate")

    feed(log, intake, future, audit_record(0))

    assert [e["type"] for e in entries(log, issuer)["data"]] == [
        "audit.intake.client.create",
        "audit.new-service.thing.frobnicate",
        "audit.case-resolution.case.read",
    ]
    assert verify(log, issuer)["ok"]


def test_handler_mapping_answers_every_audit_type_and_nothing_else():
    handlers = BINDINGS[0].handlers
    for event_type in ("audit.intake.client.create", "audit.x.y.z", "audit.referral.referral.read"):
        assert handlers.get(event_type) is on_audit_record
        assert event_type in handlers
    for event_type in ("secondline.case.track.accepted", "firstline.intake.client.registered"):
        assert handlers.get(event_type) is None
        assert event_type not in handlers
    assert (BINDINGS[0].stream, BINDINGS[0].durable, SPEC.publishes) == ("AUDIT", "audit", {})


def test_a_redelivered_record_is_appended_once(log, issuer):
    # Through the kernel's own inbox: it looks the handler up with `handlers.get(event.type)`.
    engine = log.app.state.runtime.engine
    consumer = InboxConsumer(engine=engine, binding=BINDINGS[0], js=None)  # type: ignore[arg-type]
    record, stray = audit_record(0), new_event(source="x", type="secondline.case.track.accepted")

    assert consumer.apply(record) is True
    assert consumer.apply(record) is False
    assert consumer.apply(stray) is False

    assert [e["event_id"] for e in entries(log, issuer)["data"]] == [record.id]
    with Session(engine) as session:
        outcomes = {r.event_id: r.outcome for r in session.exec(select(InboxRecord)).all()}
    assert outcomes == {record.id: "applied", stray.id: "ignored"}


def test_entries_page_from_an_index(log, issuer):
    feed(log, *(audit_record(n) for n in range(5)))

    page = entries(log, issuer, start=2, limit=2)

    assert page["count"] == 5
    assert [e["index"] for e in page["data"]] == [2, 3]
    assert entries(log, issuer, start=9) == {"data": [], "count": 5}
    headers = issuer.headers(**AUDITOR)
    for query in ("limit=0", "start=-1", "limit=100000", "start=abc"):
        response = log.get(f"/v1/log/entries?{query}", headers=headers)
        assert_problem(response, 422, "validation")


# ---------------------------------------------------------------- tampering is seen


def test_changed_data_is_found_at_its_index(log, issuer):
    feed(log, *(audit_record(n) for n in range(4)))

    execute(
        log,
        'UPDATE audit_entry SET data = :data WHERE "index" = 1',
        data='{"action": "read", "actor": "somebody-else"}',
    )

    assert verify(log, issuer) == {
        "ok": False,
        "size": 4,
        "head_hash": entries(log, issuer)["data"][3]["entry_hash"],
        "first_bad_index": 1,
    }


@pytest.mark.parametrize("column", ["type", "source", "time", "event_id"])
def test_any_changed_field_is_found(log, issuer, column):
    feed(log, *(audit_record(n) for n in range(3)))

    execute(log, f"UPDATE audit_entry SET {column} = {column} || 'x' WHERE \"index\" = 2")

    result = verify(log, issuer)
    assert (result["ok"], result["first_bad_index"]) == (False, 2)


def test_deleted_entry_is_found_where_the_gap_starts(log, issuer):
    feed(log, *(audit_record(n) for n in range(4)))

    execute(log, 'DELETE FROM audit_entry WHERE "index" = 1')

    result = verify(log, issuer)
    assert (result["ok"], result["size"], result["first_bad_index"]) == (False, 3, 1)


def test_deleted_first_entry_is_found(log, issuer):
    feed(log, *(audit_record(n) for n in range(2)))

    execute(log, 'DELETE FROM audit_entry WHERE "index" = 0')

    result = verify(log, issuer)
    assert (result["ok"], result["first_bad_index"]) == (False, 0)


def test_rehashed_entry_breaks_the_next_link(log, issuer):
    # A tamperer who also recomputes the changed entry's own hash is caught by the next entry.
    feed(log, *(audit_record(n) for n in range(3)))
    victim = entries(log, issuer)["data"][1]
    forged = {**victim["data"], "actor": "somebody-else"}
    fields = {k: victim[k] for k in ("index", "event_id", "type", "source", "time")}
    forged_hash = domain.entry_hash(prev_hash=victim["prev_hash"], data=forged, **fields)
    with Session(log.app.state.runtime.engine) as session:
        row = session.get(AuditEntry, 1)
        assert row is not None
        row.data, row.entry_hash = forged, forged_hash
        session.add(row)
        session.commit()

    result = verify(log, issuer)
    assert (result["ok"], result["first_bad_index"]) == (False, 2)


def test_unparseable_data_is_reported_not_a_crash(log, issuer):
    feed(log, *(audit_record(n) for n in range(2)))
    if log.app.state.runtime.engine.dialect.name != "sqlite":
        pytest.skip("Postgres refuses invalid JSON in a json column")

    execute(log, "UPDATE audit_entry SET data = 'not json {' WHERE \"index\" = 0")

    assert entries(log, issuer)["data"][0]["data"] is None
    result = verify(log, issuer)
    assert (result["ok"], result["first_bad_index"]) == (False, 0)


def test_appending_after_tampering_does_not_hide_it(log, issuer):
    feed(log, *(audit_record(n) for n in range(2)))
    execute(log, 'UPDATE audit_entry SET data = \'{"x": 1}\' WHERE "index" = 0')

    feed(log, audit_record(2))

    result = verify(log, issuer)
    assert (result["ok"], result["size"], result["first_bad_index"]) == (False, 3, 0)


# ---------------------------------------------------------------- who may read it


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
def test_only_auditors_read_the_log(log, issuer, who):
    feed(log, audit_record(0))
    headers = issuer.headers(**who)

    for path in ("/v1/log/entries", "/v1/log/verify"):
        assert_problem(log.get(path, headers=headers), 403, "forbidden")


def test_no_token_is_401(log):
    for path in ("/v1/log/entries", "/v1/log/verify"):
        assert_problem(log.get(path), 401, "unauthorized")
        assert_problem(log.get(path, headers={"Authorization": "Bearer x.y.z"}), 401)


# ---------------------------------------------------------------- hashing (no I/O)


def test_hash_depends_on_content_and_predecessor_not_on_key_order():
    base = {"index": 0, "event_id": "e", "type": "audit.a.b.c", "source": "s", "time": "t"}
    one = domain.entry_hash(prev_hash=domain.GENESIS, data={"a": 1, "b": [1, 2]}, **base)
    same = domain.entry_hash(prev_hash=domain.GENESIS, data={"b": [1, 2], "a": 1}, **base)
    assert one == same and len(one) == 64
    assert one != domain.entry_hash(prev_hash="1" * 64, data={"a": 1, "b": [1, 2]}, **base)
    assert one != domain.entry_hash(prev_hash=domain.GENESIS, data={"a": 1, "b": [2, 1]}, **base)
    assert one != domain.entry_hash(
        prev_hash=domain.GENESIS, data={"a": 1, "b": [1, 2]}, **{**base, "index": 1}
    )


# ---------------------------------------------------------------- through the real NATS server


@pytest.mark.nats
def test_intake_audit_record_reaches_the_verified_log(service_settings, nats_server, issuer):
    intake_app = create_intake_app(service_settings(IntakeSettings, "intake"))
    audit_app = create_app(service_settings(Settings, "audit"))
    with running(intake_app) as intake, running(audit_app) as audit:
        for client in (intake, audit):
            eventually(lambda c=client: c.get("/readyz").status_code == 200, "the NATS links")

        response = intake.post(
            "/v1/clients",
            json={"display_name": CANARY, "needs": ["shelter"], "case_notes": CANARY},
            headers=issuer.headers(**NGO_GHENT),
        )
        assert response.status_code == 201, response.text
        client_ref = response.json()["client_ref"]

        def logged() -> list[dict[str, Any]]:
            data = entries(audit, issuer)["data"]
            return [e for e in data if e["type"] == "audit.intake.client.create"]

        [entry] = eventually(logged, "the AUDIT/audit consumer to append intake's record")
        assert entry["source"] == "twoline/intake"
        assert entry["data"]["resource_id"] == client_ref
        assert entry["data"]["org"] == "ngo-ghent"
        assert entry["data"]["categories"] == ["case_notes", "identity", "needs"]
        # F8: the record holds ids and codes, never what the caseworker typed.
        assert CANARY not in str(entries(audit, issuer)) and "Mariam" not in str(
            entries(audit, issuer)
        )
        result = verify(audit, issuer)
        assert result["ok"] and result["size"] >= 1
        assert result["head_hash"] == entries(audit, issuer)["data"][-1]["entry_hash"]

        # Intake's audit row went out through the AUDIT service import and was marked sent.
        def intake_audit_sent() -> bool:
            with Session(intake.app.state.runtime.engine) as session:
                rows = session.exec(
                    select(OutboxMessage).where(OutboxMessage.subject.startswith("audit."))  # type: ignore[attr-defined]
                ).all()
            return bool(rows) and all(r.sent_at is not None for r in rows)

        eventually(intake_audit_sent, "intake's relay to mark its audit record sent")
        # The audit service itself publishes nothing.
        with Session(audit.app.state.runtime.engine) as session:
            assert session.exec(select(OutboxMessage)).all() == []
