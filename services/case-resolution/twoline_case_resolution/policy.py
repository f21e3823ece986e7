"""Who may call which case-resolution route (zone B): ICAM coaches and Fedasil return counsellors,
each within their own agency and office (or on a case assigned to them).

F7: another office's or the other agency's case is a 404, and their queue shows none of it.
Acting on a track is for its performer only (OWN_TRACK). Health routes are kernel-public
(`twoline_shared.policy.KERNEL`).
"""

from twoline_shared.auth import Role
from twoline_shared.policy import Policy, Reach, Scope, allow

SECOND_LINE = (Role.ICAM_COACH, Role.RETURN_COUNSELLOR)
CASE = allow(*SECOND_LINE, scope=Scope.AGENCY_OFFICE)
TRACK = allow(*SECOND_LINE, scope=Scope.OWN_TRACK)

POLICY: Policy = {
    ("GET", "/v1/queue"): allow(*SECOND_LINE, scope=Scope.AGENCY_OFFICE, reach=Reach.LIST),
    ("GET", "/v1/cases/{case_id}"): CASE,
    ("POST", "/v1/cases/{case_id}/tracks/{track}/accept"): TRACK,
    ("POST", "/v1/cases/{case_id}/tracks/{track}/reject"): TRACK,
    ("POST", "/v1/cases/{case_id}/tracks/{track}/status"): TRACK,
    ("POST", "/v1/cases/{case_id}/tracks/{track}/complete"): TRACK,
    ("PUT", "/v1/cases/{case_id}/tracks/{track}/options/{option}"): TRACK,
    ("POST", "/v1/cases/{case_id}/tracks/{track}/steps"): TRACK,
    ("GET", "/v1/cases/{case_id}/tracks/{track}/steps/{step_id}"): TRACK,
    ("POST", "/v1/cases/{case_id}/sessions"): TRACK,
    ("GET", "/v1/cases/{case_id}/sessions/{session_id}"): TRACK,
    ("POST", "/v1/cases/{case_id}/decisions"): TRACK,
    ("GET", "/v1/cases/{case_id}/decisions/{decision_id}"): TRACK,
    # F5 step-up: the performer asks the NGO for more; only a new consent releases it.
    ("POST", "/v1/cases/{case_id}/disclosure-requests"): TRACK,
    ("GET", "/v1/cases/{case_id}/disclosure-requests/{request_id}"): TRACK,
}
