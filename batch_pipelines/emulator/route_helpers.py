"""What every emulator route shares: JSON answers, bounded body reads, query parameters, and
``vendor_route`` (credential check, injected route faults, refusals in the vendor's error shape)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipelines.emulator.errors import ApiError, error_response, surface_of

if TYPE_CHECKING:
    from batch_pipelines.emulator.app import Emulator

log = logging.getLogger("batch_pipelines.emulator")

MAX_JSON_BODY = 32 * 1024 * 1024


def json_response(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"Request body is {int(declared)} bytes; the limit is {limit} bytes.", code="request_too_large"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"Request body exceeds the {limit}-byte limit.", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, f"Invalid '{name}': expected an integer, got {raw[:20]!r}.", param=name, code="invalid_value"
        ) from None
    if not low <= value <= high:
        raise ApiError(400, f"Invalid '{name}': {value} is outside [{low}, {high}].", param=name, code="invalid_value")
    return value


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


Handler = Callable[[Request], Awaitable[Response]]


def vendor_route(
    emulator: Emulator, path: str, handler: Handler, methods: list[str], fault_route: str | None = None
) -> Route:
    async def endpoint(request: Request) -> Response:
        surface = surface_of(request.url.path, request.headers)
        try:
            emulator.authorize(request)
            if fault_route:
                emulator.route_fault(fault_route)
            return await handler(request)
        except ApiError as exc:
            return error_response(surface, exc)
        except HTTPException as exc:
            return error_response(surface, ApiError(exc.status_code, str(exc.detail)))
        except Exception:  # never a stack trace to the client
            log.exception("emulator route %s failed", path)
            return error_response(surface, ApiError(500, "The server had an error while processing your request."))

    return Route(path, endpoint, methods=methods)
