"""Transactional outbox against the project's own nats-server: nothing lost, nothing doubled."""

import asyncio
import json

import pytest
from sqlmodel import Field, Session, SQLModel, select

from twoline.natsserver import credential
from twoline_shared.broker import connect
from twoline_shared.db import create_db_engine, session_scope
from twoline_shared.events import new_event
from twoline_shared.outbox import OutboxMessage, OutboxRelay, add_event

pytestmark = pytest.mark.nats

SUBJECT = "firstline.intake.client.registered"


class Widget(SQLModel, table=True):
    """A stand-in business table: the state change the event belongs to."""

    __tablename__ = "kernel_test_widget"
    id: int | None = Field(default=None, primary_key=True)
    name: str


@pytest.fixture
def engine(make_database_url):
    engine = create_db_engine(make_database_url("outbox"))
    SQLModel.metadata.create_all(
        engine,
        tables=[OutboxMessage.__table__, Widget.__table__],  # type: ignore[list-item]
    )
    yield engine
    engine.dispose()


@pytest.fixture
async def intake_js(nats_server):
    nc = await connect(nats_server.url, credential("intake", nats_server.passwords), name="t")
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def admin_js(nats_server):
    nc = await connect(nats_server.url, credential("fl-admin", nats_server.passwords), name="a")
    yield nc.jetstream()
    await nc.close()


def write_widget_with_event(engine, *, fail: bool = False) -> str:
    event = new_event(source="test", type=SUBJECT, subject="C-1", client_ref="C-1", org="o")
    try:
        for session in session_scope(engine):
            session.add(Widget(name="w"))
            add_event(session, event)
            if fail:
                raise RuntimeError("the state change failed")
    except RuntimeError:
        pass
    return event.id


async def stream_ids(admin_js) -> list[str]:
    """Event ids of every message in FIRSTLINE, read with the admin credential."""
    info = await admin_js.stream_info("FIRSTLINE")
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await admin_js.get_msg("FIRSTLINE", seq)
        ids.append(json.loads(msg.data)["id"])
    return ids


async def test_event_of_rolled_back_transaction_is_never_published(engine, intake_js, admin_js):
    write_widget_with_event(engine, fail=True)
    relay = OutboxRelay(engine, lambda subject: intake_js)
    assert await relay.drain_once() == 0
    with Session(engine) as session:
        assert session.exec(select(OutboxMessage)).all() == []
        assert session.exec(select(Widget)).all() == []
    assert await stream_ids(admin_js) == []


async def test_committed_event_is_published_once_and_marked_sent(engine, intake_js, admin_js):
    event_id = write_widget_with_event(engine)
    relay = OutboxRelay(engine, lambda subject: intake_js)
    assert await relay.drain_once() == 1
    assert await relay.drain_once() == 0
    assert await stream_ids(admin_js) == [event_id]
    with Session(engine) as session:
        row = session.exec(select(OutboxMessage)).one()
        assert row.sent_at is not None and row.claimed_by is None


class CrashAfterPublish(OutboxRelay):
    """A relay that dies after the broker acked but before the row was marked sent."""

    def mark_sent(self, seq: int) -> None:
        raise SystemExit("relay process killed")


async def test_relay_crash_between_publish_and_mark_sent_publishes_exactly_once(
    engine, intake_js, admin_js
):
    event_id = write_widget_with_event(engine)
    crashing = CrashAfterPublish(engine, lambda subject: intake_js, lease_seconds=0.3)
    with pytest.raises(SystemExit):
        await crashing.drain_once()
    with Session(engine) as session:
        assert session.exec(select(OutboxMessage)).one().sent_at is None
    await asyncio.sleep(0.4)  # the dead relay's lease runs out

    restarted = OutboxRelay(engine, lambda subject: intake_js)
    assert await restarted.drain_once() == 1
    assert await stream_ids(admin_js) == [event_id]  # the broker dropped the duplicate
    with Session(engine) as session:
        assert session.exec(select(OutboxMessage)).one().sent_at is not None


async def test_leased_rows_are_not_claimed_by_a_second_replica(engine, intake_js):
    write_widget_with_event(engine)
    write_widget_with_event(engine)
    first = OutboxRelay(engine, lambda subject: intake_js)
    second = OutboxRelay(engine, lambda subject: intake_js)
    assert len(first.claim()) == 2
    assert second.claim() == []


async def test_two_replicas_draining_together_publish_each_event_once(engine, intake_js, admin_js):
    ids = [write_widget_with_event(engine) for _ in range(40)]
    relays = [OutboxRelay(engine, lambda subject: intake_js, batch_size=5) for _ in range(2)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while (n := await relay.drain_once()) > 0:
            total += n
        return total

    counts = await asyncio.gather(*(drain(r) for r in relays))
    assert sum(counts) == 40  # every row published by exactly one relay
    assert sorted(await stream_ids(admin_js)) == sorted(ids)


async def test_publish_failure_keeps_the_row_and_a_later_round_sends_it(
    engine, nats_server, admin_js
):
    event_id = write_widget_with_event(engine)
    # consent may not publish on intake's subjects: the broker refuses, the row must stay.
    nc = await connect(nats_server.url, credential("consent", nats_server.passwords), name="c")
    try:
        refused = OutboxRelay(engine, lambda subject: nc.jetstream(), publish_timeout=1.0)
        assert await refused.drain_once() == 0
    finally:
        await nc.close()
    with Session(engine) as session:
        row = session.exec(select(OutboxMessage)).one()
        assert row.sent_at is None and row.attempts == 1 and row.last_error
        assert row.claimed_by is None  # released for the next round

    ok = await connect(nats_server.url, credential("intake", nats_server.passwords), name="i")
    try:
        assert await OutboxRelay(engine, lambda subject: ok.jetstream()).drain_once() == 1
    finally:
        await ok.close()
    assert await stream_ids(admin_js) == [event_id]


async def test_relay_loop_publishes_promptly_when_woken(engine, intake_js, admin_js):
    relay = OutboxRelay(engine, lambda subject: intake_js, poll_seconds=30)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.1)
        event_id = await asyncio.to_thread(write_widget_with_event, engine)
        relay.wake()
        for _ in range(50):
            if await stream_ids(admin_js):
                break
            await asyncio.sleep(0.1)
        assert await stream_ids(admin_js) == [event_id]  # well before the 30 s poll
    finally:
        task.cancel()


async def test_relay_loop_ends_on_stop_without_being_cancelled(engine, intake_js):
    relay = OutboxRelay(engine, lambda subject: intake_js, poll_seconds=30)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.2)
    relay.stop()
    await asyncio.wait_for(task, timeout=5)
    assert task.done() and not task.cancelled()
