"""The five services on one real nats-server, each with its own fresh database."""

import contextlib

import pytest

from tests.conftest import eventually, running
from twoline.natsserver import credential
from twoline_audit.app import create_app as audit_app
from twoline_audit.config import Settings as AuditSettings
from twoline_case_resolution.app import create_app as case_app
from twoline_case_resolution.config import Settings as CaseSettings
from twoline_consent.app import create_app as consent_app
from twoline_consent.config import Settings as ConsentSettings
from twoline_intake.app import create_app as intake_app
from twoline_intake.config import Settings as IntakeSettings
from twoline_referral.app import create_app as referral_app
from twoline_referral.config import Settings as ReferralSettings
from twoline_shared.broker import connect


async def stream_payloads(nats_server, stream: str, admin: str) -> list[bytes]:
    nc = await connect(nats_server.url, credential(admin, nats_server.passwords), name="scan")
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        return (
            [
                (await js.get_msg(stream, seq)).data
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
            if info.state.messages
            else []
        )
    finally:
        await nc.close()


@pytest.fixture
def stack(service_settings, nats_server):
    apps = {
        "intake": intake_app(service_settings(IntakeSettings, "intake")),
        "consent": consent_app(service_settings(ConsentSettings, "consent")),
        "referral": referral_app(
            service_settings(
                ReferralSettings,
                "referral",
                nats_sl_password=nats_server.passwords["referral-sl"],
            )
        ),
        "case": case_app(service_settings(CaseSettings, "case-resolution")),
        "audit": audit_app(service_settings(AuditSettings, "audit")),
    }
    with contextlib.ExitStack() as exit_stack:
        clients = {name: exit_stack.enter_context(running(app)) for name, app in apps.items()}
        # Ready as /readyz says (database and every NATS link up), as a load balancer waits:
        # a service asked before its link is up answers 503 with Retry-After, by contract.
        for name, client in clients.items():
            eventually(lambda c=client: c.get("/readyz").status_code == 200, f"{name} ready")
        yield clients
