"""The API description every service publishes, true to what the service really answers.

FastAPI describes a route's success response and a 422 of its own; the errors this project
renders are RFC 9457 problem+json (`errors.py`). `describe` rewrites each service's document
once, here, so that no route can forget a part of it:

- every error response is `application/problem+json` with the `Problem` schema, and FastAPI's
  `HTTPValidationError` 422 becomes the `ValidationProblem` the handler renders;
- a route that asks for a token declares 401 (with `WWW-Authenticate`), 403, and 503 (the
  issuer's keys could not be loaded); one with parameters or a body declares 422, one with a
  body 400 and 413 (`limits.py`); one with an `Idempotency-Key` header its 422
  `idempotency-key-reused`;
- a route's own refusals are declared in its decorator, `responses=problems(NotFound, 409)`;
- every error response has an example per problem type, a 503 declares `Retry-After` and a
  201 `Location`;
- the operationId is the route function's name, unique in the service; the document names its
  servers, contact and licence.

`install_api_description` puts it in place of FastAPI's and serves Swagger UI and ReDoc from
assets installed with the kernel (`fastapi-offline`), so /docs and /redoc work on a network
without Internet access: their pages name no URL but the service's own.
"""

import copy
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import HTMLResponse

from twoline_shared.errors import (
    PROBLEM_JSON,
    PROBLEM_TYPE_BASE,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    Unauthorized,
    Unavailable,
)
from twoline_shared.idempotency import REPLAYED_HEADER
from twoline_shared.limits import MAX_REQUEST_BYTES
from twoline_shared.policy import app_routes, required_roles

REF = "#/components/schemas/"
IDEMPOTENCY_HEADER = "Idempotency-Key"

# The licence of the project (pyproject.toml), as an SPDX identifier (OpenAPI 3.1).
LICENSE = {"name": "EUPL-1.2", "identifier": "EUPL-1.2"}
CONTACT = {"name": "The twoline maintainers"}
# Relative to the document: the service answers where its /openapi.json was fetched from,
# whatever host, port or proxy prefix that is.
SERVERS = [{"url": "/", "description": "This service, at the address this document came from."}]


# ---------------------------------------------------------------- the problem schema


class ValidationIssue(BaseModel):
    """One thing wrong with a request, where and what; never the rejected value (F8)."""

    loc: list[str | int] = Field(
        description=(
            "Where: the part of the request (`body`, `query`, `path` or `header`), then the "
            "field names and list positions down to the value that is wrong."
        ),
        examples=[["body", "display_name"]],
    )
    msg: str = Field(
        description="What is wrong with it, in English, for a person to read.",
        examples=["Field required"],
    )
    type: str = Field(
        description="A stable code of the check that failed, e.g. `missing`, `string_too_long`.",
        examples=["missing"],
    )


class Problem(BaseModel):
    """An RFC 9457 problem detail: the body of every error response of every service.

    Members other than these are extensions of one problem type (e.g. `missing_consent` of
    `consent-missing`, `checks` of `not-ready`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description=(
            "A stable URN naming the kind of problem, `urn:twoline:problem:<slug>`: what a "
            "client branches on. The response's description lists the types it may carry."
        ),
        examples=[PROBLEM_TYPE_BASE + "not-found"],
    )
    title: str = Field(
        description="A short summary of the kind of problem, the same for every occurrence.",
        examples=["Not found"],
    )
    status: int = Field(
        ge=400, le=599, description="The HTTP status code of the response.", examples=[404]
    )
    detail: str = Field(
        description="What went wrong in this occurrence, for a person to read.",
        examples=["No client 'C-5A7B63FF22E4' in your organisation."],
    )
    instance: str | None = Field(
        default=None,
        description="The path of the request that failed, without its query string.",
        examples=["/v1/clients/C-5A7B63FF22E4"],
    )
    errors: list[ValidationIssue] | None = Field(
        default=None,
        description=(
            "Of `urn:twoline:problem:validation` only: every part of the request that does not "
            "match the operation's schema."
        ),
    )


class ValidationProblem(Problem):
    """The problem of a request that does not match its operation's schema (type `validation`)."""

    errors: list[ValidationIssue] = Field(  # type: ignore[assignment]
        description="Every part of the request that does not match the operation's schema."
    )


# ---------------------------------------------------------------- problem types


@dataclass(frozen=True)
class ProblemType:
    """One kind of refusal: its status, its stable slug (the `type` URN) and when it happens."""

    status: int
    slug: str
    title: str
    when: str

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug


UNAUTHORIZED = ProblemType(
    401,
    "unauthorized",
    Unauthorized.title,
    "No bearer token, or one whose signature, issuer, audience or expiry is not valid.",
)
FORBIDDEN = ProblemType(
    403,
    "forbidden",
    Forbidden.title,
    "Your role may not use this route, or your token lacks the org, or the agency and office, "
    "that your role needs.",
)
MIXED_ZONES = ProblemType(
    403,
    "mixed-zones",
    Forbidden.title,
    "Your token holds roles of two sides of the firewall; it reaches no route (F1).",
)
VALIDATION = ProblemType(
    422,
    "validation",
    "The request is not valid",
    "The request does not match this operation's schema; `errors` says where and what.",
)
TOO_LARGE = ProblemType(
    413,
    "too-large",
    "Request entity too large",
    f"The request body is larger than {MAX_REQUEST_BYTES} bytes.",
)
BAD_REQUEST = ProblemType(
    400,
    "bad-request",
    "Bad request",
    "The request body cannot be read as JSON text (e.g. it is not UTF-8).",
)
ISSUER_UNAVAILABLE = ProblemType(
    503,
    "unavailable",
    Unavailable.title,
    "A dependency did not answer (e.g. the token issuer's keys could not be loaded); nothing "
    "was changed. Retry after `Retry-After` seconds.",
)
IDEMPOTENCY_KEY_REUSED = ProblemType(
    422,
    "idempotency-key-reused",
    Invalid.title,
    f"This `{IDEMPOTENCY_HEADER}` came with another request before; a new request needs a new "
    "key. Nothing was changed.",
)
IDEMPOTENCY_KEY_ABOUT = (
    "Makes a retry of this creating request safe: send a fresh unique value (e.g. a UUID) and "
    "the very same value when you send the request again. A retry answers like the first "
    "request and creates nothing more; the same key with a different request is refused with "
    "422 `idempotency-key-reused`. Visible ASCII, 1 to 255 characters."
)
CALL_UNAVAILABLE = ProblemType(
    503,
    "call-unavailable",
    Unavailable.title,
    "Another service this route asks did not answer in time; nothing was changed. Retry after "
    "`Retry-After` seconds.",
)
NOT_READY = ProblemType(
    503,
    "not-ready",
    "Not ready",
    "The database does not answer or a NATS link is down; `checks` says which. Retry after "
    "`Retry-After` seconds.",
)
CALL_FAILED = ProblemType(
    503,
    "call-failed",
    Unavailable.title,
    "Another service this route asks gave no usable answer; nothing was changed. Retry after "
    "`Retry-After` seconds.",
)

# What a bare status in `problems(...)` stands for.
GENERIC: dict[int, ProblemType] = {
    403: FORBIDDEN,
    404: ProblemType(
        404,
        NotFound.slug,
        NotFound.title,
        "Nothing with that id within your reach; another organisation's or office's is "
        "answered the same way (F7).",
    ),
    409: ProblemType(
        409,
        Conflict.slug,
        Conflict.title,
        "The request does not fit the resource's current state; reload it.",
    ),
    422: ProblemType(
        422, Invalid.slug, Invalid.title, "The request is well-formed but breaks a rule."
    ),
    503: ISSUER_UNAVAILABLE,
}

ProblemSource = int | ProblemType | type[ServiceError]

# Every type a document names, by status and slug, so that the declarations of a route and the
# kernel's can be merged into one response (the first description of a slug wins).
_KNOWN: dict[tuple[int, str], ProblemType] = {}


def problem_type(source: ProblemSource) -> ProblemType:
    """A declared refusal: a bare status, a `ProblemType`, or a `ServiceError` subclass (its
    status, slug and title, and the first paragraph of its docstring says when)."""
    if isinstance(source, ProblemType):
        found = source
    elif isinstance(source, int):
        if source not in GENERIC:
            raise ValueError(f"no generic problem for status {source}; declare a ProblemType")
        found = GENERIC[source]
    elif inspect.isclass(source) and issubclass(source, ServiceError):
        doc = inspect.getdoc(source) if source.__doc__ else None
        when = doc.split("\n\n")[0].replace("\n", " ") if doc else source.title
        found = ProblemType(source.status, source.slug, source.title, when)
    else:
        raise TypeError(f"not a problem: {source!r}")
    return _KNOWN.setdefault((found.status, found.slug), found)


def problems(*sources: ProblemSource) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route decorator: the refusals the route itself answers with.

    Authentication, authorisation, validation and body-size refusals are added by the kernel;
    declare what the route's own code raises: `responses=problems(NotFound, IllegalTransition)`.
    """
    by_status: dict[int, list[ProblemType]] = {}
    for source in sources:
        found = problem_type(source)
        by_status.setdefault(found.status, []).append(found)
    return {status: _problem_response(types) for status, types in sorted(by_status.items())}


def _example(found: ProblemType, instance: str, issues: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": found.type,
        "title": found.title,
        "status": found.status,
        "detail": found.when,
        "instance": instance,
    }
    if found is VALIDATION or found.slug == VALIDATION.slug:
        body["errors"] = issues
    return body


def _problem_response(
    types: Iterable[ProblemType],
    *,
    instance: str = "/v1/...",
    issues: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    types = list(dict.fromkeys(types))
    only_validation = all(t.slug == VALIDATION.slug for t in types)
    schema = "ValidationProblem" if only_validation else "Problem"
    issues = issues or [{"loc": ["body"], "msg": "Field required", "type": "missing"}]
    titles = {t.title for t in types}
    title = types[0].title if len(titles) == 1 else HTTPStatus(types[0].status).phrase
    lines = [f"- `{t.type}`: {t.when}" for t in types]
    response: dict[str, Any] = {
        "description": f"{title}.\n\n" + "\n".join(lines),
        "content": {
            PROBLEM_JSON: {
                "schema": {"$ref": REF + schema},
                "examples": {
                    t.slug: {"summary": t.when, "value": _example(t, instance, issues)}
                    for t in types
                },
            }
        },
    }
    if types[0].status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "The bearer scheme, and why the token was not accepted.",
                "schema": {"type": "string"},
                "example": 'Bearer error="invalid_token"',
            }
        }
    if types[0].status == 503:
        response["headers"] = {
            "Retry-After": {
                "description": "After how many seconds a retry may succeed (RFC 9110).",
                "required": True,
                "schema": {"type": "integer", "minimum": 0},
                "example": 1,
            }
        }
    return response


# ---------------------------------------------------------------- the kernel's health routes


class Liveness(BaseModel):
    """The process answers."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = Field(description="Always `ok`: the process answers.")


class Readiness(BaseModel):
    """The service can do its work: its database answers and every NATS link is up."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "checks": {"database": True, "nats": True}}]
        }
    )

    status: Literal["ready"] = Field(description="Always `ready`; not ready is a 503.")
    checks: dict[str, bool] = Field(
        description="Each dependency and whether it answers: `database`, `nats`."
    )


# ---------------------------------------------------------------- the document


def describe(app: FastAPI, document: dict[str, Any]) -> dict[str, Any]:
    """The service's OpenAPI document as FastAPI made it, made true to the service (see above)."""
    document = copy.deepcopy(document)
    document["servers"] = copy.deepcopy(SERVERS)
    document["info"]["contact"] = dict(CONTACT)
    document["info"]["license"] = dict(LICENSE)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for model in (ValidationIssue, Problem, ValidationProblem):
        schema = model.model_json_schema(ref_template=REF + "{model}")
        schema.pop("$defs", None)  # ValidationIssue is a component of its own
        schemas[model.__name__] = schema
    for schema in schemas.values():
        for example in schema.get("examples", []):
            _restore_nulls(document, example, schema)
    routes = app_routes(app)
    operation_ids: dict[str, str] = {}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((method.upper(), path))
            if route is None:
                raise ValueError(f"{method.upper()} {path} is documented but not served")
            where = f"{method.upper()} {path}"
            if route.name in operation_ids:
                raise ValueError(f"{where} and {operation_ids[route.name]} share {route.name!r}")
            operation_ids[route.name] = where
            operation["operationId"] = route.name
            if route.description:
                # STYLE: the route's one-line docstring is its summary (not its function name).
                operation["summary"] = _first_sentence(route.description)
            _describe_operation(route, path, operation)
    return document


def _describe_operation(route: APIRoute, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    parameters: list[dict[str, Any]] = operation.get("parameters", [])
    body = "requestBody" in operation
    # FastAPI's own 422 is replaced: what it documents is not what the handler renders.
    fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json")
    if fastapi_422 is not None:
        del responses["422"]
    declared = _declared_types(responses)
    automatic: list[ProblemType] = []
    if required_roles(route) is not None:
        automatic += [UNAUTHORIZED, FORBIDDEN, MIXED_ZONES, ISSUER_UNAVAILABLE]
    if parameters or body:
        automatic.append(VALIDATION)
    if body:
        automatic += [BAD_REQUEST, TOO_LARGE]
    replayable = False
    for parameter in parameters:
        if parameter.get("in") == "header" and parameter.get("name") == IDEMPOTENCY_HEADER:
            replayable = True
            automatic.append(IDEMPOTENCY_KEY_REUSED)
            parameter.setdefault("description", IDEMPOTENCY_KEY_ABOUT)
    for found in automatic:
        _KNOWN.setdefault((found.status, found.slug), found)
    by_status: dict[int, list[ProblemType]] = {}
    for found in [*automatic, *declared]:
        by_status.setdefault(found.status, []).append(found)
    issues = _validation_issues(parameters, body)
    instance = path
    for status, types in sorted(by_status.items()):
        responses[str(status)] = _problem_response(types, instance=instance, issues=issues)
    for status, response in responses.items():
        if replayable and status.startswith("2"):
            response.setdefault("headers", {})[REPLAYED_HEADER] = {
                "description": f"`true` when this answer replays an earlier request with the same "
                f"`{IDEMPOTENCY_HEADER}`: nothing was created or changed this time.",
                "schema": {"type": "string", "enum": ["true"]},
            }
        if status == "201":
            response.setdefault("headers", {})["Location"] = {
                "description": "The path of the resource this request created.",
                "required": True,
                "schema": {"type": "string"},
            }
    operation["responses"] = dict(sorted(responses.items()))


def _first_sentence(docstring: str) -> str:
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def _restore_nulls(document: dict[str, Any], value: Any, schema: dict[str, Any]) -> None:
    """Put back the `null`s of an example that FastAPI's document leaves out (it drops every
    None, examples included): a required, nullable property missing from an example object was
    a `null` there, or the example would not have matched its own model."""
    schema = _resolved(document, schema)
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if branches:
        for branch in branches:
            _restore_nulls(document, value, branch)
        return
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        for name in schema.get("required", []):
            if name not in value and _nullable(document, properties.get(name, {})):
                value[name] = None
        for name, item in value.items():
            if name in properties:
                _restore_nulls(document, item, properties[name])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _restore_nulls(document, item, schema["items"])


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].removeprefix(REF)]
    return schema


def _nullable(document: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = _resolved(document, schema)
    return schema.get("type") == "null" or any(
        b.get("type") == "null" for b in schema.get("anyOf", [])
    )


def _declared_types(responses: dict[str, Any]) -> list[ProblemType]:
    """The problem types a route's decorator declared (`problems`), read back by their examples."""
    found: list[ProblemType] = []
    for status, response in responses.items():
        content = response.get("content", {}).get(PROBLEM_JSON)
        if content is None:
            continue
        for slug in content.get("examples", {}):
            found.append(_KNOWN[(int(status), slug)])
    return found


def _validation_issues(parameters: list[dict[str, Any]], body: bool) -> list[dict[str, Any]]:
    """The `errors` of the operation's validation example: what a missing body, or else a
    missing required parameter, is answered with."""
    if body:
        return [{"loc": ["body"], "msg": "Field required", "type": "missing"}]
    for parameter in parameters:
        if parameter.get("required"):
            return [
                {
                    "loc": [parameter["in"], parameter["name"]],
                    "msg": "Field required",
                    "type": "missing",
                }
            ]
    if parameters:
        first = parameters[0]
        return [
            {
                "loc": [first["in"], first["name"]],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "type": "int_parsing",
            }
        ]
    return []


# ---------------------------------------------------------------- docs pages, offline

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs/assets"


def install_api_description(app: FastAPI) -> None:
    """Publish `describe`'s document at /openapi.json, and Swagger UI (/docs) and ReDoc
    (/redoc) from the kernel's own assets. The app must be made with `docs_url=None` and
    `redoc_url=None`, so that FastAPI's CDN-loading pages are not served."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's docs pages load a CDN"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = describe(app, generated)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} — Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=None,
            # No badge from the public validator: that would be a request to the Internet.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} — ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    # Plain routes, like FastAPI's own docs pages: not API routes, so not in any policy.
    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
