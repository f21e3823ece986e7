"""A referral's flow trace, all five services on one real nats-server: the auditor follows one
client's referral from the consents through the bridge to both cases in zone B, in the audit
log, and finds nothing wrong with a clean flow.
"""

from collections import Counter
from typing import Any

import pytest

from tests.conftest import AUDITOR, eventually
from tests.e2e.stories import Story
from twoline_audit.routes import get_trace_grace

pytestmark = pytest.mark.nats

# (service, resource_type, action) of the chain, and how often: per agency one of each.
CHAIN = Counter(
    {
        ("consent", "consent", "create"): 2,
        ("referral", "track", "disclose"): 2,
        ("referral", "referral", "create"): 1,
        ("case-resolution", "case", "create"): 2,
        ("case-resolution", "case", "accept"): 2,
        ("referral", "track", "update"): 2,
        ("referral", "disclosure-key", "release"): 2,
        ("case-resolution", "case", "read"): 2,
    }
)


def test_a_referrals_trace_holds_its_whole_chain_across_the_services_and_no_findings(stack, issuer):
    story = Story(stack, issuer, ["referral", "feedback"])
    for track in ("legal_stay", "return"):
        assert story.read(track).json()["disclosure_status"] == "disclosed"
    auditor = issuer.headers(**AUDITOR)
    path = f"/v1/traces/{story.referral_id}"

    def complete() -> dict[str, Any] | None:
        response = stack["audit"].get(path, headers=auditor)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body = response.json()
        seen = Counter((r["service"], r["resource_type"], r["action"]) for r in body["records"])
        return body if all(seen[k] >= n for k, n in CHAIN.items()) else None

    eventually(complete, "every service's records of the referral in the audit log")
    # Everything has arrived: judged with no grace period, nothing is waiting to be consumed.
    stack["audit"].app.dependency_overrides[get_trace_grace] = lambda: 0.0
    body = stack["audit"].get(path, headers=auditor).json()

    assert body["findings"] == []
    records = body["records"]
    assert body["count"] == len(records)
    assert [r["index"] for r in records] == sorted({r["index"] for r in records})
    tracks = {r["track_id"] for r in records if r["track_id"]}
    consents = {r["consent_id"] for r in records if r["consent_id"]}
    assert len(tracks) == 2 and consents == set(story.consents.values())
    [created] = [r for r in records if r["resource_type"] == "referral"]
    assert created["resource_id"] == story.referral_id
    assert set(created["track_ids"]) == tracks
    accepted = [r for r in records if r["action"] == "accept"]
    assert {(r["track"], tuple(r["roles"]), r["agency"]) for r in accepted} == {
        ("legal_stay", ("icam_coach",), "immigration_office"),
        ("return", ("return_counsellor",), "fedasil"),
    }
    # Zone A's client record never joins the trace, nor its pseudonym or anyone's name.
    assert all(r["service"] != "intake" for r in records)
    assert story.client_ref not in repr(body) and story.canary not in repr(body)
