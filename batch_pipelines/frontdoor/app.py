"""The front door's routes: vendor-shaped chat, embeddings and messages, and deferred-call lookups.

``X-Batch-Lane: interactive`` answers in the vendor's own response shape (an unmodified SDK works
with that one default header); ``deferrable`` (the configured default) answers ``202`` with a
``deferred_call`` the caller looks up at ``GET /v1/deferred/{id}``. Every route checks the
caller's key first. Vendor keys stay in the router's providers: nothing here echoes them.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipelines.core.errors import BatchPipelinesError, LedgerError, UnknownModelError
from batch_pipelines.core.outcomes import OutcomeKind
from batch_pipelines.core.requests import Endpoint
from batch_pipelines.frontdoor.errors import FrontDoorError, Surface, error_response
from batch_pipelines.services.router import CallResult, DeferredCall, Router

LANE_HEADER = "x-batch-lane"
DEADLINE_HEADER = "x-batch-deadline"
IDEMPOTENCY_HEADER = "idempotency-key"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_LANES = ("interactive", "deferrable")


@dataclass(frozen=True, slots=True)
class FrontDoorSettings:
    """How the front door admits callers: their keys (None: any non-empty key), the default lane, the body cap."""

    keys: frozenset[str] | None
    default_lane: str = "deferrable"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def create_app(router: Router, settings: FrontDoorSettings) -> Starlette:
    door = _FrontDoor(router, settings)
    routes = [
        Route("/v1/chat/completions", door.endpoint(Endpoint.CHAT, "openai"), methods=["POST"]),
        Route("/v1/embeddings", door.endpoint(Endpoint.EMBEDDINGS, "openai"), methods=["POST"]),
        Route("/v1/messages", door.endpoint(Endpoint.MESSAGES, "anthropic"), methods=["POST"]),
        Route("/v1/deferred/{call_id}", door.lookup, methods=["GET"]),
    ]
    return Starlette(routes=routes)


class _FrontDoor:
    def __init__(self, router: Router, settings: FrontDoorSettings) -> None:
        self.router = router
        self.settings = settings
        self._keys = [key.encode() for key in settings.keys] if settings.keys is not None else None

    def endpoint(self, endpoint: Endpoint, surface: Surface) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                self._authenticate(request)
                body = await self._body(request)
                lane = self._lane(request)
                deadline = _deadline(request.headers.get(DEADLINE_HEADER))
                key = request.headers.get(IDEMPOTENCY_HEADER)
                if lane == "interactive":
                    result = await self.router.acall(body, lane="interactive", endpoint=endpoint)
                    assert isinstance(result, CallResult)
                    return _interactive_response(surface, result)
                handle = await run_in_threadpool(
                    lambda: self.router.call(body, lane="deferrable", deadline=deadline, key=key, endpoint=endpoint)
                )
                assert isinstance(handle, DeferredCall)
                return _json(_deferred_body(handle), 202)
            except FrontDoorError as exc:
                return error_response(surface, exc)
            except UnknownModelError as exc:
                return error_response(surface, FrontDoorError(404, exc.message, code="model_not_found", param="model"))
            except LedgerError:
                return error_response(
                    surface, FrontDoorError(503, "the call buffer is unavailable; nothing was enqueued")
                )
            except BatchPipelinesError as exc:
                return error_response(surface, FrontDoorError(400, exc.message))

        return handle

    async def lookup(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            call_id = request.path_params["call_id"]
            handle = await run_in_threadpool(self.router.get_many, [call_id])
            return _json(_deferred_body(handle[0]), 200)
        except FrontDoorError as exc:
            return error_response("openai", exc)
        except LedgerError:
            return error_response("openai", FrontDoorError(503, "the call buffer is unavailable"))
        except BatchPipelinesError as exc:
            return error_response("openai", FrontDoorError(404, exc.message, code="not_found"))

    def _authenticate(self, request: Request) -> None:
        presented = _presented_key(request.headers)
        if not presented:
            raise FrontDoorError(
                401, "no API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'", code="missing_api_key"
            )
        if self._keys is None:
            return  # loopback without configured keys: any non-empty key (said so at start)
        candidate = presented.encode()
        # Compare against every key in constant time, so timing says nothing of which keys exist.
        if not any(hmac.compare_digest(candidate, key) for key in self._keys):
            raise FrontDoorError(401, "the API key is not one this server accepts", code="invalid_api_key")

    async def _body(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            raise FrontDoorError(413, f"the request body is over {self.settings.max_body_bytes} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.settings.max_body_bytes:
                raise FrontDoorError(413, f"the request body is over {self.settings.max_body_bytes} bytes")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FrontDoorError(400, f"the request body is not valid JSON: {exc}") from None

    def _lane(self, request: Request) -> str:
        lane = request.headers.get(LANE_HEADER, self.settings.default_lane).strip().lower()
        if lane not in _LANES:
            raise FrontDoorError(400, f"X-Batch-Lane must be 'interactive' or 'deferrable', not {lane!r}")
        return lane


def _presented_key(headers: Mapping[str, str]) -> str:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return headers.get("x-api-key", "").strip()


def _deadline(raw: str | None) -> datetime | timedelta | None:
    """RFC 3339 with an offset, or seconds from now."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not seconds >= 0 or seconds == float("inf"):
            raise FrontDoorError(400, f"X-Batch-Deadline {text!r} must be a non-negative number of seconds")
        return timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FrontDoorError(
            400, f"X-Batch-Deadline {text!r} is neither an RFC 3339 time nor a number of seconds"
        ) from None
    if parsed.tzinfo is None:
        raise FrontDoorError(400, f"X-Batch-Deadline {text!r} has no UTC offset; RFC 3339 requires one")
    return parsed


def _interactive_response(surface: Surface, result: CallResult) -> Response:
    if result.status is OutcomeKind.SUCCEEDED and result.response is not None:
        return _json(result.response, 200)
    status = result.status_code if result.status_code and result.status_code >= 400 else 502
    message = result.reason or f"the provider did not answer ({result.status.value})"
    return error_response(surface, FrontDoorError(status, message))


def _deferred_body(handle: DeferredCall) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": handle.id,
        "object": "deferred_call",
        "status": handle.status,
        "deadline": handle.deadline.isoformat() if handle.deadline is not None else None,
    }
    if handle.warning:
        body["warning"] = handle.warning
    if handle.done:
        body["lane"] = handle.lane.value if handle.lane is not None else None
        body["response"] = handle.response
        body["usage"] = None if handle.usage is None else _usage(handle)
        body["cost_usd"] = None if handle.cost_usd is None else str(handle.cost_usd)
        if handle.status != OutcomeKind.SUCCEEDED.value:
            body["error"] = {"message": handle.reason, "status_code": handle.status_code}
    return body


def _usage(handle: DeferredCall) -> dict[str, int]:
    usage = handle.usage
    assert usage is not None
    return {
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def _json(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
