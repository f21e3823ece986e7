"""Engine by URL, secure delete on SQLite, the request session (commit/rollback before the
response), migrations."""

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, event, inspect
from sqlmodel import Field, Session, SQLModel, select

from twoline_shared.db import SessionDep, create_db_engine, normalise_url
from twoline_shared.errors import Conflict, install_error_handlers
from twoline_shared.migrations import current_revision, upgrade

SERVICES = ["intake", "consent", "referral", "case_resolution", "audit"]


class Note(SQLModel, table=True):
    __tablename__ = "kernel_test_note"
    id: int | None = Field(default=None, primary_key=True)
    text: str


def test_postgres_urls_use_psycopg3():
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


class _Runtime:
    def __init__(self, engine):
        self.engine = engine
        self.commits = 0

    def after_commit(self, session):
        self.commits += 1


@pytest.fixture
def app_and_engine(make_database_url):
    engine = create_db_engine(make_database_url("session"))
    SQLModel.metadata.create_all(engine, tables=[Note.__table__])  # type: ignore[list-item]
    router = APIRouter()

    @router.post("/notes")
    def add(session: SessionDep, fail: bool = False) -> dict:
        session.add(Note(text="n"))
        session.flush()
        if fail:
            raise Conflict("refused after writing")
        return {"ok": True}

    app = FastAPI()
    app.state.runtime = _Runtime(engine)
    install_error_handlers(app)
    app.include_router(router)
    yield app, engine
    engine.dispose()


def notes(engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Note)).all())


def notes_text(engine) -> list[str]:
    with Session(engine) as session:
        return [note.text for note in session.exec(select(Note)).all()]


def test_session_commits_when_the_request_succeeds(app_and_engine):
    app, engine = app_and_engine
    assert TestClient(app).post("/notes").status_code == 200
    assert notes(engine) == 1
    assert app.state.runtime.commits == 1


def test_session_rolls_back_when_the_request_fails(app_and_engine):
    app, engine = app_and_engine
    assert TestClient(app).post("/notes?fail=true").status_code == 409
    assert notes(engine) == 0


ERASED = b"CANARY-ERASED-7c4f"


def _file_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, as they lie on disk."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_sqlite_zeroes_overwritten_and_deleted_content_in_the_file(tmp_path):
    """F4: a purged package or a deleted row leaves no bytes behind in the file's free space."""
    path = tmp_path / "erase.db"
    engine = create_db_engine(f"sqlite:///{path}")

    # Many SQLite builds (Debian's among them) default to secure delete; many do not. Start
    # each connection from "off", before the engine's own pragmas run, as the latter would.
    @event.listens_for(engine, "connect", insert=True)
    def _build_default_off(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA secure_delete=OFF")

    SQLModel.metadata.create_all(engine, tables=[Note.__table__])  # type: ignore[list-item]
    # Longer than what replaces it: SQLite moves the row rather than overwrite it in place.
    secret = " ".join([ERASED.decode()] * 20)
    with Session(engine) as session:
        overwritten, deleted = Note(text=secret), Note(text=secret)
        session.add_all([overwritten, deleted])
        session.commit()
        assert ERASED in _file_bytes(path)  # the canary really reached the disk
        overwritten.text = "withdrawn"
        session.delete(deleted)
        session.commit()
    with engine.connect() as connection:
        busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    assert busy == 0
    engine.dispose()

    assert ERASED not in _file_bytes(path)
    reopened = create_db_engine(f"sqlite:///{path}")
    assert notes_text(reopened) == ["withdrawn"]
    reopened.dispose()


def _service_module(service: str, name: str):
    return importlib.import_module(f"twoline_{service}.{name}")


def _service_tables(service: str) -> MetaData:
    """The tables a service's models declare, plus the kernel's outbox/inbox/dead_letter."""
    importlib.import_module(f"twoline_{service}.models")
    prefixes = (f"twoline_{service}.", "twoline_shared.")
    metadata = MetaData()
    for mapper in SQLModel._sa_registry.mappers:  # type: ignore[attr-defined]
        if mapper.class_.__module__.startswith(prefixes):
            mapper.local_table.to_metadata(metadata)
    return metadata


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_create_exactly_the_model_schema(service, make_database_url):
    engine = create_db_engine(make_database_url(f"mig_{service}"))
    script = Path(_service_module(service, "app").__file__).parent / "migrations"
    upgrade(engine, script)
    upgrade(engine, script)  # a second start-up is a no-op
    assert current_revision(engine) is not None
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, _service_tables(service))
    assert diff == [], f"{service}: migrations and models disagree: {diff}"
    assert {"outbox", "inbox", "dead_letter"} <= set(inspect(engine).get_table_names())
    engine.dispose()
