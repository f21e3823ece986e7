"""Request size: no request body larger than `MAX_REQUEST_BYTES` reaches a route.

Without a bound, a caller could make a service read, parse and store (in a JSON column, an
outbox row, an event) a body of any size. The limit holds for a declared `Content-Length` before
anything is read, and for a body sent without one (chunked) as it arrives. Either way the answer
is a 413 problem+json, and nothing was stored.
"""

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twoline_shared.errors import problem

# A client record with every field at its longest is a few tens of kilobytes; a megabyte is
# far more than any route needs, and little enough to hold in memory per request.
MAX_REQUEST_BYTES = 1 << 20

TOO_LARGE_DETAIL = f"The request body is larger than {MAX_REQUEST_BYTES} bytes."


class BodyTooLarge(HTTPException):
    """Raised while a body without a Content-Length is read, once it passes the limit; the
    kernel's HTTP error handler renders it (FastAPI passes HTTP errors of a body read on)."""

    def __init__(self) -> None:
        super().__init__(413, TOO_LARGE_DETAIL)


class RequestSizeLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(
        413, "too-large", "Request entity too large", TOO_LARGE_DETAIL, Request(scope)
    )
    # The rest of the body is not read, so the connection cannot carry another request.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
