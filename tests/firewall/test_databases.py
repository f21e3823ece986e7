"""F1 — no path from B to A, at the database: each service has its own database, reached with its
own role, and the case-resolution role can neither connect to nor read the zone-A databases.

On Postgres (TWOLINE_TEST_DATABASE_URL, as .ci/run sets it) `make_database_url` in
tests/conftest.py gives each service's database to that service's own login role and revokes
CONNECT from PUBLIC, as deploy/postgres/init.sh does for docker-compose
(tests/test_compose.py::test_init_script_isolates_the_service_databases runs that script).
Every service's real migrations run as its own role here, so the tables probed are the real ones.
On SQLite the equivalent is one file per service, and no service's settings name another's.
"""

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from tests.conftest import service_role
from twoline.natsserver import USERS
from twoline.stack import SERVICES, ServiceDef, service_environment
from twoline_shared.db import create_db_engine
from twoline_shared.migrations import upgrade

ZONE_A = ("intake", "consent")


def settings_class(service: ServiceDef) -> type:
    return importlib.import_module(f"{service.package}.config").Settings


def migrations(service: ServiceDef) -> Path:
    return Path(importlib.import_module(f"{service.package}.app").__file__).parent / "migrations"


def as_role(url: str, database_url: str) -> str:
    """`url`'s role (and password) pointed at the database of `database_url`."""
    database = make_url(database_url).database
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def connect_error(url: str) -> str | None:
    """The server's refusal when `url` tries to connect, or None if it got in."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except OperationalError as exc:
        return str(exc.orig)
    finally:
        engine.dispose()


@pytest.fixture
def postgres_admin(postgres_admin_url: str | None) -> str:
    if postgres_admin_url is None:
        pytest.skip(
            "database roles exist on Postgres only: set TWOLINE_TEST_DATABASE_URL (.ci/run "
            "does); on SQLite, test_each_service_has_its_own_sqlite_file is the equivalent"
        )
    return postgres_admin_url


@pytest.fixture
def databases(postgres_admin: str, service_settings: Callable[..., Any]) -> dict[str, str]:
    """Each service's database URL as its settings get it, migrated by the service's own role."""
    urls = {}
    for service in SERVICES:
        url = service_settings(settings_class(service), service.name).database_url
        engine = create_db_engine(url)
        try:
            upgrade(engine, migrations(service))
        finally:
            engine.dispose()
        urls[service.name] = url
    return urls


def test_each_service_connects_as_its_own_role_which_owns_its_database(
    databases: dict[str, str], postgres_admin: str
) -> None:
    roles = {name: make_url(url).username for name, url in databases.items()}
    assert roles == {name: service_role(name) for name in databases}
    assert len(set(roles.values())) == len(SERVICES)
    admin: Engine = create_db_engine(postgres_admin)
    try:
        with admin.connect() as connection:
            for name, url in databases.items():
                owner, public_connect = connection.execute(
                    text(
                        "SELECT pg_get_userbyid(datdba), has_database_privilege('public', "
                        "oid, 'CONNECT') FROM pg_database WHERE datname = :db"
                    ),
                    {"db": make_url(url).database},
                ).one()
                assert (owner, public_connect) == (roles[name], False), name
    finally:
        admin.dispose()
    for name, url in databases.items():
        engine = create_db_engine(url)
        try:
            with engine.connect() as connection:
                assert connection.execute(text("SELECT current_user")).scalar() == roles[name]
            assert "outbox" in inspect(engine).get_table_names(), f"{name} has no schema"
        finally:
            engine.dispose()


def test_no_service_role_can_connect_to_another_services_database(
    databases: dict[str, str],
) -> None:
    """Every role against every other service's database, case-resolution against intake and
    consent first among them: the server refuses the connection itself."""
    allowed = {}
    for who, own in databases.items():
        for target, url in databases.items():
            if target == who:
                continue
            error = connect_error(as_role(own, url))
            if error is None or "CONNECT privilege" not in error:
                allowed[f"{who} -> {target}"] = error
    assert allowed == {}


def test_case_resolution_role_cannot_read_zone_a_tables_even_with_connect(
    databases: dict[str, str], postgres_admin: str
) -> None:
    """Defence in depth: were CONNECT granted by mistake, every zone-A table still refuses it."""
    role = make_url(databases["case-resolution"]).username
    admin: Engine = create_db_engine(postgres_admin)
    try:
        for target in ZONE_A:
            database = make_url(databases[target]).database
            with admin.connect() as connection:
                connection.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
                connection.commit()
            owner = create_db_engine(databases[target])
            tables = inspect(owner).get_table_names()
            owner.dispose()
            assert len(tables) > 3, f"{target}: migrations made no tables"
            intruder = create_db_engine(as_role(databases["case-resolution"], databases[target]))
            try:
                readable = []
                for table in tables:
                    with intruder.connect() as connection:
                        try:
                            connection.execute(text(f'SELECT * FROM "{table}" LIMIT 1'))
                            readable.append(table)
                        except ProgrammingError as exc:
                            assert "permission denied" in str(exc.orig), exc
                assert readable == [], f"case-resolution reads {target}: {readable}"
            finally:
                intruder.dispose()
    finally:
        admin.dispose()


def test_each_service_has_its_own_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded default (`twoline run`): five files, and each service's settings, read from
    the environment `twoline run` gives it, name its own file and no other's."""
    environments = {
        service.name: service_environment(
            service,
            data_dir=tmp_path,
            nats_url="nats://127.0.0.1:4223",
            passwords={user: "x" for user in USERS},
            issuer_url="http://127.0.0.1:8000",
        )
        for service in SERVICES
    }
    files = {s.name: environments[s.name][f"{s.prefix}DATABASE_URL"] for s in SERVICES}
    assert files == {name: f"sqlite:///{tmp_path / (name + '.db')}" for name in files}
    for name, env in environments.items():
        others = [f"{other}.db" for other in files if other != name]
        leaked = [value for value in env.values() if any(o in value for o in others)]
        assert leaked == [], f"{name}'s environment names another service's database"
    for environment in environments.values():
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
    for service in SERVICES:
        assert settings_class(service)().database_url == files[service.name]
