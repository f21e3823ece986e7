"""Every service's OpenAPI document is complete, and says what the service really answers.

Walks each document as the app publishes it (twoline_shared.openapi) and fails, by operation or
schema, on: a missing operationId, servers, contact or licence; an operation without the error
responses its route can give (401/403 with a token, 422 with parameters or a body, 400/413 with
a body); an error response that is not problem+json with the `Problem` schema; FastAPI's own
`HTTPValidationError`; a 201 without `Location`, a 503 without `Retry-After`; an operation, or
one of its responses, without an example, or an example its schema does not accept; a public
field or a parameter without a description. test_fuzz.py holds the declarations against what
the live services answer.
"""

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest

from tests.api.conftest import SERVICES, bare_app, declared
from twoline_shared.errors import PROBLEM_JSON
from twoline_shared.openapi import IDEMPOTENCY_HEADER
from twoline_shared.policy import app_routes

DOCUMENTS: dict[str, dict[str, Any]] = {name: bare_app(name).openapi() for name in SERVICES}
METHODS = {"get", "put", "post", "delete", "patch"}
PROBLEM_SCHEMAS = {"#/components/schemas/Problem", "#/components/schemas/ValidationProblem"}


def operations(name: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in DOCUMENTS[name]["paths"].items():
        for method, operation in items.items():
            if method in METHODS:
                yield method.upper(), path, operation


def every_operation() -> list[tuple[str, str, str]]:
    return [(name, m, p) for name in SERVICES for m, p, _ in operations(name)]


def operation_of(name: str, method: str, path: str) -> dict[str, Any]:
    return DOCUMENTS[name]["paths"][path][method.lower()]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, kind, key = schema["$ref"].split("/")
        schema = document["components"][kind][key]
    return schema


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema validator for `schema`, its `$ref`s resolved against the document."""
    return jsonschema_rs.validator_for({"components": document["components"], **schema})


def examples_of(document: dict[str, Any], media: dict[str, Any]) -> list[Any]:
    """The examples of a media type: its own, else its schema's (named or inline)."""
    found = [e["value"] for e in media.get("examples", {}).values()]
    if "example" in media:
        found.append(media["example"])
    schema = media.get("schema", {})
    for candidate in [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]:
        if found:
            break
        found = list(resolve(document, candidate).get("examples", []))
    return found


OPERATIONS = every_operation()
IDS = [f"{n}:{m} {p}" for n, m, p in OPERATIONS]


@pytest.mark.parametrize("name", SERVICES)
def test_the_document_names_its_servers_contact_and_licence(name):
    document = DOCUMENTS[name]
    assert document["openapi"].startswith("3.1")
    assert document["servers"] and all(s["url"] for s in document["servers"])
    assert document["info"]["contact"]["name"]
    # The project's licence (pyproject.toml), as an SPDX identifier.
    assert document["info"]["license"] == {"name": "EUPL-1.2", "identifier": "EUPL-1.2"}
    assert document["info"]["description"]


@pytest.mark.parametrize("name", SERVICES)
def test_every_operation_is_named_by_its_route_function_and_summed_up_by_its_docstring(name):
    routes = {key: route.name for key, route in app_routes(bare_app(name)).items()}
    ids = [operation["operationId"] for _, _, operation in operations(name)]
    assert len(ids) == len(set(ids)), f"{name}: operationIds repeat"
    for method, path, operation in operations(name):
        assert operation["operationId"] == routes[(method, path)]
        # The summary is the route's one-line docstring (STYLE.md), not its function name.
        assert operation["summary"].endswith((".", "?", "!"))
        assert operation["summary"] in " ".join(operation["description"].split())


@pytest.mark.parametrize(("name", "method", "path"), OPERATIONS, ids=IDS)
def test_every_operation_declares_the_errors_its_route_can_give(name, method, path):
    operation = operation_of(name, method, path)
    responses = operation["responses"]
    access = declared(name)[(method, path)]
    if not access.public:
        assert {"401", "403", "503"} <= set(responses), "a route with a token: 401, 403, 503"
        assert "WWW-Authenticate" in responses["401"]["headers"]
    if operation.get("parameters") or "requestBody" in operation:
        assert "422" in responses, "parameters or a body: 422"
        assert "validation" in responses["422"]["content"][PROBLEM_JSON]["examples"]
    if "requestBody" in operation:
        assert {"400", "413"} <= set(responses), "a body: 400 (not JSON text) and 413 (too large)"
    headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
    if IDEMPOTENCY_HEADER in headers:
        examples = responses["422"]["content"][PROBLEM_JSON]["examples"]
        assert "idempotency-key-reused" in examples


@pytest.mark.parametrize(("name", "method", "path"), OPERATIONS, ids=IDS)
def test_every_error_is_problem_json_with_the_problem_schema(name, method, path):
    for status, response in operation_of(name, method, path)["responses"].items():
        if int(status) < 400:
            continue
        assert set(response["content"]) == {PROBLEM_JSON}, f"{status} is not problem+json only"
        media = response["content"][PROBLEM_JSON]
        assert media["schema"]["$ref"] in PROBLEM_SCHEMAS, status
        assert media["examples"], f"{status} has no example"
        for slug, example in media["examples"].items():
            assert example["value"]["type"] == f"urn:twoline:problem:{slug}"
            assert example["value"]["status"] == int(status)
        # Each type it may carry is named in its description.
        for slug in media["examples"]:
            assert f"urn:twoline:problem:{slug}" in response["description"]


@pytest.mark.parametrize("name", SERVICES)
def test_fastapis_own_validation_error_is_gone(name):
    schemas = DOCUMENTS[name]["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert {"Problem", "ValidationProblem", "ValidationIssue"} <= set(schemas)
    problem = schemas["Problem"]
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(problem["properties"])
    # Extension members (e.g. `missing_consent`) are allowed.
    assert problem.get("additionalProperties", True) is not False


@pytest.mark.parametrize(("name", "method", "path"), OPERATIONS, ids=IDS)
def test_created_declares_location_and_unavailable_declares_retry_after(name, method, path):
    responses = operation_of(name, method, path)["responses"]
    if "201" in responses:
        assert responses["201"]["headers"]["Location"]["required"] is True
    if "503" in responses:
        assert responses["503"]["headers"]["Retry-After"]["required"] is True


@pytest.mark.parametrize(("name", "method", "path"), OPERATIONS, ids=IDS)
def test_every_operation_has_examples_its_schemas_accept(name, method, path):
    document = DOCUMENTS[name]
    operation = operation_of(name, method, path)
    bodies = [
        ("request body", media)
        for media in operation.get("requestBody", {}).get("content", {}).values()
    ]
    answers = [
        (f"{status} response", media)
        for status, response in operation["responses"].items()
        for media in response.get("content", {}).values()
    ]
    for where, media in [*bodies, *answers]:
        examples = examples_of(document, media)
        assert examples, f"{where} has no example"
        check = validator(document, media["schema"])
        for example in examples:
            errors = [e.message for e in check.iter_errors(example)]
            assert not errors, f"{where}: its example does not match its schema: {errors}"
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            schema = parameter["schema"]
            assert (
                parameter.get("examples")
                or schema.get("examples")
                or schema.get("enum")
                or ("$ref" in schema)
            ), f"path parameter {parameter['name']} has no example"


@pytest.mark.parametrize(("name", "method", "path"), OPERATIONS, ids=IDS)
def test_every_parameter_has_a_description(name, method, path):
    for parameter in operation_of(name, method, path).get("parameters", []):
        assert parameter.get("description"), f"{parameter['in']} {parameter['name']}"


@pytest.mark.parametrize("name", SERVICES)
def test_every_public_field_has_a_description(name):
    schemas = DOCUMENTS[name]["components"]["schemas"]
    missing = [
        f"{schema_name}.{field}"
        for schema_name, schema in schemas.items()
        for field, definition in schema.get("properties", {}).items()
        if not definition.get("description")
    ]
    assert not missing, f"fields without a description: {missing}"
    assert all(schema.get("description") for schema in schemas.values() if "properties" in schema)
