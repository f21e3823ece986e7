"""One referral is one trace: from the NGO's request through the bridge, the office queue, both
acceptances and a status change back to the bridge — across HTTP, NATS calls and JetStream — and
no span holds anything of the person (F8). All five services on one real nats-server."""

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.canaries import client_body, make_canaries
from tests.conftest import FEDASIL_BRUSSELS, ICAM_BRUSSELS, NGO_GHENT, eventually

pytestmark = pytest.mark.nats

AGENCY_OF = {"legal_stay": "immigration_office", "return": "fedasil"}
ROUTED = "secondline.referral.track.routed"
ACCEPTED = "secondline.case.track.accepted"
STATUS_CHANGED = "secondline.case.track.status-changed"


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def find(spans: InMemorySpanExporter, name: str, service: str, **attributes: Any) -> list:
    return [
        s
        for s in spans.get_finished_spans()
        if s.name == name
        and service_of(s) == service
        and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]


def one(spans: InMemorySpanExporter, name: str, service: str, **attributes: Any) -> ReadableSpan:
    [span] = find(spans, name, service, **attributes)
    return span


def span_text(exporter: InMemorySpanExporter) -> str:
    parts: list[str] = []
    for span in exporter.get_finished_spans():
        parts += [span.name, repr(dict(span.attributes or {})), repr(span.resource.attributes)]
        parts += [event.name + repr(dict(event.attributes or {})) for event in span.events]
        parts += [repr(dict(link.attributes or {})) for link in span.links]
    return "\n".join(parts)


def test_one_referral_is_one_trace_from_the_ngo_to_the_case_workers_and_back(stack, spans, issuer):
    ngo = issuer.headers(**NGO_GHENT)
    performer = {
        "legal_stay": issuer.headers(sub="coach-trace", **ICAM_BRUSSELS),
        "return": issuer.headers(sub="counsellor-trace", **FEDASIL_BRUSSELS),
    }
    c = make_canaries("trace")

    created = stack["intake"].post("/v1/clients", json=client_body(c), headers=ngo)
    assert created.status_code == 201, created.text
    client_ref = created.json()["client_ref"]

    def grant(agency: str) -> str:
        response = stack["consent"].post(
            "/v1/consents",
            headers=ngo,
            json={
                "client_ref": client_ref,
                "recipient": agency,
                "purposes": ["referral", "feedback"],
                "categories": ["identity", "household", "needs"],
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    for agency in AGENCY_OF.values():
        grant(agency)
    referred = stack["referral"].post(
        "/v1/referrals", json={"client_ref": client_ref, "tracks": list(AGENCY_OF)}, headers=ngo
    )
    assert referred.status_code == 201, referred.text

    def accept_queued(track: str) -> str | None:
        queue = stack["case"].get("/v1/queue", headers=performer[track]).json()["data"]
        queued = [q["case_id"] for q in queue if q["track"] == track]
        if not queued:
            return None
        accepted = stack["case"].post(
            f"/v1/cases/{queued[0]}/tracks/{track}/accept", headers=performer[track]
        )
        assert accepted.status_code == 200, accepted.text
        return queued[0]

    case_ids = {
        track: eventually(lambda t=track: accept_queued(t), f"the {track} queue")
        for track in AGENCY_OF
    }
    changed = stack["case"].post(
        f"/v1/cases/{case_ids['return']}/tracks/return/status",
        json={"status": "in-progress"},
        headers=performer["return"],
    )
    assert changed.status_code == 200, changed.text
    # The bridge consumes the status change (and both acceptances) in its own service.
    eventually(
        lambda: (
            find(spans, f"consume {STATUS_CHANGED}", "referral")
            and len(find(spans, f"consume {ACCEPTED}", "referral")) == 2
        ),
        "the bridge to consume the case workers' events",
    )

    # The NGO's referral request is the root of the trace.
    [request] = find(spans, "POST /v1/referrals", "referral", **{"http.response.status_code": 201})
    referral_trace = request.context.trace_id
    assert request.parent is None

    # Routing reached case-resolution in it, and both cases remember it.
    routed = find(spans, f"consume {ROUTED}", "case-resolution")
    assert len(routed) == 2
    assert {s.context.trace_id for s in routed} == {referral_trace}

    # The coach's acceptance is a request of its own, yet its work continues the referral's
    # trace, linked to that request's span; so does the counsellor's status change.
    for track, status in (("legal_stay", "accepted"), ("return", "accepted")):
        work = one(
            spans,
            "case change-status",
            "case-resolution",
            **{"twoline.track": track, "twoline.task.status": status},
        )
        assert work.context.trace_id == referral_trace
        http = one(
            spans,
            "POST /v1/cases/{case_id}/tracks/{track}/accept",
            "case-resolution",
            **{"url.path": f"/v1/cases/{case_ids[track]}/tracks/{track}/accept"},
        )
        assert http.context.trace_id != referral_trace
        assert [link.context.span_id for link in work.links] == [http.context.span_id]
    status_work = one(
        spans, "case change-status", "case-resolution", **{"twoline.task.status": "in-progress"}
    )
    assert status_work.context.trace_id == referral_trace

    # ... and the bridge hears of both acceptances and of the status change in that trace.
    bridge = find(spans, f"consume {ACCEPTED}", "referral") + find(
        spans, f"consume {STATUS_CHANGED}", "referral"
    )
    assert len(bridge) == 3
    assert {s.context.trace_id for s in bridge} == {referral_trace}

    # One trace id across the services of both zones and the bridge.
    in_trace = {
        service_of(s) for s in spans.get_finished_spans() if s.context.trace_id == referral_trace
    }
    assert {"referral", "case-resolution"} <= in_trace
    assert in_trace & {"intake", "consent"}, in_trace
    # The disclosure call to intake is part of the referral request.
    disclosure = [
        s
        for s in spans.get_finished_spans()
        if s.name == "answer svc.intake.disclosure" and service_of(s) == "intake"
    ]
    assert disclosure and {s.context.trace_id for s in disclosure} == {referral_trace}

    # F8: nothing of the person in any span's name, attributes, events, links or resource.
    text = span_text(spans)
    for field, value in c.items():
        assert value not in text, f"the {field} canary is in a span"
    assert client_ref not in text, "the NGO's client_ref is in a span"
