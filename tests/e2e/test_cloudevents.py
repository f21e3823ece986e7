"""Every message twoline puts on its streams is a CloudEvent in structured content mode, as the
CloudEvents SDK reads it from the NATS message (headers and body), on a real flow."""

import asyncio

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from tests.conftest import AUDITOR, eventually
from tests.e2e.stories import Story
from twoline.natsserver import credential
from twoline_shared.broker import connect
from twoline_shared.events import decode

STREAMS = {"FIRSTLINE": "fl-admin", "SECONDLINE": "sl-admin", "AUDIT": "audit-admin"}


async def stream_messages(nats_server, stream: str, admin: str) -> list[tuple[str, dict, bytes]]:
    """(subject, headers, body) of every message the stream holds."""
    nc = await connect(nats_server.url, credential(admin, nats_server.passwords), name="scan")
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            messages.append((msg.subject, dict(msg.headers or {}), msg.data))
        return messages
    finally:
        await nc.close()


def test_the_sdk_reads_every_message_of_every_stream_as_a_structured_mode_event(
    stack, issuer, nats_server
):
    story = Story(stack, issuer, ["referral", "feedback"])
    story.act("legal_stay", "complete", {"outcome": "legal_stay"})
    auditor = issuer.headers(**AUDITOR)
    eventually(
        lambda: stack["audit"].get("/v1/log/entries?limit=1", headers=auditor).json()["count"],
        "audit records on the AUDIT stream",
    )

    for stream, admin in STREAMS.items():
        messages = asyncio.run(stream_messages(nats_server, stream, admin))
        assert messages, f"{stream} holds the flow's events"
        for subject, headers, body in messages:
            # Structured mode: the CloudEvents media type, and no attribute in a `ce-` header.
            assert headers["Content-Type"] == "application/cloudevents+json"
            assert not [h for h in headers if h.lower().startswith("ce-")], headers
            read = from_http(HTTPMessage(headers=headers, body=body), JSONFormat())
            ours = decode(body)
            assert (read.get_id(), read.get_type(), read.get_source()) == (
                ours.id,
                ours.type,
                ours.source,
            )
            assert read.get_specversion() == "1.0" and read.get_time() is not None
            assert headers["Nats-Msg-Id"] == ours.id
            assert read.get_data() == ours.data
            assert subject == ours.type  # each event on the subject of its own type
