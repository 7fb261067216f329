"""Errors in the shape of the vendor the caller speaks, so its SDK raises its own exception types.

OpenAI: ``{"error": {"message", "type", "param", "code"}}``; Anthropic: ``{"type": "error",
"error": {"type", "message"}}`` (both from the vendors' API references).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from starlette.responses import Response

Surface = Literal["openai", "anthropic"]

_OPENAI_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FrontDoorError(Exception):
    """A request the front door refuses, with the status a vendor would use."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_body(surface: Surface, status: int, message: str, code: str | None = None, param: str | None = None) -> Any:
    if surface == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    if status == 429:
        error_type = "requests"
    elif status >= 500:
        error_type = "server_error"
    else:
        error_type = _OPENAI_TYPES.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(surface: Surface, error: FrontDoorError) -> Response:
    body = error_body(surface, error.status, error.message, error.code, error.param)
    return Response(orjson.dumps(body), status_code=error.status, media_type="application/json")
