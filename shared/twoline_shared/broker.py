"""NATS connections (own user per service, reconnect forever) and JetStream provisioning."""

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger("twoline.broker")


@dataclass(frozen=True)
class NatsCredential:
    """One NATS user of one service; `inbox_prefix` must match the user's subscribe allow-list."""

    user: str
    password: str
    inbox_prefix: str


async def connect(url: str, credential: NatsCredential, *, name: str) -> NATS:
    """Connect with reconnects forever; errors are logged without message contents."""

    async def error_cb(exc: Exception) -> None:
        log.warning("nats %s: %s", name, exc)

    async def disconnected_cb() -> None:
        log.info("nats %s: disconnected", name)

    async def reconnected_cb() -> None:
        log.info("nats %s: reconnected", name)

    return await nats.connect(
        servers=[url],
        user=credential.user,
        password=credential.password,
        name=name,
        inbox_prefix=credential.inbox_prefix,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=3,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
    )


async def connect_until_up(url: str, credential: NatsCredential, *, name: str) -> NATS:
    """Keep trying the first connection (the broker may start after the service)."""
    delay = 0.5
    while True:
        try:
            return await connect(url, credential, name=name)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("nats %s: not reachable yet (%s)", name, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True)
class StreamSpec:
    account: str
    name: str
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class ConsumerSpec:
    account: str
    stream: str
    durable: str
    filter_subjects: tuple[str, ...]


# One stream per zone account; messages carry ids and codes (personal data only inside
# disclosure packages). The duplicate window bounds broker-side de-duplication of outbox replays.
STREAMS = (
    StreamSpec("FIRSTLINE", "FIRSTLINE", ("firstline.>",)),
    StreamSpec("SECONDLINE", "SECONDLINE", ("secondline.>",)),
    StreamSpec("AUDIT", "AUDIT", ("audit.>",)),
)

CONSUMERS = (
    ConsumerSpec("FIRSTLINE", "FIRSTLINE", "consent", ("firstline.intake.>",)),
    # The bridge follows consents only: whether a client exists it asks when it decides.
    ConsumerSpec("FIRSTLINE", "FIRSTLINE", "referral", ("firstline.consent.>",)),
    ConsumerSpec("SECONDLINE", "SECONDLINE", "case-resolution", ("secondline.referral.>",)),
    ConsumerSpec("SECONDLINE", "SECONDLINE", "referral", ("secondline.case.>",)),
    ConsumerSpec("AUDIT", "AUDIT", "audit", ("audit.>",)),
)

DUPLICATE_WINDOW_SECONDS = 3600.0


async def provision(
    admins: Mapping[str, NATS], *, ack_wait: float = 30.0, replicas: int = 1
) -> None:
    """Create or update every stream and durable consumer (idempotent), with admin connections.

    Service users never get stream or consumer create rights: a consumer's filter is not checked
    against the creator's subscribe permissions, so that right would open every subject.
    """
    for spec in STREAMS:
        js = admins[spec.account].jetstream()
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
            allow_direct=False,
        )
        try:
            await js.stream_info(spec.name)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
    for spec in CONSUMERS:
        js = admins[spec.account].jetstream()
        await js.add_consumer(
            spec.stream,
            ConsumerConfig(
                durable_name=spec.durable,
                filter_subjects=list(spec.filter_subjects),
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait,
                max_ack_pending=1000,
            ),
        )
