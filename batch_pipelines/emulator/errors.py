"""API errors in each vendor's shape.

Route code raises ``ApiError`` with a status and a message; the app renders it in the shape of
the surface the request came in on (OpenAI or Anthropic). Nothing else reaches a client: an
unexpected exception becomes a vendor-shaped 500 without internals.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from starlette.responses import Response

Surface = Literal["openai", "anthropic"]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    416: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    416: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """A request the emulated provider refuses, with the status the vendor would use."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def openai_error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    error_type = _OPENAI_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}


def error_response(surface: Surface, error: ApiError) -> Response:
    if surface == "anthropic":
        body = anthropic_error_body(error.status, error.message)
    else:
        body = openai_error_body(error.status, error.message, error.code, error.param)
    return Response(orjson.dumps(body), status_code=error.status, media_type="application/json", headers=error.headers)


def surface_of(path: str, headers: Any) -> Surface:
    """Which vendor a request speaks: Anthropic routes live under /v1/messages."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/models") and "anthropic-version" in headers:
        return "anthropic"
    return "openai"
