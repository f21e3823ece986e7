"""Database engine and the request-scoped session (SQLite or Postgres, chosen by URL)."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

OUTBOX_DIRTY = "twoline.outbox_dirty"


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (the only kind twoline stores)."""
    return datetime.now(UTC)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """`timestamp with time zone` that stores and returns aware UTC datetimes on every backend.

    SQLite keeps no offset: values are converted to UTC before storing, so ordering by the column
    is chronological there too, and they are read back as UTC rather than naive.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_db_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and secure delete."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # F4: zero the bytes of deleted and overwritten content, so a purged package or a
        # deleted row cannot be read back from free pages of the file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return engine


def insert_or_ignore(session: Session, row: SQLModel) -> bool:
    """Insert `row` unless a row with its primary key exists; True if this call inserted it.

    For facts that two writers may record at once (a consumer and a request both learning that a
    client exists): the loser of the race changes nothing instead of failing on the key. On
    Postgres a concurrent insert of the same key waits for the other transaction, then skips.
    """
    table = type(row).__table__  # type: ignore[attr-defined]
    values = {
        c.name: getattr(row, c.name) for c in table.columns if getattr(row, c.name) is not None
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(**values).on_conflict_do_nothing()
    return session.execute(statement).rowcount == 1  # type: ignore[attr-defined]


def session_scope(engine: Engine, after_commit: Callable[[Session], None] | None = None):
    """Yield a session that commits when the block succeeds and rolls back when it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        if after_commit is not None:
            after_commit(session)


def get_session(request: Request) -> Iterator[Session]:
    """Request-scoped session: commit at the end of the request, roll back on any error."""
    runtime = request.app.state.runtime
    yield from session_scope(runtime.engine, after_commit=runtime.after_commit)


# scope="function": the commit runs before the response is sent, so a failed commit is an error
# response and never a 2xx for data that was not stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
