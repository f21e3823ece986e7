"""Step-up disclosure (F5), all five services on one real nats-server, through the public APIs:
the NGO refers with `needs` only, the ICAM coach asks for `identity`, the NGO sees the request,
grants a new consent that includes `identity`, and the coach reads it — sealed on the way (the
identity canary never appears in the SECONDLINE stream), and shredded again on withdrawal (F4).
"""

import asyncio
import uuid

import pytest

from tests.conftest import ICAM_BRUSSELS, NGO_GHENT, eventually
from tests.e2e.conftest import stream_payloads

pytestmark = pytest.mark.nats


def test_coach_asks_for_identity_and_reads_it_once_the_ngo_grants_a_new_consent(
    stack, issuer, nats_server
):
    ngo = issuer.headers(**NGO_GHENT)
    coach = issuer.headers(sub="coach-1", **ICAM_BRUSSELS)
    canary = f"Canary-{uuid.uuid4().hex}"

    client = stack["intake"].post(
        "/v1/clients",
        json={"display_name": canary, "languages": ["fr"], "needs": ["shelter"]},
        headers=ngo,
    )
    assert client.status_code == 201, client.text
    client_ref = client.json()["client_ref"]

    def grant(categories: list[str]) -> str:
        response = stack["consent"].post(
            "/v1/consents",
            headers=ngo,
            json={
                "client_ref": client_ref,
                "recipient": "immigration_office",
                "purposes": ["referral", "feedback"],
                "categories": categories,
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    first = grant(["needs"])
    referred = stack["referral"].post(
        "/v1/referrals", json={"client_ref": client_ref, "tracks": ["legal_stay"]}, headers=ngo
    )
    assert referred.status_code == 201, referred.text

    def queued():
        response = stack["case"].get("/v1/queue", headers=coach)
        return response.json()["data"] if response.status_code == 200 else None

    [item] = eventually(queued, "the ICAM office queue")
    case_id = item["case_id"]
    accepted = stack["case"].post(f"/v1/cases/{case_id}/tracks/legal_stay/accept", headers=coach)
    assert accepted.status_code == 200, accepted.text

    def read_case():
        response = stack["case"].get(f"/v1/cases/{case_id}", headers=coach)
        assert response.status_code == 200, response.text
        return response.json()

    before = eventually(
        lambda: c if (c := read_case())["disclosure_status"] == "disclosed" else None,
        "the needs package to open",
    )
    assert set(before["disclosure"]) == {"needs"}
    assert canary not in str(before)

    # The coach asks for identity (a code says why); the NGO sees it pending.
    asked = stack["case"].post(
        f"/v1/cases/{case_id}/disclosure-requests",
        json={"categories": ["identity"], "reason": "identity_verification"},
        headers=coach,
    )
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["request_id"]

    def ngo_pending():
        response = stack["referral"].get(
            "/v1/disclosure-requests", params={"status": "pending"}, headers=ngo
        )
        return response.json()["data"] if response.status_code == 200 else None

    [pending] = eventually(ngo_pending, "the request to reach the NGO")
    assert (pending["request_id"], pending["client_ref"], pending["categories"]) == (
        request_id,
        client_ref,
        ["identity"],
    )

    # Only a new consent releases it: the NGO records one for needs and identity.
    second = grant(["identity", "needs"])
    assert second and second != first

    def released():
        case = read_case()
        statuses = [r["status"] for r in case["disclosure_requests"]]
        return (
            case if statuses == ["released"] and "identity" in (case["disclosure"] or {}) else None
        )

    after = eventually(released, "the updated package to reach the coach")
    assert after["disclosed_categories"] == ["identity", "needs"]
    assert after["disclosure"]["identity"]["display_name"] == canary

    # Sealed in the stream: the canary never travelled in plaintext, nor the client_ref.
    for payload in asyncio.run(stream_payloads(nats_server, "SECONDLINE", "sl-admin")):
        assert canary.encode() not in payload
        assert client_ref.encode() not in payload

    # Withdrawing the new consent makes the data unreadable again (F4).
    withdrawn = stack["consent"].post(
        f"/v1/consents/{second}/withdraw", json={"reason": "The client asked."}, headers=ngo
    )
    assert withdrawn.status_code == 200, withdrawn.text
    gone = read_case()  # at once: the bridge asks the consent service for the key
    assert gone["disclosure_status"] == "withdrawn"
    assert gone["disclosure"] is None
    assert canary not in str(gone)
