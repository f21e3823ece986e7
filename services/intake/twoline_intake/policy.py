"""Who may call which intake route (zone A): NGO staff, each within their own org only.

F1: no second-line, auditor or service role appears here. F7: another org's client is a 404.
Health routes are kernel-public (`twoline_shared.policy.KERNEL`).
"""

from twoline_shared.auth import Role
from twoline_shared.policy import Policy, Reach, Scope, allow

CASEWORKER = allow(Role.NGO_CASEWORKER, scope=Scope.ORG)

POLICY: Policy = {
    ("POST", "/v1/clients"): allow(Role.NGO_CASEWORKER, scope=Scope.ORG, reach=Reach.NEW),
    # Client records are personal data: caseworkers only, like the single read (not ngo_admin).
    ("GET", "/v1/clients"): allow(Role.NGO_CASEWORKER, scope=Scope.ORG, reach=Reach.LIST),
    ("GET", "/v1/clients/{client_ref}"): CASEWORKER,
    ("PATCH", "/v1/clients/{client_ref}"): CASEWORKER,
    ("POST", "/v1/clients/{client_ref}/contacts"): CASEWORKER,
    ("GET", "/v1/clients/{client_ref}/contacts"): CASEWORKER,
    ("GET", "/v1/clients/{client_ref}/contacts/{contact_id}"): CASEWORKER,
}
