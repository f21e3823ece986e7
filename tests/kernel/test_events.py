"""CloudEvents 1.0 envelope and the headers that travel with it."""

import base64
import json

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

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
        b'{"specversion": "1.0", "source": "s", "type": "t", "extra": 1}',  # no id
    ],
)
def test_anything_but_a_cloudevent_is_refused(payload):
    with pytest.raises(InvalidEvent):
        decode(payload)


# ---------------------------------------------------------------- the CloudEvents binding

VALID = {"specversion": "1.0", "id": "e-1", "source": "/x", "type": "t.a"}


def test_only_structured_mode_headers_go_with_an_event():
    """No `ce-` header: a binding-aware receiver must read the body as the whole event."""
    headers = headers_for(new_event(source="s", type="t.a.b.c"), traceparent=None)
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert not [name for name in headers if name.lower().startswith("ce-")]


def test_the_cloudevents_sdk_reads_what_twoline_writes():
    event = new_event(source="twoline/intake", type="firstline.intake.client.registered", a=1)
    message = HTTPMessage(headers=headers_for(event), body=encode(event))

    read = from_http(message, JSONFormat())  # detects the mode from the headers, as a receiver

    assert (read.get_id(), read.get_source(), read.get_type()) == (
        event.id,
        event.source,
        event.type,
    )
    assert read.get_data() == {"a": 1}
    assert read.get_time() is not None


@pytest.mark.parametrize(
    "attributes, data",
    [
        ({"type": "t.a", "source": "/x", "dataschema": "https://example.org/s.json"}, {"a": 1}),
        ({"type": "t.a", "source": "/x", "myext": "v", "count": 3, "flag": True}, {"a": 1}),
        ({"type": "t.a", "source": "/x", "subject": "s-1"}, "a string"),
        (
            {"type": "t.a", "source": "/x", "datacontenttype": "application/octet-stream"},
            b"\x00\x01",
        ),
        ({"type": "t.a", "source": "/x"}, None),
        (
            {
                "type": "t.a",
                "source": "/x",
                "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            },
            [1, 2],
        ),
    ],
    ids=["dataschema", "extensions", "string-data", "base64-data", "no-data", "list-data"],
)
def test_every_spec_valid_event_the_sdk_writes_is_decoded(attributes, data):
    written = JSONFormat().write(CloudEvent(dict(attributes), data))

    event = decode(written)

    assert (event.type, event.source) == ("t.a", "/x")
    for name, value in attributes.items():
        assert getattr(event, name, None) == value or event.extensions.get(name) == value, name
    if isinstance(data, bytes):
        assert base64.b64decode(event.data_base64) == data
    else:
        assert event.data == data


@pytest.mark.parametrize(
    "document",
    [
        {**VALID, "Bad-Name": "x"},
        {**VALID, "myext": {"nested": 1}},
        {**VALID, "myext": 1.5},
        {**VALID, "subject": None},
        {**VALID, "time": "yesterday"},
        {**VALID, "dataschema": "relative/path"},
        {**VALID, "data": {}, "data_base64": "AAE="},
        {**VALID, "data_base64": "not base64!"},
        {**VALID, "id": ""},
        {**VALID, "id": 7},
        {**VALID, "id": "i" * 65},  # longer than the inbox keeps: refused, never cut
        {**VALID, "type": "t" * 256},
    ],
)
def test_what_the_spec_does_not_allow_is_refused(document):
    with pytest.raises(InvalidEvent):
        decode(json.dumps(document).encode())
