"""Who may call which audit route (oversight): auditors only; the log is no tenant's.

Health routes are kernel-public (`twoline_shared.policy.KERNEL`).
"""

from twoline_shared.auth import Role
from twoline_shared.policy import Policy, allow

AUDITOR = allow(Role.AUDITOR)

POLICY: Policy = {
    ("GET", "/v1/log/entries"): AUDITOR,
    ("GET", "/v1/log/verify"): AUDITOR,
    ("GET", "/v1/log/checkpoint"): AUDITOR,
    ("GET", "/v1/log/public-key"): AUDITOR,
    ("GET", "/v1/log/proofs/inclusion/{entry_id}"): AUDITOR,
    ("GET", "/v1/log/proofs/consistency"): AUDITOR,
    ("GET", "/v1/traces/{referral_id}"): AUDITOR,
    ("GET", "/v1/stats"): AUDITOR,
}
