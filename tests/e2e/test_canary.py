"""F8, the canary test: a unique canary string in every personal field, some categories consented
to one agency, a referral, the caseworker's read — then every place personal data must not be is
scanned: every table of the bridge, case-resolution and audit databases, the raw bytes of every
message in the second-line and audit streams, every log record of every service, and every span.

Non-consented canaries appear nowhere. Consented canaries appear only in the decrypted API
response to the authorised caseworker. After withdrawal, no canary appears in any zone-B response.
"""

import asyncio
import logging
import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.canaries import FIELDS, client_body, database_text, make_canaries
from tests.conftest import AUDITOR, FEDASIL_BRUSSELS, ICAM_BRUSSELS, NGO_GHENT, eventually
from tests.e2e.conftest import stream_payloads

pytestmark = pytest.mark.nats

CONSENTED = ["household", "migration_history", "needs"]


def consented(c: dict[str, str]) -> dict[str, str]:
    return {f: v for f, v in c.items() if FIELDS[f] in CONSENTED}


def not_consented(c: dict[str, str]) -> dict[str, str]:
    allowed = consented(c)
    return {f: v for f, v in c.items() if f not in allowed}


def span_text(exporter: InMemorySpanExporter) -> str:
    parts: list[str] = []
    for span in exporter.get_finished_spans():
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        for event in span.events:
            parts.append(event.name + repr(dict(event.attributes or {})))
        parts.append(repr(span.resource.attributes))
    return "\n".join(parts)


def log_text(records: list[logging.LogRecord]) -> str:
    parts: list[str] = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


def test_canaries_reach_only_the_authorised_caseworker_and_vanish_on_withdrawal(
    stack, spans, issuer, nats_server, caplog
):
    caplog.set_level(logging.DEBUG)
    ngo = issuer.headers(**NGO_GHENT)
    coach = issuer.headers(sub="coach-canary", **ICAM_BRUSSELS)
    counsellor = issuer.headers(sub="counsellor-canary", **FEDASIL_BRUSSELS)
    auditor = issuer.headers(**AUDITOR)
    c = make_canaries()

    created = stack["intake"].post("/v1/clients", json=client_body(c), headers=ngo)
    assert created.status_code == 201, created.text
    client_ref = created.json()["client_ref"]

    def grant():
        response = stack["consent"].post(
            "/v1/consents",
            headers=ngo,
            json={
                "client_ref": client_ref,
                "recipient": "immigration_office",
                "purposes": ["referral", "feedback"],
                "categories": CONSENTED,
                "method": "verbal",
                "language": "fr",
                "interpreter": True,
                "information_version": "2026-11",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()

    consent = grant()
    referred = stack["referral"].post(
        "/v1/referrals", json={"client_ref": client_ref, "tracks": ["legal_stay"]}, headers=ngo
    )
    assert referred.status_code == 201, referred.text
    referral = referred.json()

    def queued():
        response = stack["case"].get("/v1/queue", headers=coach)
        return response.json()["data"]

    case_id = eventually(queued, "the case in the queue")[0]["case_id"]
    read = stack["case"].get(f"/v1/cases/{case_id}", headers=coach)
    assert read.status_code == 200, read.text
    # The authorised caseworker sees exactly the consented canaries ...
    for field, value in consented(c).items():
        assert value in read.text, f"consented {field} missing from the caseworker's view"
    for field, value in not_consented(c).items():
        assert value not in read.text, f"{field} was not consented but reached zone B"
    # ... and the other agency, without consent, sees no case at all.
    assert stack["case"].get("/v1/queue", headers=counsellor).json()["count"] == 0
    assert stack["case"].get(f"/v1/cases/{case_id}", headers=counsellor).status_code == 404

    # Let the audit records of the read reach the audit service before scanning.
    def audit_settled() -> bool:
        runtime = stack["audit"].app.state.runtime
        return "case-resolution" in database_text(runtime.engine)

    eventually(audit_settled, "the audit log to hold case-resolution records")

    def traced():
        response = stack["audit"].get(f"/v1/traces/{referral['referral_id']}", headers=auditor)
        return response if response.status_code == 200 else None

    trace = eventually(traced, "the referral's trace")

    everywhere = {
        "the bridge's database": database_text(stack["referral"].app.state.runtime.engine),
        "the case-resolution database": database_text(stack["case"].app.state.runtime.engine),
        "the audit database": database_text(stack["audit"].app.state.runtime.engine),
        "the SECONDLINE stream": b"\n".join(
            asyncio.run(stream_payloads(nats_server, "SECONDLINE", "sl-admin"))
        ).decode(errors="replace"),
        "the AUDIT stream": b"\n".join(
            asyncio.run(stream_payloads(nats_server, "AUDIT", "audit-admin"))
        ).decode(errors="replace"),
        "the services' logs": log_text(caplog.records),
        "the exported spans": span_text(spans),
        # What the auditor and the NGO read about the flow: ids, roles and codes only.
        "the auditor's flow trace": trace.text,
        "the auditor's statistics": stack["audit"].get("/v1/stats", headers=auditor).text,
        "the NGO's access log": stack["referral"]
        .get(f"/v1/referrals/{referral['referral_id']}/access-log", headers=ngo)
        .text,
    }
    assert all(everywhere.values()), [k for k, v in everywhere.items() if not v]
    for place, text in everywhere.items():
        for field, value in c.items():
            assert value not in text, f"the {field} canary is in {place}"

    # Withdrawal: within 5 seconds no zone-B response holds any canary.
    withdrawn = stack["consent"].post(
        f"/v1/consents/{consent['consent_id']}/withdraw", json={}, headers=ngo
    )
    assert withdrawn.status_code == 200, withdrawn.text
    started = time.monotonic()

    def purged():
        response = stack["case"].get(f"/v1/cases/{case_id}", headers=coach)
        return response if not any(v in response.text for v in c.values()) else None

    after = eventually(purged, "the disclosure to disappear from zone B", timeout=5.0)
    assert time.monotonic() - started <= 5.0
    assert after.status_code == 200
    assert after.json()["disclosure"] is None
    assert after.json()["disclosure_status"] == "withdrawn"
    assert referral["referral_id"] not in after.text
