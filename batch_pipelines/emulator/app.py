"""The emulator's HTTP surface: one Starlette app serving both vendors' routes.

Every vendor route goes through ``_vendor_route``: credential check, injected route faults,
and translation of any refusal into the vendor's error shape. Work that touches state runs in
a worker thread under the store lock, so the event loop keeps answering health checks while a
large batch is processed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.emulator import catalogue
from batch_pipelines.emulator.accounting import PromptCache
from batch_pipelines.emulator.anthropic_batches import MAX_BODY_BYTES as ANTHROPIC_MAX_BODY
from batch_pipelines.emulator.anthropic_batches import AnthropicBatches, rfc3339
from batch_pipelines.emulator.clock import VirtualClock, resume_virtual_time
from batch_pipelines.emulator.downloads import file_response
from batch_pipelines.emulator.errors import ApiError, error_response, surface_of
from batch_pipelines.emulator.faults import FaultState, chance, fingerprint
from batch_pipelines.emulator.gemini_batches import GeminiBatches
from batch_pipelines.emulator.gemini_files import GeminiFiles
from batch_pipelines.emulator.gemini_routes import gemini_routes
from batch_pipelines.emulator.openai_batches import OpenAIBatches
from batch_pipelines.emulator.openai_files import MAX_UPLOAD_BYTES, OpenAIFiles
from batch_pipelines.emulator.profile import Profile, load_profile
from batch_pipelines.emulator.responses import Responder, UsageTotals
from batch_pipelines.emulator.state import Store

log = logging.getLogger("batch_pipelines.emulator")

MAX_JSON_BODY = 32 * 1024 * 1024
# One jump of the virtual clock: ten years is far beyond any batch window, and keeps every
# timestamp the emulator derives from the clock inside what datetime can represent.
MAX_CLOCK_ADVANCE_SECONDS = 10 * 366 * 86_400
_MULTIPART_SLACK = 1024 * 1024
_MODELS_CREATED = 1_767_225_600  # 2026-01-01: a fixed, plausible creation stamp


class Emulator:
    """Everything one emulator instance holds: state, clock, profile, fault counters."""

    def __init__(
        self,
        state_dir: Path,
        *,
        profile: Mapping[str, Any] | str | Path | None = None,
        time_scale: float = 1.0,
        api_key: str | None = None,
    ) -> None:
        self.store = Store(state_dir)
        saved = self.store.meta.get("clock")
        start = resume_virtual_time(saved["virtual"], saved["wall"], time.time(), time_scale) if saved else time.time()
        self.clock = VirtualClock(start, time_scale)
        self.store.save_clock(start)
        self._profile = load_profile(profile)
        self.api_key = api_key or None
        self.faults = FaultState()
        self.responder = Responder(PromptCache())
        self.files = OpenAIFiles(self.store, self.clock)
        self.openai = OpenAIBatches(self.store, self.clock, self.files, self.responder, lambda: self._profile)
        self.anthropic = AnthropicBatches(self.store, self.clock, self.responder, lambda: self._profile)
        self.gemini_files = GeminiFiles(self.store, self.clock)
        self.gemini = GeminiBatches(self.store, self.clock, self.gemini_files, self.responder, lambda: self._profile)
        self.sync_requests = 0
        self.sync_usage = UsageTotals()

    @property
    def profile(self) -> Profile:
        return self._profile

    def set_profile(self, raw: Mapping[str, Any]) -> Profile:
        self._profile = Profile.from_mapping(raw)
        self.faults = FaultState()  # a new profile starts its bursts and drops afresh
        return self._profile

    def advance(self, seconds: float) -> float:
        now = self.clock.advance(seconds)
        self.store.save_clock(now)
        return now

    def authorize(self, request: Request) -> None:
        supplied = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if not supplied and authorization[:7].lower() == "bearer ":
            supplied = authorization[7:].strip()
        if not supplied:
            raise ApiError(
                401,
                "No API key provided: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                code="invalid_api_key",
            )
        if self.api_key is not None and not self.key_matches(supplied):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def key_matches(self, supplied: str) -> bool:
        return self.api_key is None or hmac.compare_digest(supplied.encode(), self.api_key.encode())

    def count_sync(self, usage: UsageTotals) -> None:
        self.sync_requests += 1
        self.sync_usage.add(usage)

    def download(self, request: Request, path: Path, key: str, media_type: str) -> Response:
        """A file download, cut part-way once per file when the profile says so."""
        range_header = request.headers.get("range")
        drop_after = None
        limit = self._profile.download_drop_after_bytes
        if limit and not range_header and self.faults.claim_drop(key):
            drop_after = limit
        return file_response(path, range_header, drop_after=drop_after, media_type=media_type)

    def route_fault(self, route: str) -> None:
        rate = self._profile.route_5xx_rate
        if rate and chance(self._profile.seed, "route", route, self.faults.next_route_call(route)) < rate:
            raise ApiError(
                500, "The server had an error while processing your request (injected).", code="server_error"
            )

    async def sync_faults(self, key: str) -> None:
        profile = self._profile
        attempt = self.faults.next_attempt(key)
        # A burst refuses every request's first attempts; the rate refuses a seeded share of
        # attempts (the occasional 429 a busy provider gives), so a retry usually gets through.
        if attempt < profile.sync_429_burst or (
            profile.sync_429_rate and chance(profile.seed, "sync429", key, attempt) < profile.sync_429_rate
        ):
            wait = profile.retry_after_seconds
            raise ApiError(
                429,
                "Rate limit reached for requests (injected by the emulator's fault profile).",
                code="rate_limit_exceeded",
                headers={
                    "retry-after": f"{wait:g}",
                    "retry-after-ms": str(int(math.ceil(wait * 1000))),
                    # A burst is a momentary refusal, not a low quota: a limit this high keeps
                    # clients that learn limits from these headers from throttling for good.
                    "x-ratelimit-limit-requests": "100000",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": f"{wait:g}s",
                },
            )
        if profile.sync_5xx_rate and chance(profile.seed, "sync5xx", key, attempt) < profile.sync_5xx_rate:
            raise ApiError(
                500, "The server had an error while processing your request (injected).", code="server_error"
            )
        if profile.slow_response_seconds:
            await asyncio.sleep(profile.slow_response_seconds)

    def stats(self) -> dict[str, Any]:
        """Counts and usage, with every batch first brought up to the clock."""
        with self.store.lock:
            for record in list(self.store.batches.values()):
                self.openai.refresh(record)
            for record in list(self.store.anthropic_batches.values()):
                self.anthropic.refresh(record)
            for record in list(self.gemini.records.values()):
                self.gemini.refresh(record)
            usage = {bid: dict(r["usage"]) for bid, r in self.store.batches.items()}
            usage.update({bid: dict(r["usage"]) for bid, r in self.store.anthropic_batches.items()})
            usage.update({bid: dict(r["usage"]) for bid, r in self.gemini.records.items()})
            return {
                "batches_created": dict(self.store.meta["batches_created"]),
                "batches": {
                    "openai": len(self.store.batches),
                    "anthropic": len(self.store.anthropic_batches),
                    "gemini": len(self.gemini.records),
                },
                "files": len(self.store.files),
                "usage": usage,
                "enqueued_tokens": {**self.openai.enqueued_tokens(), **self.gemini.enqueued_tokens()},
                "sync_requests": self.sync_requests,
                "sync_usage": self.sync_usage.to_dict(),
                "now": self.clock.now(),
            }


# -- helpers ------------------------------------------------------------------------------


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
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


def _parse_json(raw: bytes) -> Any:
    if not raw:
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
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


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


Handler = Callable[[Request], Awaitable[Response]]


def _vendor_route(
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


# -- the app ------------------------------------------------------------------------------


def create_app(emulator: Emulator) -> Starlette:
    e = emulator

    async def health(request: Request) -> Response:
        return _json({"status": "ok", "now": e.clock.now(), "time_scale": e.clock.time_scale})

    async def clock(request: Request) -> Response:
        return _json({"now": e.clock.now(), "time_scale": e.clock.time_scale})

    async def advance(request: Request) -> Response:
        payload = _parse_json(await _read_body(request, 4096))
        seconds = payload.get("seconds") if isinstance(payload, dict) else None
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or seconds < 0
            or not math.isfinite(seconds)
            or seconds > MAX_CLOCK_ADVANCE_SECONDS
        ):
            raise ApiError(400, f'Send {{"seconds": N}} with 0 <= N <= {MAX_CLOCK_ADVANCE_SECONDS}.', param="seconds")
        return _json({"now": e.advance(float(seconds))})

    async def profile(request: Request) -> Response:
        if request.method == "PUT":
            payload = _parse_json(await _read_body(request, 1024 * 1024))
            if not isinstance(payload, dict):
                raise ApiError(400, "The profile must be a JSON object.")
            try:
                e.set_profile(payload)
            except ConfigError as exc:
                raise ApiError(400, exc.message) from None
        return _json(e.profile.to_dict())

    async def stats(request: Request) -> Response:
        return _json(await run_in_threadpool(e.stats))

    def control(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return error_response("openai", exc)

        return wrapped

    # -- sync lane --

    async def chat_completions(request: Request) -> Response:
        raw = await _read_body(request, MAX_JSON_BODY)
        body = _parse_json(raw)
        key = fingerprint(raw)
        await e.sync_faults(key)
        now = int(e.clock.now())
        response, usage = await run_in_threadpool(
            e.responder.chat_completion,
            body,
            profile=e.profile,
            key=key,
            completion_id=f"chatcmpl-{key}{e.sync_requests:x}",
            created=now,
        )
        e.sync_requests += 1
        e.sync_usage.add(usage)
        return _json(response)

    async def embeddings(request: Request) -> Response:
        raw = await _read_body(request, MAX_JSON_BODY)
        body = _parse_json(raw)
        await e.sync_faults(fingerprint(raw))
        response, usage = await run_in_threadpool(e.responder.embeddings, body)
        e.sync_requests += 1
        e.sync_usage.add(usage)
        return _json(response)

    async def messages(request: Request) -> Response:
        raw = await _read_body(request, MAX_JSON_BODY)
        body = _parse_json(raw)
        key = fingerprint(raw)
        await e.sync_faults(key)
        response, usage = await run_in_threadpool(
            e.responder.message,
            body,
            profile=e.profile,
            key=key,
            message_id=f"msg_{key}{e.sync_requests:x}",
            service_tier="standard",
        )
        e.sync_requests += 1
        e.sync_usage.add(usage)
        return _json(response)

    async def models(request: Request) -> Response:
        data: list[dict[str, Any]]
        if surface_of(request.url.path, request.headers) == "anthropic":
            data = [
                {
                    "type": "model",
                    "id": m.id,
                    "display_name": m.display_name,
                    "created_at": rfc3339(_MODELS_CREATED),
                    "lifecycle": "active",
                }
                for m in catalogue.ANTHROPIC_MODELS
            ]
            return _json({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})
        data = [
            {"id": m.id, "object": "model", "created": _MODELS_CREATED, "owned_by": m.owned_by}
            for m in catalogue.OPENAI_SURFACE_MODELS
        ]
        return _json({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for m in catalogue.OPENAI_SURFACE_MODELS:
            if m.id == model_id:
                return _json({"id": m.id, "object": "model", "created": _MODELS_CREATED, "owned_by": m.owned_by})
        raise ApiError(
            404, f"The model '{model_id[:100]}' does not exist or you do not have access to it.", code="model_not_found"
        )

    # -- OpenAI files --

    async def upload_file(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + _MULTIPART_SLACK:
            raise ApiError(
                413,
                f"File is larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit.",
                param="file",
                code="file_too_large",
            )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "Uploads must be multipart/form-data with 'file' and 'purpose' fields.", param="file")
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            purpose = form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
                )
            if not isinstance(purpose, str) or not purpose:
                raise ApiError(
                    400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
                )
            filename = (upload.filename or "upload.jsonl")[:255]
            record = await run_in_threadpool(e.files.upload, upload.file, filename=filename, purpose=purpose)
        return _json(record)

    async def list_files(request: Request) -> Response:
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "Invalid 'order': use 'asc' or 'desc'.", param="order", code="invalid_value")
        limit = _int_param(request, "limit", 10_000, 1, 10_000)
        result = await run_in_threadpool(
            e.files.list,
            purpose=request.query_params.get("purpose"),
            after=request.query_params.get("after"),
            limit=limit,
            order=order,
        )
        return _json(result)

    async def get_file(request: Request) -> Response:
        return _json(e.files.record(request.path_params["file_id"]))

    async def delete_file(request: Request) -> Response:
        return _json(await run_in_threadpool(e.files.delete, request.path_params["file_id"]))

    async def file_content(request: Request) -> Response:
        file_id = request.path_params["file_id"]
        path = e.files.data_path(file_id)
        return _download(request, path, f"file:{file_id}", "application/octet-stream")

    _download = e.download

    # -- OpenAI batches --

    async def create_batch(request: Request) -> Response:
        payload = _parse_json(await _read_body(request, MAX_JSON_BODY))
        return _json(await run_in_threadpool(e.openai.create, payload))

    async def list_batches(request: Request) -> Response:
        limit = _int_param(request, "limit", 20, 1, 100)
        return _json(await run_in_threadpool(e.openai.list, after=request.query_params.get("after"), limit=limit))

    async def get_batch(request: Request) -> Response:
        return _json(await run_in_threadpool(e.openai.retrieve, request.path_params["batch_id"]))

    async def cancel_batch(request: Request) -> Response:
        return _json(await run_in_threadpool(e.openai.cancel, request.path_params["batch_id"]))

    # -- Anthropic message batches --

    async def create_message_batch(request: Request) -> Response:
        payload = _parse_json(await _read_body(request, ANTHROPIC_MAX_BODY))
        record = await run_in_threadpool(e.anthropic.create, payload)
        return _json(e.anthropic.render(record, _base_url(request)))

    async def list_message_batches(request: Request) -> Response:
        limit = _int_param(request, "limit", 20, 1, 1000)
        page, has_more = await run_in_threadpool(
            e.anthropic.list,
            after_id=request.query_params.get("after_id"),
            before_id=request.query_params.get("before_id"),
            limit=limit,
        )
        base = _base_url(request)
        data = [e.anthropic.render(r, base) for r in page]
        return _json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def get_message_batch(request: Request) -> Response:
        record = await run_in_threadpool(e.anthropic.retrieve, request.path_params["batch_id"])
        return _json(e.anthropic.render(record, _base_url(request)))

    async def cancel_message_batch(request: Request) -> Response:
        record = await run_in_threadpool(e.anthropic.cancel, request.path_params["batch_id"])
        return _json(e.anthropic.render(record, _base_url(request)))

    async def delete_message_batch(request: Request) -> Response:
        return _json(await run_in_threadpool(e.anthropic.delete, request.path_params["batch_id"]))

    async def message_batch_results(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        path = await run_in_threadpool(e.anthropic.results_path, batch_id)
        return _download(request, path, f"results:{batch_id}", "application/binary")

    routes = [
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/clock", clock, methods=["GET"]),
        Route("/_emulator/clock/advance", control(advance), methods=["POST"]),
        Route("/_emulator/profile", control(profile), methods=["GET", "PUT"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
    ]
    vendor = [
        ("/v1/chat/completions", chat_completions, ["POST"], None),
        ("/v1/embeddings", embeddings, ["POST"], None),
        ("/v1/models", models, ["GET"], None),
        ("/v1/models/{model_id}", model, ["GET"], None),
        ("/v1/files", upload_file, ["POST"], "files.create"),
        ("/v1/files", list_files, ["GET"], "files.list"),
        ("/v1/files/{file_id}", get_file, ["GET"], "files.retrieve"),
        ("/v1/files/{file_id}", delete_file, ["DELETE"], "files.delete"),
        ("/v1/files/{file_id}/content", file_content, ["GET"], "files.content"),
        ("/v1/batches", create_batch, ["POST"], "batches.create"),
        ("/v1/batches", list_batches, ["GET"], "batches.list"),
        ("/v1/batches/{batch_id}", get_batch, ["GET"], "batches.retrieve"),
        ("/v1/batches/{batch_id}/cancel", cancel_batch, ["POST"], "batches.cancel"),
        ("/v1/messages", messages, ["POST"], None),
        ("/v1/messages/batches", create_message_batch, ["POST"], "message_batches.create"),
        ("/v1/messages/batches", list_message_batches, ["GET"], "message_batches.list"),
        ("/v1/messages/batches/{batch_id}", get_message_batch, ["GET"], "message_batches.retrieve"),
        ("/v1/messages/batches/{batch_id}", delete_message_batch, ["DELETE"], "message_batches.delete"),
        ("/v1/messages/batches/{batch_id}/cancel", cancel_message_batch, ["POST"], "message_batches.cancel"),
        ("/v1/messages/batches/{batch_id}/results", message_batch_results, ["GET"], "message_batches.results"),
    ]
    routes += [_vendor_route(e, path, handler, methods, fault) for path, handler, methods, fault in vendor]
    routes += gemini_routes(e)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = (
            f"Unknown request URL: {request.method} {request.url.path[:200]}."
            if status in (404, 405)
            else "The server had an error while processing your request."
        )
        return error_response(surface_of(request.url.path, request.headers), ApiError(status, message))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(
            surface_of(request.url.path, request.headers),
            ApiError(500, "The server had an error while processing your request."),
        )

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.emulator = e
    return app
