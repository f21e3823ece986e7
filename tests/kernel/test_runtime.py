"""Service runtime: settings per env prefix, /healthz, /readyz, events flowing after a request."""

import json
import time

import pytest

from tests.conftest import NGO_GHENT, assert_problem, running
from twoline.natsserver import free_port
from twoline_intake.app import create_app
from twoline_intake.config import Settings
from twoline_shared.outbox import OutboxMessage


def test_each_service_reads_its_own_env_prefix(monkeypatch):
    monkeypatch.setenv("TWOLINE_INTAKE_PORT", "9101")
    monkeypatch.setenv("TWOLINE_CONSENT_PORT", "9102")
    monkeypatch.setenv("TWOLINE_INTAKE_AUTH_AUDIENCE", "aud-x")
    settings = Settings()
    assert (settings.port, settings.auth_audience, settings.nats_user) == (9101, "aud-x", "intake")


def test_healthz_answers_without_dependencies(service_settings):
    settings = service_settings(
        Settings, "intake", nats_enabled=True, nats_url=f"nats://127.0.0.1:{free_port()}"
    )
    with running(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_503_problem_while_nats_is_unreachable(service_settings):
    settings = service_settings(
        Settings, "intake", nats_enabled=True, nats_url=f"nats://127.0.0.1:{free_port()}"
    )
    with running(create_app(settings)) as client:
        body = assert_problem(client.get("/readyz"), 503, "not-ready")
        assert body["checks"] == {"database": True, "nats": False}


@pytest.mark.nats
def test_readyz_is_ok_and_committed_events_reach_the_broker(service_settings, nats_server, issuer):
    settings = service_settings(Settings, "intake")
    with running(create_app(settings)) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "intake never became ready"
            time.sleep(0.1)
        assert client.get("/readyz").json()["checks"] == {"database": True, "nats": True}
        response = client.post(
            "/v1/clients", json={"display_name": "X"}, headers=issuer.headers(**NGO_GHENT)
        )
        assert response.status_code == 201
        engine = client.app.state.runtime.engine
        from sqlmodel import Session, select

        deadline = time.monotonic() + 10
        while True:
            with Session(engine) as session:
                rows = session.exec(select(OutboxMessage)).all()
            if rows and all(r.sent_at is not None for r in rows):
                break
            assert time.monotonic() < deadline, "outbox rows were not published"
            time.sleep(0.1)
        # The request's trace context travels with its events (W3C traceparent header).
        assert all(json.loads(r.headers)["traceparent"].startswith("00-") for r in rows)
        assert {r.subject for r in rows} == {
            "firstline.intake.client.registered",
            "audit.intake.client.create",
        }


@pytest.mark.nats
def test_service_reconnects_after_a_broker_restart_and_publishes_what_queued_meanwhile(
    service_settings, nats_server, issuer
):
    """The outbox is the record: events committed while the broker is down go out after it."""
    from sqlmodel import Session, select

    settings = service_settings(Settings, "intake")
    ngo = issuer.headers(**NGO_GHENT)

    def wait(predicate, what: str) -> None:
        deadline = time.monotonic() + 20
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    with running(create_app(settings)) as client:
        engine = client.app.state.runtime.engine

        def unsent() -> int:
            with Session(engine) as session:
                return len(
                    session.exec(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))).all()
                )

        wait(lambda: client.get("/readyz").status_code == 200, "ready")
        nats_server.stop()
        wait(lambda: client.get("/readyz").status_code == 503, "not ready while NATS is down")
        # The API keeps working: the state change and its events commit to the database.
        assert (
            client.post("/v1/clients", json={"display_name": "X"}, headers=ngo).status_code == 201
        )
        time.sleep(1.0)
        assert unsent() == 2

        nats_server.start()  # same port, same JetStream store
        wait(lambda: client.get("/readyz").status_code == 200, "reconnected")
        wait(lambda: unsent() == 0, "the queued events to be published")

    import asyncio

    from twoline.natsserver import credential
    from twoline_shared.broker import connect

    async def stream_count() -> int:
        nc = await connect(nats_server.url, credential("fl-admin", nats_server.passwords), name="a")
        try:
            return (await nc.jetstream().stream_info("FIRSTLINE")).state.messages
        finally:
            await nc.close()

    assert asyncio.run(stream_count()) == 1  # the one client.registered event, once
