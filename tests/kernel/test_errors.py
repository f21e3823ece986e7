"""Every error is RFC 9457 problem+json with a stable type; bad input is 4xx, never 500."""

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from tests.conftest import assert_problem
from twoline_shared.errors import Conflict, Forbidden, Invalid, NotFound, install_error_handlers

router = APIRouter()


class Body(BaseModel):
    name: str = Field(min_length=1)
    year: int


@router.post("/things")
def create(body: Body) -> dict:
    return {"name": body.name}


@router.get("/raise/{kind}")
def raise_(kind: str) -> dict:
    errors = {
        "nf": NotFound("no such thing"),
        "fb": Forbidden(),
        "cf": Conflict("already"),
        "iv": Invalid("bad", slug="consent-missing", missing=["fedasil"]),
    }
    if kind == "crash":
        raise RuntimeError("secret personal value Jane Doe")
    raise errors[kind]


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("kind", "status", "slug"),
    [
        ("nf", 404, "not-found"),
        ("fb", 403, "forbidden"),
        ("cf", 409, "conflict"),
        ("iv", 422, "consent-missing"),
    ],
)
def test_service_errors_render_as_problem_json(client, kind, status, slug):
    body = assert_problem(client.get(f"/raise/{kind}"), status, slug)
    assert body["instance"] == f"/raise/{kind}"


def test_extensions_are_carried_in_the_problem(client):
    assert client.get("/raise/iv").json()["missing"] == ["fedasil"]


def test_malformed_json_is_422_problem(client):
    response = client.post(
        "/things", content=b"{not json", headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422, "validation")
    assert body["errors"][0]["type"] == "json_invalid"


def test_wrong_types_are_422_and_do_not_echo_the_input(client):
    response = client.post("/things", json={"name": "Jane Doe", "year": "nineteen-ninety"})
    body = assert_problem(response, 422, "validation")
    assert body["errors"][0]["loc"] == ["body", "year"]
    assert "nineteen" not in response.text  # rejected values may be personal data (F8)


def test_unknown_route_and_method_are_problems(client):
    assert_problem(client.get("/nowhere"), 404, "not-found")
    assert_problem(client.delete("/things"), 405, "method-not-allowed")


def test_unexpected_crash_is_a_generic_500_without_details(client, caplog):
    response = client.get("/raise/crash")
    assert_problem(response, 500, "internal")
    assert "Jane" not in response.text
    assert "Jane" not in caplog.text  # only the exception type is logged
    assert "RuntimeError" in caplog.text
