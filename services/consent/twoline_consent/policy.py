"""Who may call which consent route (zone A): NGO staff of the client's org read; their
caseworkers record and withdraw.

F1: no second-line, auditor or service role appears here. F7: another org's client or consent
is a 404. Health routes are kernel-public (`twoline_shared.policy.KERNEL`).
"""

from twoline_shared.auth import Role
from twoline_shared.policy import Policy, Reach, Scope, allow

CASEWORKER = allow(Role.NGO_CASEWORKER, scope=Scope.ORG)
STAFF = allow(Role.NGO_CASEWORKER, Role.NGO_ADMIN, scope=Scope.ORG)

POLICY: Policy = {
    # Names a client in the body: another org's client is a 404.
    ("POST", "/v1/consents"): CASEWORKER,
    ("GET", "/v1/consents"): allow(
        Role.NGO_CASEWORKER, Role.NGO_ADMIN, scope=Scope.ORG, reach=Reach.LIST
    ),
    ("GET", "/v1/consents/{consent_id}"): STAFF,
    ("POST", "/v1/consents/{consent_id}/withdraw"): CASEWORKER,
    ("GET", "/v1/consents/{consent_id}/receipt"): STAFF,
}
