"""F3 — the broker enforces the firewall too: the permission matrix of every NATS user, run
against the project's own nats-server with deploy/nats/nats-server.conf, streams and durable
consumers provisioned.

How a denial is proven: the server reports a `permissions violation` for exactly that subject to
the connection's error_cb (the connection stays open), and the action has no effect — the admins
of all three accounts, listening to everything, never hear the row's canary; a denied
subscription receives nothing while an allowed user publishes a matching message; a denied
request gets no reply (the server drops it, so the requester times out). Each table of denials
has a table of allowed actions run through the same connections and witnesses (a PubAck from the
right stream, a fetch from the own durable, an answered call), so a broken connection or a deaf
witness cannot pass for a denial.

The last section is about reply subjects, which no permission covers: the server (for JetStream
API replies) and a responder with `allow_responses` send a reply wherever the request says.

One server serves the module (a fresh one per row would cost a second each); every row uses a
fresh canary payload, so rows do not depend on each other. Adding a user, a subject or a call to
the matrix is one line in a table.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NoStreamResponseError, NotFoundError
from sqlalchemy.engine import Engine

from twoline.natsserver import ADMINS, USERS, NatsServer, credential
from twoline_shared.calls import Responder, serve
from twoline_shared.db import create_db_engine

pytestmark = [pytest.mark.nats, pytest.mark.asyncio(loop_scope="module")]

# The account each user lives in, as deploy/nats/nats-server.conf declares it. Stream names are
# account names (one stream per account), and ADMINS maps each account to its admin user.
ACCOUNT = {
    "fl-admin": "FIRSTLINE",
    "intake": "FIRSTLINE",
    "consent": "FIRSTLINE",
    "referral-fl": "FIRSTLINE",
    "sl-admin": "SECONDLINE",
    "referral-sl": "SECONDLINE",
    "case-resolution": "SECONDLINE",
    "audit-admin": "AUDIT",
    "audit": "AUDIT",
}
SERVICE_USERS = set(USERS) - set(ADMINS.values())

DENIED_WAIT = 0.5  # a denied request is dropped by the server: the requester only times out
SETTLE = 0.1  # time for a message that did get through to reach a subscriber

# Who answers which calls (request/reply on `svc.*`) while the module runs.
RESPONDERS = {
    "svc.intake.>": "intake",
    "svc.consent.>": "consent",
    "svc.referral.>": "referral-sl",
}


# ---------------------------------------------------------------- the matrix

# (user, subject): publishing is refused by the server.
DENIED_PUBLISH = [
    # Zone B writes nothing into zone A, nothing in the bridge's name, no one else's audit.
    ("case-resolution", "firstline.intake.client.registered"),
    ("case-resolution", "firstline.consent.consent.withdrawn"),
    ("case-resolution", "secondline.referral.track.routed"),  # only the bridge routes
    ("case-resolution", "secondline.referral.track.cancelled"),
    ("case-resolution", "audit.referral.disclosure.read"),
    ("case-resolution", "audit.intake.client.read"),
    ("case-resolution", "svc.intake.disclosure"),
    ("case-resolution", "$JS.ACK.SECONDLINE.referral.1.1.1.1.0"),  # ack the bridge's messages
    ("case-resolution", "_INBOX_referral_sl.forged"),  # answer in the bridge's place
    # Zone A writes nothing into zone B, nor another zone-A service's subjects.
    ("intake", "secondline.referral.track.routed"),
    ("intake", "secondline.case.track.accepted"),
    ("intake", "firstline.referral.referral.created"),
    ("intake", "firstline.consent.consent.granted"),
    ("intake", "audit.consent.consent.granted"),
    ("intake", "audit.referral.disclosure.sent"),
    ("intake", "audit.case-resolution.case.read"),
    ("intake", "$JS.ACK.FIRSTLINE.referral.1.1.1.1.0"),
    ("consent", "secondline.referral.track.routed"),
    ("consent", "secondline.case.track.accepted"),
    ("consent", "firstline.intake.client.registered"),
    ("consent", "firstline.referral.referral.created"),
    ("consent", "audit.intake.client.read"),  # no forging another service's audit record
    ("consent", "audit.referral.disclosure.sent"),
    ("consent", "$JS.ACK.FIRSTLINE.referral.1.1.1.1.0"),
    # The bridge cannot forge the events of the services on either side of it.
    ("referral-fl", "firstline.intake.client.registered"),
    ("referral-fl", "firstline.consent.consent.granted"),
    ("referral-fl", "secondline.referral.track.routed"),  # its zone-A user has no zone B
    ("referral-fl", "audit.intake.client.read"),
    ("referral-sl", "secondline.case.track.accepted"),
    ("referral-sl", "firstline.intake.client.registered"),
    ("referral-sl", "audit.case-resolution.case.read"),
    ("referral-sl", "svc.intake.disclosure"),
    # The audit service reads the trail; it writes nothing anywhere.
    ("audit", "audit.intake.client.read"),
    ("audit", "audit.case-resolution.case.read"),
    ("audit", "audit.audit.log.verified"),
    ("audit", "firstline.intake.client.registered"),
    ("audit", "secondline.referral.track.routed"),
]

# (user, pattern, publisher, subject): the subscription is refused and hears nothing while
# `publisher` (allowed to) publishes `subject`, which matches `pattern`. No publisher where no
# user may publish there directly (inboxes, the JetStream API).
DENIED_SUBSCRIBE = [
    ("case-resolution", "firstline.>", "intake", "firstline.intake.client.registered"),
    ("case-resolution", "firstline.intake.>", "intake", "firstline.intake.client.registered"),
    ("case-resolution", "firstline.consent.>", "consent", "firstline.consent.consent.granted"),
    ("case-resolution", "secondline.>", "referral-sl", "secondline.referral.track.routed"),
    ("case-resolution", "secondline.referral.>", "referral-sl", "secondline.referral.track.x"),
    ("case-resolution", "audit.>", "referral-sl", "audit.referral.disclosure.sent"),
    ("case-resolution", ">", "referral-sl", "secondline.referral.track.routed"),
    # Answer the key call in the bridge's place:
    ("case-resolution", "svc.referral.>", "case-resolution", "svc.referral.disclosure-key"),
    ("case-resolution", "_INBOX_referral_sl.>", None, None),
    ("case-resolution", "$JS.API.>", None, None),
    ("case-resolution", "$JS.EVENT.>", None, None),
    ("intake", "secondline.>", "referral-sl", "secondline.referral.track.routed"),
    ("intake", "firstline.consent.>", "consent", "firstline.consent.consent.granted"),
    ("intake", "audit.>", "consent", "audit.consent.consent.granted"),
    ("intake", ">", "consent", "firstline.consent.consent.granted"),
    ("consent", "firstline.intake.>", "intake", "firstline.intake.client.registered"),
    ("consent", "svc.intake.>", "referral-fl", "svc.intake.disclosure"),  # pose as intake
    ("intake", "svc.consent.>", "referral-fl", "svc.consent.active"),  # pose as consent
    ("referral-fl", "svc.consent.>", "referral-fl", "svc.consent.status"),  # answer itself
    ("referral-fl", "svc.intake.>", "consent", "svc.intake.client"),  # pose as intake
    ("consent", "secondline.>", "referral-sl", "secondline.referral.track.routed"),
    ("consent", "_INBOX_referral_fl.>", None, None),  # where disclosure replies arrive
    ("referral-fl", "firstline.>", "intake", "firstline.intake.client.registered"),
    ("referral-sl", "secondline.case.>", "case-resolution", "secondline.case.track.accepted"),
    ("referral-sl", "_INBOX_case_resolution.>", None, None),
    ("audit", "firstline.>", "intake", "firstline.intake.client.registered"),
    ("audit", "secondline.>", "referral-sl", "secondline.referral.track.routed"),
    ("audit", "audit.>", "intake", "audit.intake.client.read"),  # only through its durable
    ("audit", "audit.case-resolution.>", "case-resolution", "audit.case-resolution.case.read"),
    ("audit", ">", "case-resolution", "audit.case-resolution.case.read"),
]

# (user, subject): a request (JetStream API or a call) is refused and never answered.
DENIED_REQUEST = [
    # Zone B and FIRSTLINE: no consumer, no fetch, no message, not even its name.
    ("case-resolution", "$JS.API.CONSUMER.CREATE.FIRSTLINE"),
    ("case-resolution", "$JS.API.CONSUMER.CREATE.FIRSTLINE.spy.firstline.>"),
    ("case-resolution", "$JS.API.CONSUMER.DURABLE.CREATE.FIRSTLINE.spy"),
    ("case-resolution", "$JS.API.CONSUMER.MSG.NEXT.FIRSTLINE.referral"),
    ("case-resolution", "$JS.API.CONSUMER.MSG.NEXT.FIRSTLINE.consent"),
    ("case-resolution", "$JS.API.STREAM.MSG.GET.FIRSTLINE"),
    ("case-resolution", "$JS.API.DIRECT.GET.FIRSTLINE"),
    ("case-resolution", "$JS.API.DIRECT.GET.FIRSTLINE.firstline.intake.client.registered"),
    ("case-resolution", "$JS.API.STREAM.INFO.FIRSTLINE"),
    ("case-resolution", "$JS.API.STREAM.NAMES"),
    ("case-resolution", "$JS.API.STREAM.LIST"),
    ("case-resolution", "$JS.API.INFO"),
    ("case-resolution", "svc.intake.disclosure"),
    ("case-resolution", "svc.referral.package"),  # of the bridge's calls, only the two it answers
    # Zone B and SECONDLINE: only its own durable, never the stream or the bridge's durable.
    ("case-resolution", "$JS.API.STREAM.MSG.GET.SECONDLINE"),
    ("case-resolution", "$JS.API.DIRECT.GET.SECONDLINE"),
    ("case-resolution", "$JS.API.CONSUMER.MSG.NEXT.SECONDLINE.referral"),
    ("case-resolution", "$JS.API.CONSUMER.CREATE.SECONDLINE"),  # unfiltered: the whole stream
    ("case-resolution", "$JS.API.CONSUMER.INFO.SECONDLINE.referral"),
    ("case-resolution", "$JS.API.CONSUMER.INFO.SECONDLINE.case-resolution"),  # see the conf
    ("case-resolution", "$JS.API.STREAM.INFO.SECONDLINE"),
    ("case-resolution", "$JS.API.STREAM.PURGE.SECONDLINE"),
    ("case-resolution", "$JS.API.CONSUMER.DELETE.SECONDLINE.referral"),
    # Zone A: its own events only through the stream's durables, calls only where allowed.
    ("intake", "$JS.API.STREAM.INFO.FIRSTLINE"),
    ("intake", "$JS.API.STREAM.MSG.GET.FIRSTLINE"),
    ("intake", "$JS.API.CONSUMER.CREATE.FIRSTLINE"),
    ("intake", "$JS.API.CONSUMER.MSG.NEXT.FIRSTLINE.referral"),
    ("intake", "$JS.API.STREAM.NAMES"),
    ("intake", "svc.intake.disclosure"),  # it answers; it does not ask
    ("consent", "svc.intake.disclosure"),  # only the bridge may ask for a package
    ("consent", "svc.referral.disclosure-key"),
    ("consent", "svc.consent.active"),  # it answers; it does not ask
    ("intake", "svc.consent.active"),  # only the bridge asks which consents are active
    ("intake", "svc.consent.status"),
    ("intake", "svc.intake.client"),
    ("referral-fl", "svc.intake.client"),  # the bridge asks the consent service instead
    ("referral-fl", "svc.consent.grant"),  # of the consent service's calls, only the two
    ("case-resolution", "svc.consent.active"),
    ("case-resolution", "svc.consent.status"),
    ("referral-sl", "svc.consent.status"),  # zone B's account has no consent call at all
    ("audit", "svc.consent.active"),
    ("consent", "$JS.API.CONSUMER.MSG.NEXT.FIRSTLINE.referral"),
    ("consent", "$JS.API.CONSUMER.INFO.FIRSTLINE.consent"),
    ("consent", "$JS.API.STREAM.MSG.GET.FIRSTLINE"),
    ("consent", "$JS.API.DIRECT.GET.FIRSTLINE"),
    ("referral-fl", "$JS.API.STREAM.MSG.GET.FIRSTLINE"),
    ("referral-fl", "$JS.API.CONSUMER.MSG.NEXT.FIRSTLINE.consent"),
    ("referral-fl", "$JS.API.CONSUMER.CREATE.FIRSTLINE"),
    ("referral-fl", "$JS.API.CONSUMER.INFO.FIRSTLINE.referral"),
    ("referral-sl", "$JS.API.STREAM.MSG.GET.SECONDLINE"),
    ("referral-sl", "$JS.API.CONSUMER.MSG.NEXT.SECONDLINE.case-resolution"),
    ("referral-sl", "$JS.API.CONSUMER.INFO.SECONDLINE.referral"),
    ("referral-sl", "svc.intake.disclosure"),
    ("referral-sl", "svc.referral.disclosure-key"),  # it answers; it does not ask
    ("referral-sl", "svc.referral.joint-review"),
    ("consent", "svc.referral.joint-review"),
    ("audit", "svc.referral.joint-review"),
    # The audit service: its durable and nothing else — no reading around it, no tampering.
    ("audit", "$JS.API.STREAM.MSG.GET.AUDIT"),
    ("audit", "$JS.API.DIRECT.GET.AUDIT"),
    ("audit", "$JS.API.STREAM.INFO.AUDIT"),
    ("audit", "$JS.API.CONSUMER.CREATE.AUDIT"),
    ("audit", "$JS.API.CONSUMER.INFO.AUDIT.audit"),
    ("audit", "$JS.API.STREAM.MSG.DELETE.AUDIT"),
    ("audit", "$JS.API.STREAM.PURGE.AUDIT"),
    ("audit", "$JS.API.STREAM.DELETE.AUDIT"),
    ("audit", "$JS.API.INFO"),
    ("audit", "svc.intake.disclosure"),
]

# (user, subject, stream): the user's own events and audit records, acknowledged by the stream.
ALLOWED_PUBLISH = [
    ("intake", "firstline.intake.client.registered", "FIRSTLINE"),
    ("intake", "audit.intake.client.read", "AUDIT"),
    ("consent", "firstline.consent.consent.granted", "FIRSTLINE"),
    ("consent", "audit.consent.consent.granted", "AUDIT"),
    ("referral-fl", "audit.referral.disclosure.sent", "AUDIT"),
    ("referral-sl", "secondline.referral.track.routed", "SECONDLINE"),
    ("referral-sl", "audit.referral.track.routed", "AUDIT"),
    ("case-resolution", "secondline.case.track.accepted", "SECONDLINE"),
    ("case-resolution", "audit.case-resolution.case.read", "AUDIT"),
]

# (user, stream, durable, publisher, subject): what `publisher` sends, `user` fetches and acks.
ALLOWED_FETCH = [
    ("consent", "FIRSTLINE", "consent", "intake", "firstline.intake.client.registered"),
    ("referral-fl", "FIRSTLINE", "referral", "consent", "firstline.consent.consent.granted"),
    ("case-resolution", "SECONDLINE", "case-resolution", "referral-sl", "secondline.referral.x"),
    ("referral-sl", "SECONDLINE", "referral", "case-resolution", "secondline.case.track.x"),
    ("audit", "AUDIT", "audit", "intake", "audit.intake.client.read"),
    ("audit", "AUDIT", "audit", "case-resolution", "audit.case-resolution.case.read"),
]

# (user, subject): calls the user may make, answered by RESPONDERS.
ALLOWED_CALL = [
    ("referral-fl", "svc.intake.disclosure"),
    ("referral-fl", "svc.consent.active"),
    ("referral-fl", "svc.consent.status"),
    ("consent", "svc.intake.client"),
    ("case-resolution", "svc.referral.disclosure-key"),
    ("case-resolution", "svc.referral.joint-review"),
]


def _ids(rows: list[tuple[object, ...]]) -> list[str]:
    return [f"{row[0]}:{row[1]}" for row in rows]


# ---------------------------------------------------------------- connections and witnesses


@dataclass
class Link:
    """One connection as one NATS user; `errors` is what the server sent to its error_cb, and
    `heard` what an admin link (an account's witness) received on `>` since the module began."""

    user: str
    nc: NATS
    errors: list[str] = field(default_factory=list)
    heard: list[tuple[str, bytes]] = field(default_factory=list)

    async def reported(self, action: str, subject: str, wait: float = 1.0) -> bool:
        """Did the server report a permissions violation for `action` ("publish" or
        "subscription") on `subject`? nats-py lowercases the server's -ERR text."""
        needle = f'permissions violation for {action} to "{subject.lower()}"'
        await self.nc.flush()
        return await _within(wait, lambda: any(needle in error for error in self.errors))

    async def hears(self, payload: bytes, wait: float = 2.0) -> bool:
        return await _within(wait, lambda: any(data == payload for _, data in self.heard))

    def heard_on(self, subject: str) -> list[bytes]:
        return [data for heard_subject, data in self.heard if heard_subject == subject]


async def _within(wait: float, condition: Callable[[], bool]) -> bool:
    deadline = asyncio.get_running_loop().time() + wait
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def open_link(server: NatsServer, user: str) -> Link:
    """Connect as `user` the way the services do (own inbox prefix), keeping reported errors."""
    cred = credential(user, server.passwords)
    errors: list[str] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        servers=[server.url],
        user=cred.user,
        password=cred.password,
        inbox_prefix=cred.inbox_prefix,
        name=f"firewall:{user}",
        error_cb=error_cb,
        allow_reconnect=False,
    )
    return Link(user, nc, errors)


def canary() -> bytes:
    return json.dumps({"canary": uuid.uuid4().hex}).encode()


def witness_of(links: dict[str, Link], user: str) -> Link:
    """The admin of `user`'s account, which hears everything said in that account."""
    return links[ADMINS[ACCOUNT[user]]]


def accounts_hearing(links: dict[str, Link], payload: bytes) -> list[str]:
    return [a for a, admin in ADMINS.items() if any(d == payload for _, d in links[admin].heard)]


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory,
    nats_passwords: dict[str, str],
    nats_server_env: dict[str, str],
) -> Iterator[NatsServer]:
    """The project's nats-server, provisioned as the `nats_server` fixture does, for the module."""
    server = NatsServer(
        store_dir=tmp_path_factory.mktemp("broker") / "nats", passwords=nats_passwords
    )
    server._env.update(nats_server_env)
    server.start()
    asyncio.run(server.provision())
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_links(broker: NatsServer) -> AsyncIterator[dict[str, Link]]:
    """One connection per user; each admin listens to `>` for the whole module; one more
    connection per responder answers its calls.

    The witnesses subscribe once and never again: nats-server 2.15.1 occasionally routes a
    long-lived publisher's message by a stale match after a subscription on the same subject
    was removed and made again (seen here about once in 50 tries), which would make a fresh
    witness per row miss a message now and then.
    """
    links = {user: await open_link(broker, user) for user in USERS}
    for admin in ADMINS.values():
        witness = links[admin]

        async def hear(msg: Msg, witness: Link = witness) -> None:
            witness.heard.append((msg.subject, msg.data))

        await witness.nc.subscribe(">", cb=hear)
        await witness.nc.flush()
    responders = []
    for subject, user in RESPONDERS.items():
        responder = await open_link(broker, user)

        async def answer(msg: Msg, user: str = user) -> None:
            # As a responder should: only into an inbox, never onto a subject a caller names.
            if msg.reply.startswith("_INBOX_"):
                await msg.respond(json.dumps({"answered_by": user}).encode())

        await responder.nc.subscribe(subject, queue=user, cb=answer)
        await responder.nc.flush()
        responders.append(responder)
    yield links
    for link in [*links.values(), *responders]:
        await link.nc.close()


@pytest.fixture
def links(open_links: dict[str, Link]) -> dict[str, Link]:
    """The module's connections, each with a clean error list, still connected."""
    for link in open_links.values():
        assert link.nc.is_connected, f"{link.user}: the server closed the connection"
        link.errors.clear()
    return open_links


# ---------------------------------------------------------------- denied


@pytest.mark.parametrize(("user", "subject"), DENIED_PUBLISH, ids=_ids(DENIED_PUBLISH))
async def test_user_cannot_publish_outside_its_allow_list(
    links: dict[str, Link], user: str, subject: str
) -> None:
    link, payload = links[user], canary()
    await link.nc.publish(subject, payload)
    assert await link.reported("publish", subject), f"{user} may publish {subject}"
    await asyncio.sleep(SETTLE)
    assert accounts_hearing(links, payload) == [], f"{subject} from {user} went out"


@pytest.mark.parametrize(
    ("user", "pattern", "publisher", "subject"), DENIED_SUBSCRIBE, ids=_ids(DENIED_SUBSCRIBE)
)
async def test_user_cannot_subscribe_outside_its_allow_list(
    links: dict[str, Link], user: str, pattern: str, publisher: str | None, subject: str | None
) -> None:
    link = links[user]
    received: list[bytes] = []

    async def collect(msg: Msg) -> None:
        received.append(msg.data)

    subscription = await link.nc.subscribe(pattern, cb=collect)
    try:
        assert await link.reported("subscription", pattern), f"{user} may subscribe {pattern}"
        if publisher is not None and subject is not None:
            payload = canary()
            await links[publisher].nc.publish(subject, payload)
            assert await witness_of(links, publisher).hears(payload), (
                f"{publisher} could not publish {subject}"
            )
            await asyncio.sleep(SETTLE)
        assert received == [], f"{user} received on {pattern}"
    finally:
        await subscription.unsubscribe()


@pytest.mark.parametrize(("user", "subject"), DENIED_REQUEST, ids=_ids(DENIED_REQUEST))
async def test_user_cannot_make_a_request_outside_its_allow_list(
    links: dict[str, Link], user: str, subject: str
) -> None:
    link, payload = links[user], canary()
    with pytest.raises(nats.errors.TimeoutError):
        await link.nc.request(subject, payload, timeout=DENIED_WAIT)
    assert await link.reported("publish", subject), f"{user} may request {subject}"
    assert accounts_hearing(links, payload) == [], f"the request {subject} from {user} went out"


# ---------------------------------------------------------------- allowed: the positive controls


async def test_every_service_user_has_rows_in_the_matrix() -> None:
    """A new user cannot slip into the config without its positive controls and its denials."""
    assert ACCOUNT.keys() == USERS.keys()
    assert {row[0] for row in ALLOWED_PUBLISH} == SERVICE_USERS - {"audit"}  # audit only reads
    assert {row[0] for row in ALLOWED_FETCH} == SERVICE_USERS - {"intake"}  # intake has no durable
    for table in (DENIED_PUBLISH, DENIED_SUBSCRIBE, DENIED_REQUEST):
        assert {row[0] for row in table} == SERVICE_USERS


@pytest.mark.parametrize(("user", "subject", "stream"), ALLOWED_PUBLISH, ids=_ids(ALLOWED_PUBLISH))
async def test_user_can_publish_its_own_events_and_audit_records(
    links: dict[str, Link], user: str, subject: str, stream: str
) -> None:
    """Acknowledged by the right stream (AUDIT through the service import), heard by the witness
    the denial tests rely on, and stored as sent."""
    link, payload = links[user], canary()
    ack = await link.nc.jetstream(timeout=2).publish(subject, payload)
    assert ack.stream == stream
    assert await witness_of(links, user).hears(payload), "the witness missed an allowed publish"
    stored = await links[ADMINS[stream]].nc.jetstream(timeout=2).get_msg(stream, ack.seq)
    assert (stored.subject, stored.data) == (subject, payload)
    assert link.errors == []


@pytest.mark.parametrize(
    ("user", "stream", "durable", "publisher", "subject"), ALLOWED_FETCH, ids=_ids(ALLOWED_FETCH)
)
async def test_user_can_fetch_and_ack_from_its_own_durable(
    links: dict[str, Link], user: str, stream: str, durable: str, publisher: str, subject: str
) -> None:
    payload = canary()
    await links[publisher].nc.jetstream(timeout=2).publish(subject, payload)
    link = links[user]
    subscription = await link.nc.jetstream(timeout=2).pull_subscribe_bind(durable, stream=stream)
    try:
        found: Msg | None = None
        deadline = asyncio.get_running_loop().time() + 10
        while found is None and asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(nats.errors.TimeoutError):
                for msg in await subscription.fetch(100, timeout=1):
                    if msg.data == payload:
                        found = msg
                    else:
                        await msg.ack()  # earlier rows' messages on the same durable
        assert found is not None, f"{user} never got {subject} from {stream}/{durable}"
        assert found.subject == subject
        await found.ack_sync(timeout=2)
    finally:
        await subscription.unsubscribe()
    assert link.errors == []


@pytest.mark.parametrize(("user", "subject"), ALLOWED_CALL, ids=_ids(ALLOWED_CALL))
async def test_user_can_make_the_calls_it_is_allowed(
    links: dict[str, Link], user: str, subject: str
) -> None:
    reply = await links[user].nc.request(subject, b"{}", timeout=2)
    responder = next(u for p, u in RESPONDERS.items() if subject.startswith(p.rstrip(">")))
    assert json.loads(reply.data) == {"answered_by": responder}
    assert links[user].errors == []


# ---------------------------------------------------------------- accounts


async def test_each_zone_account_lists_only_its_own_stream(links: dict[str, Link]) -> None:
    """Even an account's unrestricted admin sees one stream: there is no SECONDLINE stream in
    zone A's account, no FIRSTLINE stream in zone B's."""
    for account, admin in ADMINS.items():
        reply = await links[admin].nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=2)
        assert json.loads(reply.data)["streams"] == [account]


@pytest.mark.parametrize(
    ("admin", "stream", "durable", "publisher", "subject"),
    [
        ("sl-admin", "FIRSTLINE", "referral", "intake", "firstline.intake.client.registered"),
        ("fl-admin", "SECONDLINE", "referral", "referral-sl", "secondline.referral.track.routed"),
    ],
    ids=["zone B cannot see zone A", "zone A cannot see zone B"],
)
async def test_the_other_zones_stream_is_out_of_reach_even_for_an_accounts_admin(
    nats_server: NatsServer, admin: str, stream: str, durable: str, publisher: str, subject: str
) -> None:
    """No import or export joins FIRSTLINE and SECONDLINE, so from one zone account even a user
    without any permission limits finds no stream, consumer or message of the other.

    On a server of its own: the module's witnesses would answer for the missing responders."""
    link, source = await open_link(nats_server, admin), await open_link(nats_server, publisher)
    try:
        nc, js = link.nc, link.nc.jetstream(timeout=1)
        with pytest.raises(NotFoundError):
            await js.stream_info(stream)
        with pytest.raises(NotFoundError):
            await js.get_msg(stream, 1)
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", b"{}", timeout=1)
        with pytest.raises(NoStreamResponseError):
            await js.publish(subject, canary())
        heard: list[bytes] = []

        async def collect(msg: Msg) -> None:
            heard.append(msg.data)

        await nc.subscribe(">", cb=collect)
        await nc.flush()
        payload = canary()
        ack = await source.nc.jetstream(timeout=2).publish(subject, payload)
        assert ack.stream == stream
        await asyncio.sleep(SETTLE)
        assert payload not in heard
    finally:
        await link.nc.close()
        await source.nc.close()


async def test_case_resolution_cannot_read_firstline_through_the_jetstream_client(
    links: dict[str, Link],
) -> None:
    """The same denials through nats-py's own JetStream calls, as zone-B code would try them."""
    link = links["case-resolution"]
    js = link.nc.jetstream(timeout=DENIED_WAIT)
    bound = await js.pull_subscribe_bind("referral", stream="FIRSTLINE")  # no API call: a SUB
    attempts = {
        "$JS.API.STREAM.INFO.FIRSTLINE": js.stream_info("FIRSTLINE"),
        "$JS.API.STREAM.MSG.GET.FIRSTLINE": js.get_msg("FIRSTLINE", 1),
        "$JS.API.DIRECT.GET.FIRSTLINE": js.get_msg("FIRSTLINE", 1, direct=True),
        "$JS.API.STREAM.LIST": js.streams_info(),
        "$JS.API.CONSUMER.CREATE.FIRSTLINE": js.add_consumer(
            "FIRSTLINE", ConsumerConfig(filter_subject="firstline.>", ack_policy=AckPolicy.NONE)
        ),
        "$JS.API.CONSUMER.MSG.NEXT.FIRSTLINE.referral": bound.fetch(1, timeout=DENIED_WAIT),
    }
    outcomes = await asyncio.gather(*attempts.values(), return_exceptions=True)
    await bound.unsubscribe()
    for subject, outcome in zip(attempts, outcomes, strict=True):
        assert isinstance(outcome, nats.errors.TimeoutError), f"{subject}: {outcome!r}"
        assert await link.reported("publish", subject), subject


async def test_a_connection_needs_a_known_user_and_its_password(broker: NatsServer) -> None:
    """No anonymous or default user: without the right password nobody gets in at all."""
    attempts = [
        {},
        {"user": "case-resolution", "password": "not-the-password"},
        {"user": "case-resolution", "password": broker.passwords["intake"]},
        {"user": "nobody", "password": "x"},
    ]
    for credentials in attempts:
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await nats.connect(
                servers=[broker.url], allow_reconnect=False, connect_timeout=2, **credentials
            )


# ---------------------------------------------------------------- reply subjects

# (user, JetStream API subject on its own durable, a subject the user may not publish).
STEERED_API_REPLIES = [
    (
        "case-resolution",
        "$JS.API.CONSUMER.INFO.SECONDLINE.case-resolution",
        "secondline.referral.track.steered",
    ),
    ("consent", "$JS.API.CONSUMER.INFO.FIRSTLINE.consent", "firstline.intake.client.steered"),
    ("referral-sl", "$JS.API.CONSUMER.INFO.SECONDLINE.referral", "secondline.case.track.steered"),
    ("audit", "$JS.API.CONSUMER.INFO.AUDIT.audit", "audit.intake.client.steered"),
]


@pytest.mark.parametrize(
    ("user", "api", "target"), STEERED_API_REPLIES, ids=_ids(STEERED_API_REPLIES)
)
async def test_a_jetstream_reply_cannot_be_steered_onto_another_services_subject(
    links: dict[str, Link], user: str, api: str, target: str
) -> None:
    """The server sends a JetStream API reply to whatever reply subject the request names, and a
    stream stores it like any message: CONSUMER.INFO would let a user put a message on a subject
    it may not publish (a bridge event, an intake event, another service's audit record). The
    config therefore grants service users fetch and ack only (see nats-server.conf)."""
    link = links[user]
    await link.nc.publish(api, b"", reply=target)
    await link.nc.flush()
    await asyncio.sleep(SETTLE)
    assert witness_of(links, user).heard_on(target) == [], f"{user} steered a reply to {target}"
    assert await link.reported("publish", api)


# (responder, call subject, caller, a stream subject the caller may not publish).
STEERED_CALL_REPLIES = [
    ("intake", "svc.intake.disclosure", "referral-fl", "firstline.consent.consent.steered"),
    ("intake", "svc.intake.client", "consent", "firstline.intake.client.steered"),
    ("consent", "svc.consent.active", "referral-fl", "firstline.consent.consent.steered"),
    ("consent", "svc.consent.status", "referral-fl", "audit.consent.consent.steered"),
    ("intake", "svc.intake.disclosure", "referral-fl", "audit.intake.disclosure.steered"),
    (
        "referral-sl",
        "svc.referral.disclosure-key",
        "case-resolution",
        "secondline.referral.key.steered",
    ),
    ("referral-sl", "svc.referral.disclosure-key", "case-resolution", "audit.referral.key.steered"),
]


# No server permission restricts reply subjects and `allow_responses` lets a responder publish on
# whatever reply subject the caller names: calls.serve answers only on an `_INBOX_` subject.
@pytest.mark.parametrize(
    ("responder", "subject", "caller", "target"),
    STEERED_CALL_REPLIES,
    ids=[f"{row[2]}->{row[0]}:{row[3]}" for row in STEERED_CALL_REPLIES],
)
async def test_a_call_reply_cannot_be_steered_onto_a_stream_subject(
    links: dict[str, Link],
    broker: NatsServer,
    tmp_path: Path,
    responder: str,
    subject: str,
    caller: str,
    target: str,
) -> None:
    engine: Engine = create_db_engine(f"sqlite:///{tmp_path / 'calls.db'}")
    # Both ends on fresh connections, so the request surely reaches the new responder.
    answering, asking = await open_link(broker, responder), await open_link(broker, caller)
    try:
        await serve(
            answering.nc,
            Responder(subject, lambda session, payload: {"secret": "canary"}),
            queue="steered",
            engine=engine,
        )
        await answering.nc.flush()
        await asking.nc.publish(subject, b"{}", reply=target)
        await asking.nc.flush()
        await asyncio.sleep(0.5)
        heard = witness_of(links, responder).heard_on(target)
        assert heard == [], f"{responder}'s reply to {caller} landed on {target}"
    finally:
        await answering.nc.close()
        await asking.nc.close()
        engine.dispose()
