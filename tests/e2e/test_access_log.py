"""The person can know who looked (F9), all five services on one real nats-server.

Each read of a disclosure in zone B reaches the bridge as ids and codes; the NGO caseworker
reads, per referral, which role of which agency and office read which categories and when —
never a case worker's name — and another NGO cannot read it at all.
"""

import pytest

from tests.conftest import NGO_GHENT, eventually
from tests.e2e.stories import Story

pytestmark = pytest.mark.nats


def test_the_ngo_sees_who_read_which_categories_and_when(stack, issuer):
    story = Story(stack, issuer, ["referral", "feedback"])
    for track in ("legal_stay", "return", "legal_stay"):
        assert story.read(track).json()["disclosure_status"] == "disclosed"
    path = f"/v1/referrals/{story.referral_id}/access-log"

    def logged():
        response = stack["referral"].get(path, headers=story.ngo)
        assert response.status_code == 200, response.text
        body = response.json()
        return body if body["count"] == 3 else None

    body = eventually(logged, "the three reads to reach the bridge")

    assert [(e["track"], e["role"], e["agency"], e["office"]) for e in body["data"]] == [
        ("legal_stay", "icam_coach", "immigration_office", "brussels"),
        ("return", "return_counsellor", "fedasil", "brussels"),
        ("legal_stay", "icam_coach", "immigration_office", "brussels"),
    ]
    assert {tuple(e["categories"]) for e in body["data"]} == {("identity", "needs")}
    times = [e["read_at"] for e in body["data"]]
    assert times == sorted(times)
    # Who, by role and office: never the case worker's name (token `sub`).
    response = stack["referral"].get(path, headers=story.ngo)
    assert "coach-1" not in response.text and "counsellor-1" not in response.text
    # Another NGO gets the same 404 as for an unknown referral (F7).
    other = issuer.headers(**{**NGO_GHENT, "org": "ngo-liege"})
    assert stack["referral"].get(path, headers=other).status_code == 404


def test_a_read_after_withdrawal_shows_nothing_and_adds_nothing_to_the_log(stack, issuer):
    story = Story(stack, issuer, ["referral", "feedback"])
    path = f"/v1/referrals/{story.referral_id}/access-log"
    shown = [story.read("return").json()["disclosure_status"]]

    def entries() -> list[dict]:
        response = stack["referral"].get(path, headers=story.ngo, params={"limit": 200})
        assert response.status_code == 200, response.text
        return response.json()["data"]

    withdrawn = stack["consent"].post(
        f"/v1/consents/{story.consents['fedasil']}/withdraw", headers=story.ngo
    )
    assert withdrawn.status_code == 200, withdrawn.text

    # From the withdrawal's 200 on, every read shows nothing and logs nothing (the bridge asks
    # the consent service for each key).
    for _ in range(3):
        assert story.read("return").json()["disclosure_status"] == "withdrawn"
    # The coach's case, under the other consent, still reads and is logged.
    assert story.read("legal_stay").json()["disclosure_status"] == "disclosed"

    logged_reads = shown.count("disclosed")
    eventually(
        lambda: len(entries()) == logged_reads + 1 or None, "every logged read to reach the bridge"
    )
    tracks = [e["track"] for e in entries()]
    assert sorted(tracks) == sorted(["return"] * logged_reads + ["legal_stay"])
