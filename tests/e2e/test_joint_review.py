"""Joint review (F5, F6), all five services on one real nats-server, through the public APIs.

The person consents, for each agency, to `joint_review`: the ICAM coach then sees the Fedasil
track's status and outcome next to their own case, and the return counsellor the ICAM track's
— status and outcome only, never the other case's reference, notes or disclosure. A person who
did not consent to it gets two cases that know nothing of each other, and withdrawing one of
the two consents unlinks them at the next read.
"""

from typing import Any

import pytest

from tests.e2e.stories import Story

pytestmark = pytest.mark.nats
JOINT = ["referral", "feedback", "joint_review"]


def _shown(response: Any) -> tuple[str, list[dict[str, Any]]]:
    review = response.json()["joint_review"]
    return review["status"], [
        {k: t[k] for k in ("agency", "track", "status", "outcome", "outcome_category")}
        for t in review["tracks"]
    ]


def test_under_joint_review_coach_and_counsellor_see_each_others_track(stack, issuer):
    story = Story(stack, issuer, JOINT)
    story.act("return", "status", {"status": "on-hold", "reason": "awaiting_documents"})
    story.act("legal_stay", "complete", {"outcome": "legal_stay", "note": "9bis granted"})

    coach_view, counsellor_view = story.read("legal_stay"), story.read("return")

    assert _shown(coach_view) == (
        "linked",
        [
            {
                "agency": "fedasil",
                "track": "return",
                "status": "on-hold",
                "outcome": None,
                "outcome_category": None,
            }
        ],
    )
    assert _shown(counsellor_view) == (
        "linked",
        [
            {
                "agency": "immigration_office",
                "track": "legal_stay",
                "status": "completed",
                "outcome": "legal_stay",
                "outcome_category": "permanent",
            }
        ],
    )
    # Nothing of the other case itself: not its id, reference, note or reason.
    coach_case, counsellor_case = coach_view.json(), counsellor_view.json()
    for hidden in (coach_case["case_id"], coach_case["case_ref"], "9bis granted"):
        assert hidden not in counsellor_view.text
    for hidden in (counsellor_case["case_id"], counsellor_case["case_ref"], "awaiting_documents"):
        assert hidden not in coach_view.text

    # The client withdraws the Fedasil consent: the next read of either case shows no link.
    withdrawn = stack["consent"].post(
        f"/v1/consents/{story.consents['fedasil']}/withdraw", headers=story.ngo
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert _shown(story.read("legal_stay")) == ("not_consented", [])
    assert _shown(story.read("return")) == ("not_consented", [])


def test_without_joint_review_the_two_cases_know_nothing_of_each_other(stack, issuer):
    story = Story(stack, issuer, ["referral", "feedback"])
    story.act("legal_stay", "complete", {"outcome": "legal_stay"})

    coach_view, counsellor_view = story.read("legal_stay"), story.read("return")

    assert _shown(coach_view) == ("not_consented", [])
    assert _shown(counsellor_view) == ("not_consented", [])
    assert "fedasil" not in str(coach_view.json()["joint_review"])
    assert "legal_stay" not in counsellor_view.text
