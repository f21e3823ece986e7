"""The dual-track story end to end, through the five real services, one real nats-server and
real databases: what the NGO sees at every step, and what the coach and the counsellor see and
do not see.

The person consents differently per agency: the Immigration Office gets identity, household,
migration history and needs, with feedback; Fedasil gets contact and intentions, without
feedback. Every personal field holds its own canary, so a leak names its field. The packages
travel sealed: each caseworker's read opens theirs with the key the bridge hands out.
"""

import json
import uuid

import pytest

from tests.conftest import FEDASIL_BRUSSELS, ICAM_BRUSSELS, NGO_GHENT, assert_problem, eventually
from tests.e2e.conftest import stream_payloads

pytestmark = pytest.mark.nats

FEDASIL_GHENT = {**FEDASIL_BRUSSELS, "office": "ghent"}
ICAM_CATEGORIES = ["household", "identity", "migration_history", "needs"]
FEDASIL_CATEGORIES = ["contact", "intentions"]


def canaries() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        field: f"cny{field.replace('_', '')}{tag}"
        for field in (
            "display_name",
            "phone",
            "relation",
            "asylum",
            "need",
            "health",
            "plans",
            "case_notes",
        )
    }


def client_body(c: dict[str, str]) -> dict:
    return {
        "display_name": c["display_name"],
        "birth_year": 1991,
        "nationality": "GN",
        "languages": ["fr"],
        "municipality": "Gent",
        "phone": c["phone"],
        "household": [{"relation": c["relation"], "birth_year": 2018}],
        "migration_history": {"asylum_procedures": c["asylum"], "years_in_country": 5},
        "needs": [c["need"], "shelter"],
        "health": {"condition": c["health"]},
        "vulnerabilities": ["minor"],
        "intentions": {"plans": c["plans"]},
        "case_notes": c["case_notes"],
    }


# The canaries of each category, as the person filled them in.
CATEGORY_CANARIES = {
    "identity": ["display_name"],
    "contact": ["phone"],
    "household": ["relation"],
    "migration_history": ["asylum"],
    "needs": ["need"],
    "health": ["health"],
    "intentions": ["plans"],
    "case_notes": ["case_notes"],
}


def only_these_canaries(text: str, c: dict[str, str], allowed_categories: list[str]) -> None:
    for category, fields in CATEGORY_CANARIES.items():
        for field in fields:
            if category in allowed_categories:
                assert c[field] in text, f"{category} ({field}) should be disclosed"
            else:
                assert c[field] not in text, f"{category} ({field}) leaked"


def test_dual_track_story_from_registration_to_outcome(stack, issuer, nats_server):
    ngo = issuer.headers(sub="ngo-cw-1", **NGO_GHENT)
    coach = issuer.headers(sub="coach-1", **ICAM_BRUSSELS)
    counsellor = issuer.headers(sub="counsellor-1", **FEDASIL_GHENT)
    counsellor_elsewhere = issuer.headers(sub="counsellor-2", **FEDASIL_BRUSSELS)
    intake, consent, referral, cases = (
        stack["intake"],
        stack["consent"],
        stack["referral"],
        stack["case"],
    )
    c = canaries()
    today = "2026-11-20"

    # ---- the NGO registers the person, logs an outreach contact, records two consents
    created = intake.post("/v1/clients", json=client_body(c), headers=ngo)
    assert created.status_code == 201, created.text
    client_ref = created.json()["client_ref"]
    contact = intake.post(
        f"/v1/clients/{client_ref}/contacts",
        json={
            "kind": "inform",
            "topics": ["legal_stay", "return"],
            "language": "fr",
            "date": today,
        },
        headers=ngo,
    )
    assert contact.status_code == 201, contact.text

    def grant(recipient: str, purposes: list[str], categories: list[str]) -> dict:
        response = consent.post(
            "/v1/consents",
            headers=ngo,
            json={
                "client_ref": client_ref,
                "recipient": recipient,
                "purposes": purposes,
                "categories": categories,
                "method": "written",
                "language": "fr",
                "interpreter": True,
                "information_version": "2026-11",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()

    # At once, as the NGO's case-management system does: no pause after the registration.
    icam_consent = grant("immigration_office", ["referral", "feedback"], ICAM_CATEGORIES)
    fedasil_consent = grant("fedasil", ["referral"], FEDASIL_CATEGORIES)
    assert icam_consent["status"] == fedasil_consent["status"] == "active"

    # ---- the NGO refers for both tracks (idempotently), right after the consents
    key = {"Idempotency-Key": f"story-{uuid.uuid4().hex}"}
    body = {"client_ref": client_ref, "tracks": ["legal_stay", "return"], "note": c["case_notes"]}
    first = referral.post("/v1/referrals", json=body, headers={**ngo, **key})
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/v1/referrals/{first.json()['referral_id']}"
    # Its answer lost, the NGO's system sends it again: the same referral, nothing routed twice.
    replay = referral.post("/v1/referrals", json=body, headers={**ngo, **key})
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (201, "true")
    assert replay.json()["referral_id"] == first.json()["referral_id"]
    referral_id = first.json()["referral_id"]
    tracks = {t["track"]: t for t in first.json()["tracks"]}
    assert tracks["legal_stay"]["agency"] == "immigration_office"
    assert tracks["return"]["agency"] == "fedasil"
    assert {t["status"] for t in tracks.values()} == {"requested"}
    assert {t["business_status"] for t in tracks.values()} == {"routed"}
    # Routing uses only what each agency may see: Fedasil has `contact`, so the municipality
    # (Gent) routes it to Ghent; the Immigration Office has no `contact` and gets its default.
    assert tracks["return"]["office"] == "ghent"
    assert tracks["legal_stay"]["office"] == "brussels"

    def ngo_sees(track: str, status: str) -> dict:
        def probe():
            response = referral.get(f"/v1/referrals/{referral_id}", headers=ngo)
            assert response.status_code == 200, response.text
            view = {t["track"]: t for t in response.json()["tracks"]}
            return view if view[track]["status"] == status else None

        return eventually(probe, f"the NGO to see {track} {status}")

    # ---- office queues (F7): each agency's track in its own office only
    def queue(headers) -> list[dict]:
        response = cases.get("/v1/queue", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    icam_queue = eventually(lambda: queue(coach), "the legal-stay case in Brussels")
    fedasil_queue = eventually(lambda: queue(counsellor), "the return case in Ghent")
    assert [i["track"] for i in icam_queue] == ["legal_stay"]
    assert [i["track"] for i in fedasil_queue] == ["return"]
    assert queue(counsellor_elsewhere) == []
    legal_id, return_id = icam_queue[0]["case_id"], fedasil_queue[0]["case_id"]

    # ---- what the coach sees: exactly the Immigration Office's categories
    legal_case = cases.get(f"/v1/cases/{legal_id}", headers=coach)
    assert legal_case.status_code == 200, legal_case.text
    legal = legal_case.json()
    assert sorted(legal["disclosure"]) == ICAM_CATEGORIES
    assert legal["disclosure"]["identity"]["display_name"] == c["display_name"]
    assert legal["disclosure"]["identity"]["nationality"] == "GN"
    assert legal["disclosure"]["household"]["household"][0]["relation"] == c["relation"]
    assert legal["disclosure"]["needs"]["languages"] == ["fr"]
    only_these_canaries(legal_case.text, c, ICAM_CATEGORIES)
    assert client_ref not in legal_case.text and referral_id not in legal_case.text
    # the referral note is for the bridge, never for zone B
    assert c["case_notes"] not in legal_case.text

    # ---- what the counsellor sees: Fedasil's categories, no identity, another pseudonym
    return_case = cases.get(f"/v1/cases/{return_id}", headers=counsellor)
    assert return_case.status_code == 200, return_case.text
    ret = return_case.json()
    assert sorted(ret["disclosure"]) == FEDASIL_CATEGORIES
    assert ret["disclosure"]["contact"]["municipality"] == "Gent"
    assert ret["disclosure"]["intentions"]["intentions"]["plans"] == c["plans"]
    only_these_canaries(return_case.text, c, FEDASIL_CATEGORIES)
    assert ret["case_ref"] != legal["case_ref"]
    assert client_ref not in return_case.text and referral_id not in return_case.text
    # and neither sees the other's case
    assert cases.get(f"/v1/cases/{return_id}", headers=coach).status_code == 404
    assert cases.get(f"/v1/cases/{legal_id}", headers=counsellor).status_code == 404

    # ---- the coach works the legal-stay track
    ok = cases.post(f"/v1/cases/{legal_id}/tracks/legal_stay/accept", headers=coach)
    assert ok.status_code == 200, ok.text
    assert ngo_sees("legal_stay", "accepted")["legal_stay"]["business_status"] == "assigned"
    assert_problem(
        cases.post(f"/v1/cases/{legal_id}/tracks/legal_stay/accept", headers=coach),
        409,
        "illegal-transition",
    )
    moved = cases.post(
        f"/v1/cases/{legal_id}/tracks/legal_stay/status",
        json={"status": "in-progress"},
        headers=coach,
    )
    assert moved.status_code == 200, moved.text
    ngo_sees("legal_stay", "in-progress")
    session = cases.post(
        f"/v1/cases/{legal_id}/sessions",
        json={
            "date": today,
            "mode": "in_person",
            "language": "fr",
            "interpreter": False,
            "topics": ["legal_stay_options"],
        },
        headers=coach,
    )
    assert session.status_code == 201, session.text
    for option, assessment in (("9bis", "viable"), ("international_protection", "not_viable")):
        put = cases.put(
            f"/v1/cases/{legal_id}/tracks/legal_stay/options/{option}",
            json={"assessment": assessment},
            headers=coach,
        )
        assert put.status_code == 200, put.text
    decision = cases.post(
        f"/v1/cases/{legal_id}/decisions",
        json={"decision": "pursue_legal_stay", "option": "9bis", "date": today},
        headers=coach,
    )
    assert decision.status_code == 201, decision.text

    # ---- the counsellor works the return track; the person declines return
    ok = cases.post(f"/v1/cases/{return_id}/tracks/return/accept", headers=counsellor)
    assert ok.status_code == 200, ok.text
    seen = ngo_sees("return", "accepted")["return"]
    # no feedback consent for Fedasil: the NGO sees the status, nothing more (F6)
    assert seen["feedback"] is False
    assert seen["outcome"] is None and seen["progress"] is None
    for step in ("informing", "considering"):
        response = cases.post(
            f"/v1/cases/{return_id}/tracks/return/steps", json={"step": step}, headers=counsellor
        )
        assert response.status_code == 201, response.text
    declined = cases.post(
        f"/v1/cases/{return_id}/decisions",
        json={"decision": "decline_return", "date": today},
        headers=counsellor,
    )
    assert declined.status_code == 201, declined.text
    ret = cases.get(f"/v1/cases/{return_id}", headers=counsellor).json()
    assert ret["return_step"] == "declined_by_client"
    assert [d["decision"] for d in ret["decisions"]] == ["decline_return"]
    assert ret["decisions"][0]["decided_by"] == "client"
    hold = cases.post(
        f"/v1/cases/{return_id}/tracks/return/status",
        json={"status": "on-hold", "reason": "declined_by_client"},
        headers=counsellor,
    )
    assert hold.status_code == 200, hold.text
    on_hold = ngo_sees("return", "on-hold")["return"]
    assert on_hold["status_reason"] is None  # no feedback consent

    # ---- the legal-stay track completes; the NGO sees the outcome (feedback consented)
    granted = cases.put(
        f"/v1/cases/{legal_id}/tracks/legal_stay/options/9bis",
        json={"assessment": "granted"},
        headers=coach,
    )
    assert granted.status_code == 200, granted.text
    done = cases.post(
        f"/v1/cases/{legal_id}/tracks/legal_stay/complete",
        json={"outcome": "legal_stay"},
        headers=coach,
    )
    assert done.status_code == 200, done.text
    final = ngo_sees("legal_stay", "completed")
    legal_track = final["legal_stay"]
    assert legal_track["feedback"] is True
    assert legal_track["outcome"] == "legal_stay"
    assert legal_track["outcome_category"] == "permanent"
    assert legal_track["business_status"] == "closed"
    statuses = [p["status"] for p in legal_track["progress"] if p["status"] != "requested"]
    assert statuses == ["accepted", "in-progress", "completed"]
    assert final["return"]["status"] == "on-hold"

    # ---- what the coach's case holds at the end
    legal = cases.get(f"/v1/cases/{legal_id}", headers=coach).json()
    assert legal["status"] == "completed" and legal["outcome"] == "legal_stay"
    options = {o["option"]: o["assessment"] for o in legal["options"]}
    assert options == {"9bis": "granted", "international_protection": "not_viable"}
    assert len(legal["sessions"]) == 1
    # a closed track accepts no more work
    assert_problem(
        cases.put(
            f"/v1/cases/{legal_id}/tracks/legal_stay/options/9ter",
            json={"assessment": "viable"},
            headers=coach,
        ),
        409,
    )

    # ---- F4, F8 at the broker: the second-line stream holds the disclosure packages only
    # sealed inside the routed events, so no canary at all, consented or not; the audit stream
    # holds no personal data at all.
    second_line = asyncio_payloads(nats_server, "SECONDLINE", "sl-admin")
    routed = [p for p in second_line if b"track.routed" in p]
    others = [p for p in second_line if b"track.routed" not in p]
    assert len(routed) == 2 and others
    for payload in routed:
        disclosure = json.loads(payload)["data"]["disclosure"]
        assert set(disclosure) == {"categories", "key_id", "nonce", "ciphertext"}
    for payload in second_line:
        for value in c.values():
            assert value.encode() not in payload
    for payload in asyncio_payloads(nats_server, "AUDIT", "audit-admin"):
        for value in c.values():
            assert value.encode() not in payload


def asyncio_payloads(nats_server, stream: str, admin: str) -> list[bytes]:
    import asyncio

    return asyncio.run(stream_payloads(nats_server, stream, admin))


def test_a_referral_without_consent_reaches_no_queue(stack, issuer, nats_server):
    ngo = issuer.headers(**NGO_GHENT)
    coach = issuer.headers(**ICAM_BRUSSELS)
    created = stack["intake"].post("/v1/clients", json={"display_name": "X"}, headers=ngo)
    client_ref = created.json()["client_ref"]

    refused = stack["referral"].post(
        "/v1/referrals", json={"client_ref": client_ref, "tracks": ["legal_stay"]}, headers=ngo
    )
    body = assert_problem(refused, 422, "consent-missing")
    assert body["missing_consent"] == ["immigration_office"]
    assert stack["case"].get("/v1/queue", headers=coach).json() == {"data": [], "count": 0}
    listed = stack["referral"].get(f"/v1/referrals?client_ref={client_ref}", headers=ngo)
    assert listed.json()["count"] == 0
    # nothing was routed: the second-line stream never saw a message
    assert asyncio_payloads(nats_server, "SECONDLINE", "sl-admin") == []
