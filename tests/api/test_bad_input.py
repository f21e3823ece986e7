"""The classes of bad input fuzzing found, each held once per route: a 4xx problem+json, never a
500, and nothing stored.

- Paging and log positions are bounded in the kernel (twoline_shared.pagination): past the bound
  a 422, at it an (empty) page, on every list route and every audit log position.
- A partial update says per field what `null` means (intake's `ClientUpdate`): a nullable field
  is cleared, any other is a 422 and the record stays as it was.
- Dates are ISO 8601 text: a number is not taken for a Unix timestamp.
- A request body is at most `MAX_REQUEST_BYTES`, with a Content-Length or without (chunked).

Real databases (SQLite, or Postgres with TWOLINE_TEST_DATABASE_URL), apps with their lifespan.
"""

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import SERVICES
from tests.conftest import AUDITOR, ICAM_BRUSSELS, NGO_GHENT, assert_problem, running
from twoline_shared.limits import MAX_REQUEST_BYTES
from twoline_shared.pagination import MAX_POSITION

CANARY = "CANARY-9c41"


@pytest.fixture
def serve(service_settings) -> Iterator[Callable[[str], TestClient]]:
    """Factory: one service running on a fresh database (no broker: none of this needs it)."""
    with contextlib.ExitStack() as stack:

        def start(name: str) -> TestClient:
            service = SERVICES[name]
            app = service.create_app(service_settings(service.settings, name))
            return stack.enter_context(running(app))

        yield start


def register(intake: TestClient, headers: dict[str, str], **record: Any) -> dict[str, Any]:
    created = intake.post("/v1/clients", json={"display_name": "Amina", **record}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()


# ---------------------------------------------------------------- paging and log positions

# Every list route and audit log position: (service, caller, path, the integer parameter).
POSITIONS = [
    ("intake", NGO_GHENT, "/v1/clients", "offset"),
    ("consent", NGO_GHENT, "/v1/consents?client_ref=C-1", "offset"),
    ("referral", NGO_GHENT, "/v1/referrals?client_ref=C-1", "offset"),
    ("referral", NGO_GHENT, "/v1/disclosure-requests", "offset"),
    ("case-resolution", ICAM_BRUSSELS, "/v1/queue", "offset"),
    ("audit", AUDITOR, "/v1/log/entries", "start"),
]


@pytest.mark.parametrize(("name", "caller", "path", "parameter"), POSITIONS)
def test_a_position_past_the_kernels_bound_is_a_422_and_at_it_an_empty_page(
    serve, issuer, name, caller, path, parameter
):
    client = serve(name)
    headers = issuer.headers(**caller)
    join = "&" if "?" in path else "?"
    for huge in (MAX_POSITION + 1, 2**63, 10**30):
        refused = client.get(f"{path}{join}{parameter}={huge}", headers=headers)
        body = assert_problem(refused, 422, "validation")
        assert body["errors"][0]["loc"] == ["query", parameter]
        assert str(huge) not in refused.text  # the rejected value is not echoed
    page = client.get(f"{path}{join}{parameter}={MAX_POSITION}", headers=headers)
    assert page.status_code == 200, page.text
    assert page.json()["data"] == []


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/v1/log/entries?end={n}", ["query", "end"]),
        ("/v1/log/proofs/inclusion/{n}", ["path", "entry_id"]),
        ("/v1/log/proofs/inclusion/0?tree_size={n}", ["query", "tree_size"]),
        ("/v1/log/proofs/consistency?first={n}&second=1", ["query", "first"]),
        ("/v1/log/proofs/consistency?first=1&second={n}", ["query", "second"]),
    ],
)
def test_every_audit_log_position_is_bounded_by_the_kernel(serve, issuer, path, location):
    audit = serve("audit")
    headers = issuer.headers(**AUDITOR)
    refused = audit.get(path.format(n=2**63), headers=headers)
    assert assert_problem(refused, 422, "validation")["errors"][0]["loc"] == location
    # At the bound the request reaches the log, which answers as the log: not found or too big.
    at_bound = audit.get(path.format(n=MAX_POSITION), headers=headers)
    assert at_bound.status_code in (200, 404, 422), at_bound.text
    assert at_bound.json().get("type") != "urn:twoline:problem:validation"


def test_a_clients_contacts_page_is_bounded_too(serve, issuer):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, ngo)["client_ref"]
    assert_problem(intake.get(f"/v1/clients/{ref}/contacts?offset={2**63}", headers=ngo), 422)
    page = intake.get(f"/v1/clients/{ref}/contacts?offset={MAX_POSITION}", headers=ngo)
    assert page.status_code == 200 and page.json() == {"data": [], "count": 0}


# ---------------------------------------------------------------- nullability of an update

RECORD = {
    "birth_year": 1994,
    "nationality": "GN",
    "languages": ["fr"],
    "municipality": "Schaerbeek",
    "phone": "+32 470 12 34 56",
    "household": [{"relation": "child", "birth_year": 2019}],
    "migration_history": {"arrived": 2021},
    "needs": ["shelter"],
    "health": {"chronic": "asthma"},
    "vulnerabilities": ["single_parent"],
    "intentions": {"considering": ["return"]},
    "case_notes": "Prefers mornings.",
}
# The record's lists and objects: never null (sent empty to clear); and its one required field.
NOT_NULLABLE = [
    "display_name",
    "languages",
    "household",
    "migration_history",
    "needs",
    "health",
    "vulnerabilities",
    "intentions",
]
NULLABLE = ["birth_year", "nationality", "municipality", "phone", "case_notes"]


@pytest.mark.parametrize("field", NOT_NULLABLE)
def test_null_for_a_field_that_cannot_be_empty_is_a_422_and_changes_nothing(serve, issuer, field):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    before = register(intake, ngo, **RECORD)
    ref = before["client_ref"]
    refused = intake.patch(
        f"/v1/clients/{ref}", json={"case_notes": CANARY, field: None}, headers=ngo
    )
    body = assert_problem(refused, 422, "validation")
    assert ["body", field] in [e["loc"] for e in body["errors"]]
    assert CANARY not in refused.text
    assert intake.get(f"/v1/clients/{ref}", headers=ngo).json() == before


@pytest.mark.parametrize("field", NULLABLE)
def test_null_clears_a_field_the_record_may_lack(serve, issuer, field):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, ngo, **RECORD)["client_ref"]
    cleared = intake.patch(f"/v1/clients/{ref}", json={field: None}, headers=ngo)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()[field] is None
    assert intake.get(f"/v1/clients/{ref}", headers=ngo).json()[field] is None


@pytest.mark.parametrize(
    "change",
    [
        {"household": [{"relation": None}]},
        {"household": [None]},
        {"languages": [None]},
        {"needs": [None]},
    ],
)
def test_null_inside_a_list_is_a_422_and_changes_nothing(serve, issuer, change):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    before = register(intake, ngo, **RECORD)
    ref = before["client_ref"]
    assert_problem(intake.patch(f"/v1/clients/{ref}", json=change, headers=ngo), 422)
    assert intake.get(f"/v1/clients/{ref}", headers=ngo).json() == before


def test_an_empty_list_or_object_clears_it(serve, issuer):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, ngo, **RECORD)["client_ref"]
    cleared = intake.patch(f"/v1/clients/{ref}", json={"household": [], "health": {}}, headers=ngo)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["household"] == [] and cleared.json()["health"] == {}


def test_the_update_schema_says_which_fields_are_nullable(serve):
    schema = serve("intake").get("/openapi.json").json()["components"]["schemas"]["ClientUpdate"]
    for name, field in schema["properties"].items():
        nullable = any(branch.get("type") == "null" for branch in field.get("anyOf", []))
        assert nullable == (name in NULLABLE), name
        # Only a nullable field shows a default, and that is null (unchanged).
        assert "default" not in field or (field["default"] is None and nullable)


# ---------------------------------------------------------------- dates


def test_a_number_is_not_a_date(serve, issuer):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, ngo)["client_ref"]
    for date in (0, "0", 1767225600, "2026-1-5"):
        contact = {"kind": "inform", "topics": [], "date": date}
        refused = intake.post(f"/v1/clients/{ref}/contacts", json=contact, headers=ngo)
        assert assert_problem(refused, 422, "validation")["errors"][0]["loc"] == ["body", "date"]
    listed = intake.get(f"/v1/clients/{ref}/contacts", headers=ngo).json()
    assert listed["count"] == 0
    audit = serve("audit")
    for query in ("to=0", "from=1767225600"):
        refused = audit.get(f"/v1/stats?{query}", headers=issuer.headers(**AUDITOR))
        assert_problem(refused, 422, "validation")


# ---------------------------------------------------------------- request size


def test_a_body_over_the_limit_is_a_413_and_stores_nothing(serve, issuer):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    big = {"display_name": "Amina", "case_notes": "x" * 10, "needs": ["y" * MAX_REQUEST_BYTES]}
    refused = intake.post("/v1/clients", json=big, headers=ngo)
    body = assert_problem(refused, 413, "too-large")
    assert body["instance"] == "/v1/clients"
    assert intake.get("/v1/clients", headers=ngo).json()["count"] == 0


def test_a_chunked_body_over_the_limit_is_a_413_too(serve, issuer):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    chunk = json.dumps({"display_name": "Amina", "needs": ["z" * 65536]}).encode()

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the body is counted as it arrives.
        for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2):
            yield chunk

    refused = intake.post(
        "/v1/clients",
        content=chunks(),
        headers={**ngo, "Content-Type": "application/json"},
    )
    assert_problem(refused, 413, "too-large")
    assert intake.get("/v1/clients", headers=ngo).json()["count"] == 0


def test_a_body_at_the_limit_is_read(serve, issuer):
    intake = serve("intake")
    ngo = issuer.headers(**NGO_GHENT)
    record = {"display_name": "Amina", "case_notes": "n" * 20_000}
    assert len(json.dumps(record)) < MAX_REQUEST_BYTES
    assert intake.post("/v1/clients", json=record, headers=ngo).status_code == 201
