"""One exception hierarchy, rendered once as RFC 9457 problem+json."""

import logging
from typing import Any

from fastapi import FastAPI, Request
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

    def __init__(self, detail: str | None = None, *, slug: str | None = None, **extensions: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if slug:
            self.slug = slug
        self.extensions = extensions
        self.headers: dict[str, str] = {}


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


def install_error_handlers(app: FastAPI) -> None:
    """Render service errors, validation errors, HTTP errors and crashes as problem+json."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
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
