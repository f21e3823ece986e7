"""Service calls over NATS request/reply, against the project's own nats-server and config."""

import asyncio

import pytest
from sqlmodel import Field, Session, SQLModel, select

from twoline.natsserver import credential
from twoline_shared.broker import connect
from twoline_shared.calls import Responder, answer, call, raise_for_reply, serve
from twoline_shared.db import create_db_engine
from twoline_shared.errors import Invalid, NotFound, Unavailable

pytestmark = pytest.mark.nats

SUBJECT = "svc.intake.disclosure"


class CallLog(SQLModel, table=True):
    """A stand-in for the responder's own effect (e.g. its audit record)."""

    __tablename__ = "kernel_test_call_log"
    id: int | None = Field(default=None, primary_key=True)
    client_ref: str


@pytest.fixture
def engine(make_database_url):
    engine = create_db_engine(make_database_url("calls"))
    SQLModel.metadata.create_all(engine, tables=[CallLog.__table__])  # type: ignore[list-item]
    yield engine
    engine.dispose()


def handler(session: Session, payload: dict) -> dict:
    if payload.get("client_ref") == "missing":
        raise NotFound("No such client.")
    if payload.get("client_ref") == "boom":
        raise RuntimeError("secret-canary-in-exception")
    session.add(CallLog(client_ref=payload["client_ref"]))
    return {"client_ref": payload["client_ref"], "echo": payload.get("categories", [])}


async def until_answered(nc, tries: int = 50) -> None:
    """The server may take a moment to route a fresh subscription's interest to another
    connection (seen on nats-server 2.15.1): ask with a probe that has no effect until answered."""
    for _ in range(tries):
        try:
            await call(nc, SUBJECT, {"client_ref": "missing"}, wait=1)
        except NotFound:
            return
        except Unavailable:
            await asyncio.sleep(0.1)
    pytest.fail("the responder never answered")


@pytest.fixture
async def links(nats_server, engine):
    """intake answering SUBJECT; referral-fl asking; consent (not allowed to ask) on the side."""
    names = ("intake", "referral-fl", "consent")
    conns = {
        n: await connect(nats_server.url, credential(n, nats_server.passwords), name=n)
        for n in names
    }
    await serve(conns["intake"], Responder(SUBJECT, handler), queue="intake", engine=engine)
    await conns["intake"].flush()
    await until_answered(conns["referral-fl"])
    yield conns
    for nc in conns.values():
        await nc.close()


async def test_a_call_returns_the_responders_data_and_commits_its_effect(links, engine):
    data = await call(
        links["referral-fl"], SUBJECT, {"client_ref": "C-1", "categories": ["needs"]}, wait=5
    )
    assert data == {"client_ref": "C-1", "echo": ["needs"]}
    with Session(engine) as session:
        assert [r.client_ref for r in session.exec(select(CallLog)).all()] == ["C-1"]


async def test_a_responder_error_is_raised_again_on_the_callers_side(links, engine):
    with pytest.raises(NotFound) as raised:
        await call(links["referral-fl"], SUBJECT, {"client_ref": "missing"}, wait=5)
    assert raised.value.detail == "No such client."


async def test_a_crashing_handler_replies_503_without_its_message_and_rolls_back(
    links, engine, caplog
):
    with pytest.raises(Unavailable):
        await call(links["referral-fl"], SUBJECT, {"client_ref": "boom"}, wait=5)
    assert "secret-canary-in-exception" not in caplog.text
    with Session(engine) as session:
        assert session.exec(select(CallLog)).all() == []


async def test_a_user_the_config_does_not_allow_cannot_call(links, engine):
    # consent is in the same account but may not publish on svc.intake.disclosure.
    with pytest.raises(Unavailable):
        await call(links["consent"], SUBJECT, {"client_ref": "C-2"}, wait=1)
    with Session(engine) as session:
        assert session.exec(select(CallLog)).all() == []


async def test_calls_are_never_stored_in_a_stream(links, nats_server):
    await call(links["referral-fl"], SUBJECT, {"client_ref": "C-3"}, wait=5)
    admin = await connect(
        nats_server.url, credential("fl-admin", nats_server.passwords), name="scan"
    )
    try:
        info = await admin.jetstream().stream_info("FIRSTLINE")
        assert info.state.messages == 0
    finally:
        await admin.close()


async def test_nobody_answering_is_503(nats_server):
    nc = await connect(
        nats_server.url, credential("referral-fl", nats_server.passwords), name="lonely"
    )
    try:
        with pytest.raises(Unavailable):
            await call(nc, SUBJECT, {"client_ref": "C-4"}, wait=1)
    finally:
        await nc.close()
    with pytest.raises(Unavailable):
        await call(None, SUBJECT, {}, wait=1)


def test_a_payload_that_is_not_an_object_is_refused_as_invalid(engine):
    for raw in (b"not json", b"[1, 2]"):
        reply = answer(engine, handler, raw)
        assert reply["ok"] is False and reply["status"] == 422
        with pytest.raises(Invalid):
            raise_for_reply(reply, subject=SUBJECT)


def test_a_malformed_reply_is_503():
    for reply in ({}, {"ok": True, "data": [1]}, {"ok": False, "status": 500}):
        with pytest.raises(Unavailable):
            raise_for_reply(reply, subject=SUBJECT)


async def test_replicas_in_one_queue_group_share_the_calls(links, nats_server, engine):
    second = await connect(
        nats_server.url, credential("intake", nats_server.passwords), name="intake-2"
    )
    try:
        await serve(second, Responder(SUBJECT, handler), queue="intake", engine=engine)
        await second.flush()
        refs = [f"C-q{i}" for i in range(20)]
        await asyncio.gather(
            *(call(links["referral-fl"], SUBJECT, {"client_ref": r}, wait=5) for r in refs)
        )
    finally:
        await second.close()
    with Session(engine) as session:
        # Each call answered exactly once, whichever replica took it.
        assert sorted(r.client_ref for r in session.exec(select(CallLog)).all()) == sorted(refs)
