"""CloudEvents 1.0 envelope and the headers that travel with it."""

import json

import pytest

from twoline_shared.events import InvalidEvent, decode, encode, headers_for, new_event


def test_envelope_has_the_cloudevents_attributes_and_round_trips():
    event = new_event(
        source="twoline/intake",
        type="firstline.intake.client.registered",
        subject="C-1",
        client_ref="C-1",
        org="ngo-ghent",
    )
    raw = json.loads(encode(event))
    assert raw["specversion"] == "1.0"
    assert {"id", "source", "type", "time", "subject", "datacontenttype", "data"} <= raw.keys()
    assert raw["datacontenttype"] == "application/json"
    assert decode(encode(event)) == event


def test_msg_id_header_is_the_event_id_and_traceparent_is_carried():
    event = new_event(source="s", type="t.a.b.c")
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = headers_for(event, tp)
    assert headers["Nats-Msg-Id"] == event.id
    assert headers["traceparent"] == tp


def test_each_event_gets_its_own_id():
    assert new_event(source="s", type="t").id != new_event(source="s", type="t").id


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"type": "x"}',
        b'{"specversion": "0.3", "source": "s", "type": "t"}',
        b'{"specversion": "1.0", "source": "s", "type": "t", "extra": 1}',
    ],
)
def test_anything_but_a_cloudevent_is_refused(payload):
    with pytest.raises(InvalidEvent):
        decode(payload)
