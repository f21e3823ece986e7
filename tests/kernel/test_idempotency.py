"""Safe retries (`twoline_shared.idempotency`): one creating request per `Idempotency-Key` and
tenant, however often and however concurrently it is sent, on the real database (SQLite, or
Postgres when TWOLINE_TEST_DATABASE_URL is set)."""

import concurrent.futures
import threading
import uuid
from datetime import timedelta

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text, update
from sqlmodel import Field, Session, SQLModel, select

from tests.conftest import assert_problem
from twoline_shared.auth import Principal, get_principal
from twoline_shared.db import SessionDep, create_db_engine, utcnow
from twoline_shared.errors import install_error_handlers
from twoline_shared.idempotency import IdempotencyDep, IdempotencyRecord, respond_once


class Note(SQLModel, table=True):
    __tablename__ = "kernel_test_idempotent_note"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org: str
    text: str


class NoteIn(SQLModel):
    text: str


class _Runtime:
    def __init__(self, engine):
        self.engine = engine

    def after_commit(self, session):
        pass


def principal_from_header(request: Request) -> Principal:
    # The token's claims, in a test that is not about tokens (tests/kernel/test_auth.py is).
    return Principal(sub="cw", roles=frozenset({"ngo_caseworker"}), org=request.headers["x-org"])


@pytest.fixture
def notes(make_database_url):
    engine = create_db_engine(make_database_url("idempotency"))
    SQLModel.metadata.create_all(
        engine,
        tables=[Note.__table__, IdempotencyRecord.__table__],  # type: ignore[list-item]
    )
    both_in_create = threading.Barrier(2, timeout=10)
    router = APIRouter()

    @router.post("/notes", status_code=201)
    def add(
        body: NoteIn,
        request: Request,
        response: Response,
        session: SessionDep,
        idempotency: IdempotencyDep,
    ) -> dict:
        def create() -> tuple[dict, str]:
            if request.headers.get("x-race"):
                both_in_create.wait()  # both twins are past the key lookup
            note = Note(org=request.headers["x-org"], text=body.text)
            session.add(note)
            session.flush()
            return {"id": str(note.id), "text": note.text}, str(note.id)

        def replay(note_id: str) -> dict:
            note = session.get(Note, uuid.UUID(note_id))
            return {"id": str(note.id), "text": note.text}

        return respond_once(
            idempotency,
            session,
            response,
            act=create,
            replay=replay,
            location=lambda note_id: f"/notes/{note_id}",
        )

    app = FastAPI()
    app.state.runtime = _Runtime(engine)
    app.dependency_overrides[get_principal] = principal_from_header
    install_error_handlers(app)
    app.include_router(router)
    with TestClient(app) as client:
        client.engine = engine  # type: ignore[attr-defined]
        yield client
    engine.dispose()


def stored(client) -> list[Note]:
    with Session(client.engine) as session:
        return list(session.exec(select(Note)).all())


def post(client, *, key: str | None, org: str = "ngo-ghent", text_: str = "n", **headers):
    sent = {"x-org": org, **headers}
    if key is not None:
        sent["Idempotency-Key"] = key
    return client.post("/notes", json={"text": text_}, headers=sent)


def test_a_retry_answers_the_first_result_and_creates_nothing(notes):
    first = post(notes, key="k-1")
    again = post(notes, key="k-1")

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.headers["location"] == again.headers["location"] == f"/notes/{first.json()['id']}"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert len(stored(notes)) == 1


def test_json_compared_by_value_not_by_bytes(notes):
    headers = {"x-org": "o", "Idempotency-Key": "k", "Content-Type": "application/json"}
    first = notes.post("/notes", content=b'{"text": "n"}', headers=headers)
    again = notes.post("/notes", content=b'{ "text":"n" }', headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json()


def test_the_same_key_with_another_request_is_422_and_stores_nothing(notes):
    post(notes, key="k-2", text_="one")
    reused = post(notes, key="k-2", text_="two")
    assert_problem(reused, 422, "idempotency-key-reused")
    assert [n.text for n in stored(notes)] == ["one"]


def test_keys_are_per_tenant_and_without_a_key_every_request_creates(notes):
    ghent, antwerp = post(notes, key="shared"), post(notes, key="shared", org="ngo-antwerp")
    assert ghent.json()["id"] != antwerp.json()["id"]
    assert "idempotent-replayed" not in antwerp.headers
    post(notes, key=None)
    post(notes, key=None)
    assert len(stored(notes)) == 4


def test_twins_sent_at_once_create_one_record(notes):
    """Both pass the key lookup before either stores the key: one creates, the other's
    transaction is rolled back and it answers as the replay."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        twins = list(pool.map(lambda _: post(notes, key="race", **{"x-race": "1"}), range(2)))

    assert [t.status_code for t in twins] == [201, 201]
    assert twins[0].json() == twins[1].json()
    assert sorted(t.headers.get("idempotent-replayed", "no") for t in twins) == ["no", "true"]
    assert len(stored(notes)) == 1


def test_a_key_is_forgotten_after_its_lifetime(notes):
    first = post(notes, key="old")
    with Session(notes.engine) as session:
        session.exec(
            update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=25))  # type: ignore[call-overload]
        )
        session.commit()

    fresh = post(notes, key="old", text_="other")

    assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]
    with Session(notes.engine) as session:
        [record] = session.exec(select(IdempotencyRecord)).all()
    assert record.resource_id == fresh.json()["id"]


def test_only_a_hash_of_the_key_is_stored(notes):
    key = f"partner-key-{uuid.uuid4().hex}"
    post(notes, key=key)
    with notes.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM idempotency_key")).all()
    assert rows and all(key not in " ".join(map(str, row)) for row in rows)
    assert "key" not in {c["name"] for c in inspect(notes.engine).get_columns("idempotency_key")}


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "two words"])
def test_a_malformed_key_is_422_and_stores_nothing(notes, key):
    response = notes.post(
        "/notes", json={"text": "n"}, headers={"x-org": "o", "Idempotency-Key": key.encode()}
    )
    assert_problem(response, 422, "validation")
    assert stored(notes) == []
