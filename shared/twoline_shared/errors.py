"""One exception hierarchy, rendered once as RFC 9457 problem+json.

Every denied access is also an audit record (issue: auditors trace every referral): a 401 or 403,
and any error raised with `audit={...}` (e.g. a consent decision that denies), is recorded with
`outcome` `denied` in a transaction of its own, since the request's own rolls back.
"""

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("twoline.errors")

PROBLEM_TYPE_BASE = "urn:twoline:problem:"
PROBLEM_JSON = "application/problem+json"


class ServiceError(Exception):
    """Base of every error a service raises on purpose; `slug` makes the stable problem type."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        slug: str | None = None,
        audit: Mapping[str, Any] | None = None,
        **extensions: Any,
    ):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if slug:
            self.slug = slug
        self.extensions = extensions
        self.headers: dict[str, str] = {}
        # What the refusal is about, for its audit record (ids and codes only): `action`,
        # `resource_type`, `resource_id` and any codes; None records 401/403 by their route.
        self.audit = dict(audit) if audit is not None else None


class Invalid(ServiceError):
    status, slug, title = 422, "invalid", "The request is not valid"


class Unauthorized(ServiceError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **extensions: Any):
        super().__init__(detail, **extensions)
        self.headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class Forbidden(ServiceError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(ServiceError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ServiceError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class Unavailable(ServiceError):
    status, slug, title = 503, "unavailable", "A dependency is not available"

    # A dependency that does not answer now is asked again on the next request: a caller may
    # retry after this many seconds (RFC 9110 Retry-After). Nothing was stored (fail closed).
    retry_after_seconds = 1

    def __init__(self, detail: str | None = None, **extensions: Any):
        super().__init__(detail, **extensions)
        self.headers = {"Retry-After": str(self.retry_after_seconds)}


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("too-large", "Request entity too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem(
    status: int, slug: str, title: str, detail: str, request: Request | None = None, **ext: Any
) -> JSONResponse:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update(ext)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


_METHOD_ACTION = {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "update"}


def _route_template(request: Request) -> str:
    """The matched route's full template (`/v1/cases/{case_id}`), never the concrete path.

    Included routers keep their own prefix out of `route.path`; the static segments in front
    of it are taken from the request path (no route prefix here holds a parameter).
    """
    route_path = getattr(request.scope.get("route"), "path", None)
    if not route_path:
        return "unmatched"
    segments = [s for s in request.url.path.split("/") if s]
    own = [s for s in route_path.split("/") if s]
    prefix = segments[: max(len(segments) - len(own), 0)]
    return "/" + "/".join([*prefix, *own])


def _record_refusal(request: Request, exc: ServiceError) -> None:
    """The audit record of a refused request: who (if known), which route, why. Never the
    concrete path or any input, which may carry anything the caller typed (F8).

    It goes through the service's outbox in a transaction of its own, or to the recorder the
    app set as `app.state.record_refusal` (the audit service appends to its own log).
    """
    from twoline_shared.audit import record_refusal, refusal_event  # audit -> auth -> errors

    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return
    template = _route_template(request)
    what: dict[str, Any] = {
        "action": _METHOD_ACTION.get(request.method, "execute"),
        "resource_type": "route",
        "resource_id": f"{request.method} {template}",
        **(exc.audit or {}),
    }
    try:
        event = refusal_event(
            service=runtime.spec.name,
            actor=getattr(request.state, "principal", None),
            reason=exc.slug,
            status=exc.status,
            method=request.method,
            route=template,
            **what,
        )
        recorder = getattr(request.app.state, "record_refusal", None)
        if recorder is not None:
            recorder(event)
        else:
            record_refusal(runtime.engine, event, after_commit=runtime.after_commit)
    except Exception as failure:  # the refusal still answers; the record's loss is logged
        log.error("the audit record of a refusal was not stored: %s", type(failure).__name__)


def install_error_handlers(app: FastAPI) -> None:
    """Render service errors, validation errors, HTTP errors and crashes as problem+json."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status in (401, 403) or exc.audit is not None:
            await run_in_threadpool(_record_refusal, request, exc)
        response = problem(exc.status, exc.slug, exc.title, exc.detail, request, **exc.extensions)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what, never the rejected input: it may be personal data (F8).
        errors = [
            {
                "loc": list(err.get("loc", ())),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return problem(
            422, "validation", "The request is not valid", "See `errors`.", request, errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        response = problem(exc.status_code, slug, title, detail, request)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # The type only: exception messages can carry values from the request.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem(500, "internal", "Internal error", "An unexpected error occurred.", request)
