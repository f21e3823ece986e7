"""All five services on one real nats-server: NGO → consent → referral → office queues → accept.

The foundation slice of the referral flow, driven through the public APIs only, with every hop
an event through the outbox, the broker and an inbox.
"""

import asyncio
import json
import uuid

import pytest

from tests.conftest import AUDITOR, FEDASIL_BRUSSELS, ICAM_BRUSSELS, NGO_GHENT, eventually
from tests.e2e.conftest import stream_payloads

pytestmark = pytest.mark.nats


def test_ngo_referral_reaches_both_office_queues_and_acceptance_flows_back(
    stack, issuer, nats_server
):
    ngo = issuer.headers(**NGO_GHENT)
    coach = issuer.headers(sub="coach-1", **ICAM_BRUSSELS)
    counsellor = issuer.headers(sub="counsellor-1", **FEDASIL_BRUSSELS)
    canary = f"Canary-{uuid.uuid4().hex}"

    client = stack["intake"].post(
        "/v1/clients", json={"display_name": canary, "languages": ["fr"]}, headers=ngo
    )
    assert client.status_code == 201, client.text
    client_ref = client.json()["client_ref"]

    def grant(recipient: str) -> str:
        response = stack["consent"].post(
            "/v1/consents",
            headers=ngo,
            json={
                "client_ref": client_ref,
                "recipient": recipient,
                "purposes": ["referral", "feedback"],
                "categories": ["needs"],
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    # Each step right after the one before: consent and the bridge read their writes (the
    # consent service asks intake about the client, the bridge asks the consent service).
    grant("immigration_office")
    grant("fedasil")

    body = {"client_ref": client_ref, "tracks": ["legal_stay", "return"], "urgency": "urgent"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    response = stack["referral"].post("/v1/referrals", json=body, headers={**ngo, **key})
    assert response.status_code == 201, response.text
    referral = response.json()
    tracks = {t["track"]: t for t in referral["tracks"]}
    assert {t["agency"] for t in tracks.values()} == {"immigration_office", "fedasil"}
    assert all(t["status"] == "requested" for t in tracks.values())

    def queue(headers):
        response = stack["case"].get("/v1/queue", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    icam_queue = eventually(lambda: queue(coach), "the ICAM office queue")
    fedasil_queue = eventually(lambda: queue(counsellor), "the Fedasil office queue")
    assert [c["track"] for c in icam_queue] == ["legal_stay"]
    assert [c["track"] for c in fedasil_queue] == ["return"]
    # F5: the two agencies share no reference, and neither sees the NGO's
    assert icam_queue[0]["case_ref"] != fedasil_queue[0]["case_ref"]
    for item in icam_queue + fedasil_queue:
        assert client_ref not in json.dumps(item)
        assert referral["referral_id"] not in json.dumps(item)

    case_id = icam_queue[0]["case_id"]
    accepted = stack["case"].post(f"/v1/cases/{case_id}/tracks/legal_stay/accept", headers=coach)
    assert accepted.status_code == 200, accepted.text
    assert queue(coach) == []

    def ngo_view():
        response = stack["referral"].get(f"/v1/referrals/{referral['referral_id']}", headers=ngo)
        statuses = {t["track"]: t["status"] for t in response.json()["tracks"]}
        return statuses if statuses["legal_stay"] == "accepted" else None

    statuses = eventually(ngo_view, "the acceptance to reach the NGO")
    assert statuses == {"legal_stay": "accepted", "return": "requested"}

    # Every service's audit records reach the verifiable log, and the chain holds.
    auditor = issuer.headers(**AUDITOR)

    def audited_services():
        response = stack["audit"].get("/v1/log/entries?limit=500", headers=auditor)
        return {e["type"].split(".")[1] for e in response.json()["data"]}

    expected = {"intake", "consent", "referral", "case-resolution"}
    eventually(lambda: expected <= audited_services(), "audit records from every service")
    assert stack["audit"].get("/v1/log/verify", headers=auditor).json()["ok"] is True

    # F8 / F5 at the broker: no personal data and no first-line reference in zone B's stream,
    # and no personal data in the audit stream.
    second_line = asyncio.run(stream_payloads(nats_server, "SECONDLINE", "sl-admin"))
    assert second_line
    for payload in second_line:
        assert client_ref.encode() not in payload
        assert referral["referral_id"].encode() not in payload
        assert canary.encode() not in payload
    for payload in asyncio.run(stream_payloads(nats_server, "AUDIT", "audit-admin")):
        assert canary.encode() not in payload
