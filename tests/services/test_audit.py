"""Audit service (oversight): every service's audit records in one append-only hash chain that
auditors — and only auditors — can read and verify, and that shows a changed or removed entry."""

import contextlib
import hashlib
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
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
from twoline_audit.models import AuditEntry, AuditTreeNode
from twoline_intake.app import create_app as create_intake_app
from twoline_intake.config import Settings as IntakeSettings
from twoline_shared.db import session_scope
from twoline_shared.errors import Invalid
from twoline_shared.events import Event, decode, new_event
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
def log(service_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[TestClient]:
    """The audit app on a fresh database, without NATS, its signing key in a temp dir."""
    settings = service_settings(Settings, "audit", signing_key_path=tmp_path / "signing-key.pem")
    with running(create_app(settings)) as client:
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


@pytest.mark.parametrize(
    "envelope",
    [
        b'{"specversion": "1.0", "id": "a-1", "source": "/x", "type": "audit.x.y.read", "data": [1]}',
        b'{"specversion": "1.0", "id": "a-2", "source": "/x", "type": "audit.x.y.read"}',
        b'{"specversion": "1.0", "id": "a-3", "source": "/x", "type": "audit.x.y.read",'
        b' "time": "2026-01-01T00:00:00Z", "data_base64": "AAE="}',
    ],
    ids=["list-data", "no-time-no-data", "binary-data"],
)
def test_a_valid_cloudevent_that_is_no_audit_record_is_refused_and_not_appended(
    log, issuer, envelope
):
    """The kernel accepts every spec-valid envelope; the audit log only records of fields."""
    event = decode(envelope)
    with pytest.raises(Invalid):  # the inbox dead-letters it at once (PERMANENT)
        feed(log, event)
    assert entries(log, issuer)["count"] == 0


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

LOG_ROUTES = (
    "/v1/log/entries",
    "/v1/log/verify",
    "/v1/log/checkpoint",
    "/v1/log/public-key",
    "/v1/log/proofs/inclusion/0",
    "/v1/log/proofs/consistency?first=1&second=1",
)


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

    for path in LOG_ROUTES:
        assert_problem(log.get(path, headers=headers), 403, "forbidden")


def test_no_token_is_401(log):
    for path in LOG_ROUTES:
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


# ---------------------------------------------------------------- the Merkle tree (no I/O)

LEAVES = [domain.leaf_hash(bytes([n])) for n in range(8)]
N = domain.node_hash


def test_leaf_and_node_hashes_are_domain_separated():
    assert domain.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert domain.node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()
    assert domain.merkle_root([]) == hashlib.sha256(b"").digest()


def test_roots_of_small_trees_split_at_the_largest_power_of_two():
    a, b, c, d, e, f, g, h = LEAVES
    ab, cd, ef, gh = N(a, b), N(c, d), N(e, f), N(g, h)
    abcd = N(ab, cd)
    expected = {
        1: a,
        2: ab,
        3: N(ab, c),
        4: abcd,
        5: N(abcd, e),
        6: N(abcd, ef),
        7: N(abcd, N(ef, g)),
        8: N(abcd, N(ef, gh)),
    }
    for size, root in expected.items():
        assert domain.merkle_root(LEAVES[:size]) == root, size


def test_inclusion_paths_are_rfc_6962s_examples():
    # RFC 6962 §2.1.3's tree of seven leaves d0..d6: a..f and j are leaves, g = (a, b),
    # h = (c, d), i = (e, f), k = (g, h), l = (i, j).
    a, b, c, d, e, f, j = LEAVES[:7]
    g, h, i = N(a, b), N(c, d), N(e, f)
    k, ll = N(g, h), N(i, j)
    seven = LEAVES[:7]
    assert domain.inclusion_path(0, seven) == [b, h, ll]
    assert domain.inclusion_path(3, seven) == [c, g, ll]
    assert domain.inclusion_path(4, seven) == [f, j, k]
    assert domain.inclusion_path(6, seven) == [i, k]
    assert domain.inclusion_path(0, seven[:1]) == []
    assert domain.consistency_proof(3, seven) == [c, d, g, ll]
    assert domain.consistency_proof(4, seven) == [ll]
    assert domain.consistency_proof(6, seven) == [i, j, k]
    assert domain.consistency_proof(7, seven) == []


def test_every_inclusion_proof_up_to_eight_verifies_and_nothing_else_does():
    other = domain.leaf_hash(b"other")
    for size in range(1, 9):
        tree = LEAVES[:size]
        root = domain.merkle_root(tree)
        for index in range(size):
            path = domain.inclusion_path(index, tree)
            valid = {
                "leaf_index": index,
                "tree_size": size,
                "leaf": tree[index],
                "proof": path,
                "root": root,
            }
            wrong: list[dict[str, Any]] = [
                {"leaf": other},
                {"root": other},
                {"leaf_index": index + 1},
                {"proof": [*path, other]},
            ]
            if size < 8:
                wrong.append(
                    {"tree_size": size + 1, "root": domain.merkle_root(LEAVES[: size + 1])}
                )
            if path:
                wrong += [{"proof": path[:-1]}, {"proof": [other, *path[1:]]}]
            if index > 0:
                wrong.append({"leaf_index": index - 1})

            assert domain.verify_inclusion(**valid), (index, size)
            for change in wrong:
                assert not domain.verify_inclusion(**(valid | change)), (index, size, change)
        for index in (-1, size):
            with pytest.raises(ValueError):
                domain.inclusion_path(index, tree)


def test_every_consistency_proof_up_to_eight_verifies_and_nothing_else_does():
    other = domain.leaf_hash(b"other")
    for second in range(1, 9):
        for first in range(1, second + 1):
            proof = domain.consistency_proof(first, LEAVES[:second])
            valid = {
                "first": first,
                "second": second,
                "proof": proof,
                "first_root": domain.merkle_root(LEAVES[:first]),
                "second_root": domain.merkle_root(LEAVES[:second]),
            }
            wrong: list[dict[str, Any]] = [
                {"first_root": other},
                {"second_root": other},
                {"proof": [*proof, other]},
            ]
            if proof:
                wrong += [{"proof": proof[:-1]}, {"proof": [other, *proof[1:]]}]
            if first < second:
                # A tree whose first `first` leaves differ is not an extension.
                changed = [other, *LEAVES[1:second]]
                wrong += [
                    {"second_root": domain.merkle_root(changed)},
                    {"first": second, "second": first},
                ]
                if second < 8:
                    bigger = domain.merkle_root(LEAVES[: second + 1])
                    wrong.append({"second": second + 1, "second_root": bigger})

            assert domain.verify_consistency(**valid), (first, second)
            for change in wrong:
                assert not domain.verify_consistency(**(valid | change)), (first, second, change)
    with pytest.raises(ValueError):
        domain.consistency_proof(0, LEAVES)
    with pytest.raises(ValueError):
        domain.consistency_proof(9, LEAVES)


def test_checkpoint_body_is_exactly_the_signed_note():
    body = domain.checkpoint_body(tree_size=3, root_hash=b"\x01" * 32, timestamp="T")
    assert body == b"twoline-audit\n3\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nT\n"


# ---------------------------------------------------------------- checkpoints and proofs


def get(client: TestClient, issuer: Any, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params or None, headers=issuer.headers(**AUDITOR))
    assert response.status_code == 200, response.text
    return response.json()


def leaves_of(data: list[dict[str, Any]]) -> list[bytes]:
    fields = ("index", "event_id", "type", "source", "time", "data")
    return [domain.leaf_hash(domain.entry_bytes(**{k: e[k] for k in fields})) for e in data]


def test_checkpoint_is_signed_over_the_root_of_the_entries(log, issuer, tmp_path):
    feed(log, *(audit_record(n) for n in range(5)))

    checkpoint = get(log, issuer, "/v1/log/checkpoint")
    key = get(log, issuer, "/v1/log/public-key")

    assert set(checkpoint) == {"tree_size", "root_hash", "timestamp", "signature", "key_id"}
    assert set(key) == {"key_id", "algorithm", "public_key", "pem"}
    assert (key["algorithm"], key["key_id"]) == ("Ed25519", checkpoint["key_id"])
    assert key["key_id"] == domain.key_id(domain.unb64(key["public_key"]))
    root = domain.merkle_root(leaves_of(entries(log, issuer)["data"]))
    assert (checkpoint["tree_size"], checkpoint["root_hash"]) == (5, domain.b64(root))
    body = domain.checkpoint_body(tree_size=5, root_hash=root, timestamp=checkpoint["timestamp"])
    public = domain.unb64(key["public_key"])
    signature = domain.unb64(checkpoint["signature"])
    assert domain.signature_valid(public_key=public, body=body, signature=signature)
    forged = domain.checkpoint_body(tree_size=4, root_hash=root, timestamp=checkpoint["timestamp"])
    assert not domain.signature_valid(public_key=public, body=forged, signature=signature)
    # The key is a 0600 file in the service's data, the same on the next start.
    path = tmp_path / "signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_empty_log_has_a_signed_checkpoint_of_the_empty_tree(log, issuer):
    checkpoint = get(log, issuer, "/v1/log/checkpoint")
    assert checkpoint["tree_size"] == 0
    assert checkpoint["root_hash"] == domain.b64(hashlib.sha256(b"").digest())


def test_signing_key_survives_a_restart(service_settings, tmp_path, issuer):
    path = tmp_path / "key.pem"
    ids = []
    for _ in range(2):
        settings = service_settings(Settings, "audit", signing_key_path=path)
        with running(create_app(settings)) as client:
            ids.append(get(client, issuer, "/v1/log/public-key")["key_id"])
    assert ids[0] == ids[1]


def test_every_entry_has_an_inclusion_proof_against_the_checkpoint(log, issuer):
    feed(log, *(audit_record(n) for n in range(6)))
    checkpoint = get(log, issuer, "/v1/log/checkpoint")
    root = domain.unb64(checkpoint["root_hash"])
    leaves = leaves_of(entries(log, issuer)["data"])

    for index in range(6):
        proof = get(log, issuer, f"/v1/log/proofs/inclusion/{index}")
        assert set(proof) == {"leaf_index", "tree_size", "leaf_hash", "audit_path"}
        assert (proof["leaf_index"], proof["tree_size"]) == (index, 6)
        assert proof["leaf_hash"] == domain.b64(leaves[index])
        path = [domain.unb64(h) for h in proof["audit_path"]]
        assert domain.verify_inclusion(
            leaf_index=index, tree_size=6, leaf=leaves[index], proof=path, root=root
        )
    # Against an older, smaller tree.
    proof = get(log, issuer, "/v1/log/proofs/inclusion/1", tree_size=3)
    path = [domain.unb64(h) for h in proof["audit_path"]]
    root3 = domain.merkle_root(leaves[:3])
    assert domain.verify_inclusion(
        leaf_index=1, tree_size=3, leaf=leaves[1], proof=path, root=root3
    )


def test_a_newer_checkpoint_is_consistent_with_an_older_one(log, issuer):
    feed(log, *(audit_record(n) for n in range(3)))
    older = get(log, issuer, "/v1/log/checkpoint")
    feed(log, *(audit_record(n) for n in range(3, 8)))
    newer = get(log, issuer, "/v1/log/checkpoint")

    proof = get(log, issuer, "/v1/log/proofs/consistency", first=3, second=8)

    assert (proof["first"], proof["second"]) == (3, 8)
    path = [domain.unb64(h) for h in proof["consistency_path"]]
    first_root, second_root = domain.unb64(older["root_hash"]), domain.unb64(newer["root_hash"])
    assert domain.verify_consistency(
        first=3, second=8, first_root=first_root, second_root=second_root, proof=path
    )
    assert not domain.verify_consistency(
        first=3, second=8, first_root=second_root, second_root=second_root, proof=path
    )
    same = get(log, issuer, "/v1/log/proofs/consistency", first=8, second=8)
    assert same["consistency_path"] == []


def test_entries_by_range(log, issuer):
    feed(log, *(audit_record(n) for n in range(5)))

    assert [e["index"] for e in entries(log, issuer, start=1, end=4)["data"]] == [1, 2, 3]
    assert [e["index"] for e in entries(log, issuer, start=3, end=99)["data"]] == [3, 4]
    assert [e["index"] for e in entries(log, issuer, start=0, end=4, limit=2)["data"]] == [0, 1]
    headers = issuer.headers(**AUDITOR)
    for query in ("start=3&end=3", "start=3&end=2", "end=0", "end=abc"):
        response = log.get(f"/v1/log/entries?{query}", headers=headers)
        assert_problem(response, 422)


def test_bad_proof_requests_are_404_or_422(log, issuer):
    feed(log, *(audit_record(n) for n in range(3)))
    headers = issuer.headers(**AUDITOR)

    def answer(path: str) -> int:
        response = log.get(path, headers=headers)
        assert_problem(response, response.status_code)
        return response.status_code

    assert answer("/v1/log/proofs/inclusion/3") == 404
    assert answer("/v1/log/proofs/inclusion/2?tree_size=2") == 404
    for path in (
        "/v1/log/proofs/inclusion/-1",
        "/v1/log/proofs/inclusion/abc",
        "/v1/log/proofs/inclusion/0?tree_size=0",
        "/v1/log/proofs/inclusion/0?tree_size=4",
        "/v1/log/proofs/consistency?first=0&second=2",
        "/v1/log/proofs/consistency?first=3&second=2",
        "/v1/log/proofs/consistency?first=1&second=4",
        "/v1/log/proofs/consistency?first=1",
        "/v1/log/proofs/consistency?first=x&second=2",
    ):
        assert answer(path) == 422, path


def test_changed_entry_no_longer_gives_its_included_leaf(log, issuer):
    feed(log, *(audit_record(n) for n in range(4)))
    execute(log, 'UPDATE audit_entry SET data = \'{"x": 1}\' WHERE "index" = 2')
    root = domain.unb64(get(log, issuer, "/v1/log/checkpoint")["root_hash"])
    leaves = leaves_of(entries(log, issuer)["data"])

    def included(index: int) -> bool:
        proof = get(log, issuer, f"/v1/log/proofs/inclusion/{index}")
        path = [domain.unb64(h) for h in proof["audit_path"]]
        return domain.verify_inclusion(
            leaf_index=index, tree_size=4, leaf=leaves[index], proof=path, root=root
        )

    assert [included(i) for i in range(4)] == [True, True, False, True]


def test_migration_gives_entries_logged_before_the_tree_their_leaf_hashes(make_database_url):
    from alembic import command
    from alembic.config import Config

    from twoline_shared.db import create_db_engine
    from twoline_shared.migrations import upgrade

    engine = create_db_engine(make_database_url("audit"))
    config = Config()
    config.set_main_option("script_location", str(SPEC.migrations))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    records = [audit_record(n) for n in range(3)]
    prev = domain.GENESIS
    with engine.begin() as connection:
        for index, record in enumerate(records):
            fields = {
                "index": index,
                "event_id": record.id,
                "type": record.type,
                "source": record.source,
                "time": record.time,
                "data": record.data,
            }
            digest = domain.entry_hash(prev_hash=prev, **fields)
            connection.execute(
                text(
                    'INSERT INTO audit_entry ("index", event_id, type, source, time, data, '
                    "prev_hash, entry_hash) VALUES (:index, :event_id, :type, :source, :time, "
                    ":data, :prev_hash, :entry_hash)"
                ),
                {**fields, "data": domain.canonical(record.data).decode(), "prev_hash": prev}
                | {"entry_hash": digest},
            )
            prev = digest

    upgrade(engine, SPEC.migrations)

    with Session(engine) as session:
        rows = session.exec(select(AuditEntry).order_by(AuditEntry.index)).all()  # type: ignore[arg-type]
    fields = ("index", "event_id", "type", "source", "time", "data")
    assert [r.leaf_hash for r in rows] == [
        domain.leaf_hash(domain.entry_bytes(**{k: getattr(r, k) for k in fields})).hex()
        for r in rows
    ]
    assert len(rows) == 3
    # Migration 0004 cached the perfect subtrees of the entries it found: here the first pair.
    with Session(engine) as session:
        nodes = session.exec(select(AuditTreeNode)).all()
    leaves = [bytes.fromhex(r.leaf_hash) for r in rows]
    assert [(n.level, n.position, n.hash) for n in nodes] == [
        (1, 0, domain.node_hash(leaves[0], leaves[1]).hex())
    ]
    engine.dispose()


def _naive_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH straight from its definition, to check the cached tree against."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k << 1 < len(leaves):
        k <<= 1
    return domain.node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def test_cached_perfect_subtrees_give_every_root_and_proof_of_the_whole_tree():
    """What appends store (each leaf's completed subtrees) answers roots, paths and consistency
    proofs for every size, equal to the tree built from all leaves."""
    leaves = [domain.leaf_hash(bytes([n])) for n in range(40)]
    stored: dict[tuple[int, int], bytes] = {}

    def perfect(level: int, position: int) -> bytes:
        return leaves[position] if level == 0 else stored[(level, position)]

    for index, leaf in enumerate(leaves):
        for level, position, hash_ in domain.parents_completed(index, leaf, perfect):
            size = 1 << level
            assert hash_ == _naive_root(leaves[position * size : (position + 1) * size])
            stored[(level, position)] = hash_
        n = index + 1
        mth = domain.range_hasher(perfect)
        assert domain.root_of(n, mth) == _naive_root(leaves[:n])
        for m in range(n):
            assert domain.path_of(m, n, mth) == domain.inclusion_path(m, leaves[:n])
            assert domain.verify_inclusion(
                leaf_index=m,
                tree_size=n,
                leaf=leaves[m],
                proof=domain.path_of(m, n, mth),
                root=_naive_root(leaves[:n]),
            )
        for first in range(1, n + 1):
            assert domain.verify_consistency(
                first=first,
                second=n,
                first_root=_naive_root(leaves[:first]),
                second_root=_naive_root(leaves[:n]),
                proof=domain.consistency_of(first, n, mth),
            )
    # A node per completed perfect subtree, and no other: 40 leaves complete 20+10+5+2+1.
    assert len(stored) == 38


def test_each_append_stores_the_subtrees_it_completes(log, issuer):
    feed(log, *(audit_record(n) for n in range(6)))

    with Session(log.app.state.runtime.engine) as session:
        nodes = {(n.level, n.position) for n in session.exec(select(AuditTreeNode)).all()}
    assert nodes == {(1, 0), (1, 1), (2, 0), (1, 2)}
    leaves = leaves_of(entries(log, issuer)["data"])
    checkpoint = get(log, issuer, "/v1/log/checkpoint")
    assert checkpoint["root_hash"] == domain.b64(_naive_root(leaves))
