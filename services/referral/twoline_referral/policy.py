"""Who may call which referral route (the bridge's NGO-facing API): NGO caseworkers, each within
their own org only.

Zone B reaches the bridge through events, not through these routes. F7: another org's client or
referral is a 404. Health routes are kernel-public (`twoline_shared.policy.KERNEL`).
"""

from twoline_shared.auth import Role
from twoline_shared.policy import Policy, Reach, Scope, allow

CASEWORKER = allow(Role.NGO_CASEWORKER, scope=Scope.ORG)

POLICY: Policy = {
    # Names a client in the body: another org's client is a 404, and intake is never asked.
    ("POST", "/v1/referrals"): CASEWORKER,
    ("GET", "/v1/referrals"): allow(Role.NGO_CASEWORKER, scope=Scope.ORG, reach=Reach.LIST),
    ("GET", "/v1/referrals/{referral_id}"): CASEWORKER,
    ("POST", "/v1/referrals/{referral_id}/cancel"): CASEWORKER,
    # F9: who in zone B read the referral's disclosures (role, agency, office; never a name).
    ("GET", "/v1/referrals/{referral_id}/access-log"): CASEWORKER,
    # F5 step-up: zone B's requests for the org's clients; releasing one is a new consent.
    ("GET", "/v1/disclosure-requests"): allow(
        Role.NGO_CASEWORKER, scope=Scope.ORG, reach=Reach.LIST
    ),
    ("POST", "/v1/disclosure-requests/{request_id}/refuse"): CASEWORKER,
}
