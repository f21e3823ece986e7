"""Fixtures shared by every test: token issuer, databases, and the project's own NATS server.

Database: SQLite files by default; Postgres when TWOLINE_TEST_DATABASE_URL points at a server
(each test gets fresh databases there); otherwise a testcontainers Postgres when
TWOLINE_TEST_TESTCONTAINERS=1 and a Docker engine answers, falling back to SQLite when none does.
"""

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from twoline.devissuer import DEFAULT_AUDIENCE, DEFAULT_ISSUER, create_key, issue, jwks
from twoline.natsserver import NatsServer, load_passwords, server_environment

log = logging.getLogger("tests")


# ---------------------------------------------------------------- tokens


class Issuer:
    """The dev issuer's key in a temp dir, its JWKS as a file, and a token factory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = create_key(directory)
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps(jwks(self.key)))

    def token(self, role: str, **claims: Any) -> str:
        return issue(self.key, role=role, **claims)

    def headers(self, role: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, **claims)}"}


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"))


NGO_GHENT = {"role": "ngo_caseworker", "org": "ngo-ghent"}
ICAM_BRUSSELS = {"role": "icam_coach", "agency": "immigration_office", "office": "brussels"}
FEDASIL_BRUSSELS = {"role": "return_counsellor", "agency": "fedasil", "office": "brussels"}
AUDITOR = {"role": "auditor"}


# ---------------------------------------------------------------- databases


def _testcontainers_postgres() -> str | None:
    if os.environ.get("TWOLINE_TEST_TESTCONTAINERS") != "1":
        return None
    try:
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver="psycopg")
        container.start()
    except Exception as exc:  # docker.errors.DockerException when no engine answers
        log.warning("no Docker engine for testcontainers (%s); using SQLite", type(exc).__name__)
        return None
    import atexit

    atexit.register(container.stop)
    return container.get_connection_url()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str | None:
    """A Postgres server URL to create test databases on, or None for SQLite."""
    return os.environ.get("TWOLINE_TEST_DATABASE_URL") or _testcontainers_postgres()


# F1 in the Postgres runs: the databases made for one service name belong to that name's own
# login role, and no other role may connect to them (as deploy/postgres/init.sh sets up compose).
TEST_ROLE_PASSWORD = "twoline-test"  # throwaway; used only where the server asks for one


def service_role(name: str) -> str:
    """The Postgres login role of the test databases made for `name` (a service or a test)."""
    return "twoline_t_" + name.replace("-", "_")


def _ensure_service_role(connection: Any, role: str) -> None:
    """Create `role` once (also when another test run on the same server races to), and let a
    non-superuser admin (CREATEROLE, as .ci/run's twoline_ci) make it a database's owner."""
    connection.execute(
        text(
            f"""
            DO $$ BEGIN
              BEGIN
                CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                  PASSWORD '{TEST_ROLE_PASSWORD}';
              EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
              END;
              IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                 AND NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
                BEGIN
                  EXECUTE 'GRANT "{role}" TO ' || quote_ident(current_user);
                EXCEPTION WHEN unique_violation THEN NULL;
                END;
              END IF;
            END $$
            """
        )
    )


@pytest.fixture
def make_database_url(
    postgres_admin_url: str | None, tmp_path: Path
) -> Iterator[Callable[[str], str]]:
    """Factory: a fresh, empty database for `name` (one per service in a test).

    On Postgres the URL connects as `service_role(name)`, which owns the database; CONNECT is
    revoked from PUBLIC, so no other service's role can open it (tests/firewall/test_databases.py).
    """
    with database_factory(postgres_admin_url, tmp_path) as make:
        yield make


@contextlib.contextmanager
def database_factory(
    postgres_admin_url: str | None, directory: Path
) -> Iterator[Callable[[str], str]]:
    """`make_database_url` for any scope: SQLite files in `directory`, or Postgres databases
    that are dropped when the block ends."""
    created: list[str] = []

    def make(name: str) -> str:
        if postgres_admin_url is None:
            return f"sqlite:///{directory / (name + '.db')}"
        database = f"t_{name.replace('-', '_')}_{uuid.uuid4().hex[:10]}"
        role = service_role(name)
        admin = create_engine(_psycopg(postgres_admin_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            _ensure_service_role(connection, role)
            connection.execute(text(f'CREATE DATABASE "{database}" OWNER "{role}"'))
            connection.execute(text(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC'))
        admin.dispose()
        created.append(database)
        return (
            make_url(_psycopg(postgres_admin_url))
            .set(database=database, username=role, password=TEST_ROLE_PASSWORD)
            .render_as_string(hide_password=False)
        )

    try:
        yield make
    finally:
        if postgres_admin_url is not None and created:
            admin = create_engine(_psycopg(postgres_admin_url), isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                for database in created:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()


def _psycopg(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# ---------------------------------------------------------------- NATS


@pytest.fixture(scope="session")
def nats_passwords(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return load_passwords(tmp_path_factory.mktemp("nats-secrets") / "passwords.json")


@pytest.fixture(scope="session")
def nats_server_env(nats_passwords: dict[str, str]) -> dict[str, str]:
    """bcrypt hashes once per session; hashing is the slow part of starting a server."""
    return server_environment(nats_passwords)


@pytest.fixture
def nats_server(
    tmp_path: Path, nats_passwords: dict[str, str], nats_server_env: dict[str, str]
) -> Iterator[NatsServer]:
    """A fresh nats-server with the project's config, streams and consumers provisioned."""
    with nats_server_running(tmp_path / "nats", nats_passwords, nats_server_env) as server:
        yield server


@contextlib.contextmanager
def nats_server_running(
    store_dir: Path, passwords: dict[str, str], env: dict[str, str]
) -> Iterator[NatsServer]:
    """`nats_server` for any scope: started and provisioned, stopped when the block ends."""
    import asyncio

    server = NatsServer(store_dir=store_dir, passwords=passwords)
    server._env.update(env)
    server.start()
    try:
        asyncio.run(server.provision())
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- services


@pytest.fixture
def service_settings(
    issuer: Issuer, make_database_url: Callable[[str], str], request: pytest.FixtureRequest
) -> Callable[..., Any]:
    """Factory: a service's Settings with a fresh database, the test issuer, and NATS if running."""

    def make(settings_cls: type, name: str, **overrides: Any) -> Any:
        running_nats = "nats_server" in request.fixturenames
        server = request.getfixturevalue("nats_server") if running_nats else None
        return settings_for_test(
            settings_cls,
            issuer=issuer,
            database_url=make_database_url(name),
            nats_server=server,
            **overrides,
        )

    return make


def settings_for_test(
    settings_cls: type,
    *,
    issuer: Issuer,
    database_url: str,
    nats_server: NatsServer | None,
    **overrides: Any,
) -> Any:
    """A service's Settings for a test: its database, the test issuer, and NATS if one runs."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "auth_jwks_url": str(issuer.jwks_path),
        "auth_issuer": DEFAULT_ISSUER,
        "auth_audience": DEFAULT_AUDIENCE,
        "outbox_poll_seconds": 0.2,
    }
    if nats_server is not None:
        values["nats_url"] = nats_server.url
        user = settings_cls.model_fields["nats_user"].default
        if user in nats_server.passwords:
            values["nats_password"] = nats_server.passwords[user]
    else:
        values["nats_enabled"] = False
    values.update(overrides)
    return settings_cls(**values)


@contextlib.contextmanager
def running(app: Any) -> Iterator[TestClient]:
    """Run an app with its lifespan (migrations, NATS, relay, consumers) in a test client."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def eventually(probe: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `probe` until it returns something truthy, and return that (events are async)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def assert_problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is RFC 9457 problem+json with `status` (and the stable type `slug`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:twoline:problem:")
    if slug is not None:
        assert body["type"] == f"urn:twoline:problem:{slug}"
    return body


def is_refusal_record(subject: str) -> bool:
    """The audit record a 401 or 403 leaves (`audit.<service>.route.<action>`, written in its
    own transaction by the kernel's error handler): service tests that compare the outbox before
    and after a refused call leave these out; tests/firewall/test_route_policy.py checks them."""
    parts = subject.split(".")
    return len(parts) == 4 and parts[0] == "audit" and parts[2] == "route"


@pytest.fixture
def spans():
    """Every span any service's provider ends while the test runs (each service has its own
    provider; the kernel's hook reaches them all): an in-memory exporter."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from twoline_shared import telemetry

    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    telemetry.add_span_processor(processor)
    yield exporter
    telemetry.remove_span_processor(processor)
    processor.shutdown()
