"""Idempotent consumers against the project's own nats-server: each event applied exactly once."""

import asyncio
import contextlib

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlmodel import Field, Session, SQLModel, select

from twoline.natsserver import credential
from twoline_shared.broker import connect
from twoline_shared.db import create_db_engine
from twoline_shared.errors import Invalid
from twoline_shared.events import Event, encode, headers_for, new_event
from twoline_shared.inbox import ConsumerBinding, DeadLetter, InboxConsumer, InboxRecord

pytestmark = pytest.mark.nats

TYPE = "firstline.intake.client.registered"


class Tally(SQLModel, table=True):
    """The handler's effect: one row per client_ref, counting applications."""

    __tablename__ = "kernel_test_tally"
    client_ref: str = Field(primary_key=True)
    applied: int = 0


def count_client(session: Session, event: Event) -> None:
    row = session.get(Tally, event.data["client_ref"]) or Tally(client_ref=event.data["client_ref"])
    row.applied += 1
    session.add(row)


@pytest.fixture
def engine(make_database_url):
    engine = create_db_engine(make_database_url("inbox"))
    SQLModel.metadata.create_all(
        engine,
        tables=[InboxRecord.__table__, DeadLetter.__table__, Tally.__table__],  # type: ignore[list-item]
    )
    yield engine
    engine.dispose()


@pytest.fixture
async def consent_nc(nats_server):
    """The consent service's own user: it may fetch from FIRSTLINE/consent and nothing else."""
    nc = await connect(nats_server.url, credential("consent", nats_server.passwords), name="c")
    yield nc
    await nc.close()


@pytest.fixture
async def publisher(nats_server):
    nc = await connect(nats_server.url, credential("intake", nats_server.passwords), name="i")

    async def publish(event: Event, msg_id: str | None = None, payload: bytes | None = None):
        headers = headers_for(event)
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        await nc.jetstream().publish(event.type, payload or encode(event), headers=headers)

    yield publish
    await nc.close()


def registered(client_ref: str) -> Event:
    return new_event(source="test", type=TYPE, client_ref=client_ref, org="ngo-ghent")


def make_consumer(engine, nc, handlers=None, **kwargs) -> InboxConsumer:
    binding = ConsumerBinding(
        stream="FIRSTLINE", durable="consent", handlers=handlers or {TYPE: count_client}
    )
    return InboxConsumer(engine=engine, binding=binding, js=nc.jetstream(), **kwargs)


@contextlib.asynccontextmanager
async def consuming(consumer: InboxConsumer):
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(predicate):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def tally(engine, client_ref: str) -> int:
    with Session(engine) as session:
        row = session.get(Tally, client_ref)
        return row.applied if row else 0


def inbox_rows(engine) -> list[InboxRecord]:
    with Session(engine) as session:
        return list(session.exec(select(InboxRecord)).all())


async def test_event_delivered_twice_is_applied_once(engine, consent_nc, publisher):
    event = registered("C-TWICE")
    # Two different Msg-Ids get past broker de-duplication: the inbox must catch the second.
    await publisher(event, msg_id="first")
    await publisher(event, msg_id="second")
    after = registered("C-AFTER")
    await publisher(after)
    consumer = make_consumer(engine, consent_nc)
    async with consuming(consumer):
        await until(lambda: tally(engine, "C-AFTER") == 1)
    assert tally(engine, "C-TWICE") == 1
    assert sorted(r.event_id for r in inbox_rows(engine)) == sorted([event.id, after.id])


async def test_redelivered_event_after_commit_is_acked_without_second_effect(
    engine, consent_nc, publisher
):
    event = registered("C-REDELIVER")
    consumer = make_consumer(engine, consent_nc)
    assert await asyncio.to_thread(consumer.apply, event) is True
    assert await asyncio.to_thread(consumer.apply, event) is False
    assert tally(engine, "C-REDELIVER") == 1


async def test_consumer_crashing_before_commit_gets_the_event_again_and_applies_it(
    engine, nats_server, consent_nc, publisher
):
    # A short ack_wait so the broker redelivers what the dead consumer never acked.
    admin = await connect(nats_server.url, credential("fl-admin", nats_server.passwords), name="a")
    await admin.jetstream().add_consumer(
        "FIRSTLINE",
        ConsumerConfig(
            durable_name="consent",
            filter_subjects=["firstline.intake.>"],
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=1.0,
            max_ack_pending=1000,
        ),
    )
    await admin.close()

    class ProcessDied(BaseException):
        """Not an Exception: nothing in the consumer catches it, like a killed process."""

    def die_mid_transaction(session: Session, event: Event) -> None:
        count_client(session, event)
        session.flush()  # the effect is written, but never committed
        raise ProcessDied

    await publisher(registered("C-CRASH"))
    dying = make_consumer(engine, consent_nc, handlers={TYPE: die_mid_transaction})
    task = asyncio.create_task(dying.run())
    with contextlib.suppress(ProcessDied, asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)
    assert tally(engine, "C-CRASH") == 0 and inbox_rows(engine) == []

    restarted = make_consumer(engine, consent_nc)
    async with consuming(restarted):
        await until(lambda: tally(engine, "C-CRASH") == 1)
    assert len(inbox_rows(engine)) == 1


async def test_failing_handler_is_retried_then_applied_once(engine, consent_nc, publisher):
    calls = {"n": 0}

    def flaky(session: Session, event: Event) -> None:
        calls["n"] += 1
        count_client(session, event)
        if calls["n"] == 1:
            raise RuntimeError("transient failure")

    await publisher(registered("C-FLAKY"))
    consumer = make_consumer(engine, consent_nc, handlers={TYPE: flaky})
    async with consuming(consumer):
        await until(lambda: tally(engine, "C-FLAKY") == 1)
    assert calls["n"] == 2  # the failed attempt left no effect; the retry applied it once


async def test_handler_failing_every_time_is_dead_lettered_after_max_deliver(
    engine, consent_nc, publisher
):
    def broken(session: Session, event: Event) -> None:
        raise ValueError("bug")

    event = registered("C-POISON")
    await publisher(event)
    consumer = make_consumer(engine, consent_nc, handlers={TYPE: broken}, max_deliver=2)
    async with consuming(consumer):
        await until(lambda: _dead(engine), timeout=15)
    letter = _dead(engine)[0]
    assert (letter.event_id, letter.error) == (event.id, "ValueError")
    assert inbox_rows(engine) == []


async def test_undecodable_message_is_dead_lettered_not_retried(engine, consent_nc, publisher):
    await publisher(registered("C-X"), msg_id="garbage", payload=b"not json")
    await publisher(registered("C-GOOD"))
    consumer = make_consumer(engine, consent_nc)
    async with consuming(consumer):
        await until(lambda: tally(engine, "C-GOOD") == 1)
    assert [d.error for d in _dead(engine)] == ["undecodable message"]


async def test_event_type_without_handler_is_recorded_as_ignored(engine, consent_nc, publisher):
    other = new_event(source="test", type="firstline.intake.contact.logged", client_ref="C-1")
    await publisher(other)
    await publisher(registered("C-NEXT"))
    consumer = make_consumer(engine, consent_nc)
    async with consuming(consumer):
        await until(lambda: tally(engine, "C-NEXT") == 1)
    outcomes = {r.event_type: r.outcome for r in inbox_rows(engine)}
    assert outcomes == {"firstline.intake.contact.logged": "ignored", TYPE: "applied"}


def _dead(engine) -> list[DeadLetter]:
    with Session(engine) as session:
        return list(session.exec(select(DeadLetter)).all())


async def test_handler_rejecting_the_event_as_invalid_dead_letters_it_without_retry(
    engine, consent_nc, publisher
):
    calls = {"n": 0}

    def strict(session: Session, event: Event) -> None:
        calls["n"] += 1
        raise Invalid("event breaks its contract")

    await publisher(registered("C-BAD"))
    consumer = make_consumer(engine, consent_nc, handlers={TYPE: strict})
    async with consuming(consumer):
        await until(lambda: _dead(engine))
    assert calls["n"] == 1
    assert _dead(engine)[0].error == "Invalid"


def test_wildcard_handler_keys_match_types_below_them_and_exact_keys_win():
    def a(session, event): ...
    def b(session, event): ...
    def c(session, event): ...

    binding = ConsumerBinding(
        stream="S", durable="d", handlers={"audit.>": a, "audit.intake.>": b, "audit.x.y": c}
    )
    assert binding.handler_for("audit.intake.client.create") is b
    assert binding.handler_for("audit.consent.consent.read") is a
    assert binding.handler_for("audit.x.y") is c
    assert binding.handler_for("auditx.y") is None
    assert binding.handler_for("firstline.intake.client.registered") is None


async def test_consumer_loop_ends_on_stop_without_being_cancelled(engine, consent_nc):
    consumer = make_consumer(engine, consent_nc)
    consumer.fetch_timeout = 0.2
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.5)  # idle fetches time out and the loop goes round
    consumer.stopping = True
    await asyncio.wait_for(task, timeout=5)  # returns by itself: no cancel needed
    assert task.done() and not task.cancelled()
