"""The emulator's HTTP surface: the ``Emulator`` state and one Starlette app serving every vendor's routes.

The routes live per protocol (``openai_routes``, ``anthropic_routes``, ``gemini_routes``); this
module holds the state they share and the ``/_emulator`` control routes. Every vendor route goes
through ``route_helpers.vendor_route``: credential check, injected route faults,
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.emulator.accounting import PromptCache
from batch_pipelines.emulator.anthropic_batches import AnthropicBatches
from batch_pipelines.emulator.anthropic_routes import anthropic_routes
from batch_pipelines.emulator.clock import VirtualClock, resume_virtual_time
from batch_pipelines.emulator.downloads import file_response
from batch_pipelines.emulator.errors import ApiError, error_response, surface_of
from batch_pipelines.emulator.faults import FaultState, chance
from batch_pipelines.emulator.gemini_batches import GeminiBatches
from batch_pipelines.emulator.gemini_files import GeminiFiles
from batch_pipelines.emulator.gemini_routes import gemini_routes
from batch_pipelines.emulator.openai_batches import OpenAIBatches
from batch_pipelines.emulator.openai_files import OpenAIFiles
from batch_pipelines.emulator.openai_routes import openai_routes
from batch_pipelines.emulator.profile import Profile, load_profile
from batch_pipelines.emulator.responses import Responder, UsageTotals
from batch_pipelines.emulator.route_helpers import Handler, json_response, parse_json, read_body
from batch_pipelines.emulator.state import Store

log = logging.getLogger("batch_pipelines.emulator")

# One jump of the virtual clock: ten years is far beyond any batch window, and keeps every
# timestamp the emulator derives from the clock inside what datetime can represent.
MAX_CLOCK_ADVANCE_SECONDS = 10 * 366 * 86_400


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


# -- the app ------------------------------------------------------------------------------


def create_app(emulator: Emulator) -> Starlette:
    e = emulator

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "now": e.clock.now(), "time_scale": e.clock.time_scale})

    async def clock(request: Request) -> Response:
        return json_response({"now": e.clock.now(), "time_scale": e.clock.time_scale})

    async def advance(request: Request) -> Response:
        payload = parse_json(await read_body(request, 4096))
        seconds = payload.get("seconds") if isinstance(payload, dict) else None
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or seconds < 0
            or not math.isfinite(seconds)
            or seconds > MAX_CLOCK_ADVANCE_SECONDS
        ):
            raise ApiError(400, f'Send {{"seconds": N}} with 0 <= N <= {MAX_CLOCK_ADVANCE_SECONDS}.', param="seconds")
        return json_response({"now": e.advance(float(seconds))})

    async def profile(request: Request) -> Response:
        if request.method == "PUT":
            payload = parse_json(await read_body(request, 1024 * 1024))
            if not isinstance(payload, dict):
                raise ApiError(400, "The profile must be a JSON object.")
            try:
                e.set_profile(payload)
            except ConfigError as exc:
                raise ApiError(400, exc.message) from None
        return json_response(e.profile.to_dict())

    async def stats(request: Request) -> Response:
        return json_response(await run_in_threadpool(e.stats))

    def control(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return error_response("openai", exc)

        return wrapped

    routes = [
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/clock", clock, methods=["GET"]),
        Route("/_emulator/clock/advance", control(advance), methods=["POST"]),
        Route("/_emulator/profile", control(profile), methods=["GET", "PUT"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
    ]
    routes += openai_routes(e)
    routes += anthropic_routes(e)
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
