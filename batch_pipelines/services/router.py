"""The call-site router: one call at a time, interactive now or deferred to the half-price batch lane.

``Router.call(request, lane="interactive")`` runs on the sync lane and returns the vendor's body,
usage and cost. ``lane="deferrable"`` (the default) checks the request, writes it to the buffer
(committed before the call returns) and returns a handle; the flush sends it in a batch, the
collection records its outcome, and ``get``/``wait`` hand back the body exactly as the sync lane
would have returned it. A deferrable call whose deadline leaves no time for a batch runs on the
sync lane at once, and a deadline even the sync lane cannot meet says so in ``warning``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson

from batch_pipelines.core.call_request import (
    CallRequest,
    check_idempotency_key,
    parse_call_request,
    resolve_deadline,
)
from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.flush import FlushPolicy, WaitingGroup
from batch_pipelines.core.lanes import choose_call_lane
from batch_pipelines.core.outcomes import ItemOutcome, OutcomeKind
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.usage import Usage
from batch_pipelines.ledger.deferred import CallLookup, DeferredBuffer, NewCall
from batch_pipelines.ledger.deferred_schema import CALL_FLUSHED
from batch_pipelines.providers.sync_lane import SyncLane
from batch_pipelines.services.deferred_flush import CollectReport, DeferredFlusher, FlushReport, WatchReport
from batch_pipelines.services.gateway import Gateway

CallLane = Literal["interactive", "deferrable"]
DeadlineArg = datetime | timedelta | None

QUEUED = "queued"
SUBMITTED = "submitted"
DONE_STATUSES = frozenset(kind.value for kind in OutcomeKind)


@dataclass(frozen=True, slots=True)
class CallResult:
    """An interactive call's answer: the vendor's body (None when it failed), usage and exact cost."""

    status: OutcomeKind
    response: dict[str, Any] | None
    usage: Usage
    cost_usd: Decimal
    lane: Lane
    reason: str | None = None
    status_code: int | None = None


@dataclass(frozen=True, slots=True)
class DeferredCall:
    """A deferrable call's handle: where it stands and, once done, what it returned and cost."""

    id: str
    status: str  # queued, submitted, or an outcome kind (succeeded, failed, ...)
    deadline: datetime | None
    warning: str | None = None
    response: dict[str, Any] | None = None
    usage: Usage | None = None
    cost_usd: Decimal | None = None
    lane: Lane | None = None  # the lane that served it (the last attempt's)
    reason: str | None = None
    status_code: int | None = None
    model: str | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES


class Router:
    """Routes calls at the call site over a gateway (its providers, ledger and price book)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        flush_policy: FlushPolicy = FlushPolicy(),
        worker: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.buffer = DeferredBuffer(gateway.ledger)
        self.flusher = DeferredFlusher(gateway, self.buffer, flush_policy=flush_policy, worker=worker)
        self._sleep = sleep
        self._monotonic = monotonic

    @classmethod
    def from_config(
        cls,
        *,
        providers_file: str | None = None,
        ledger_url: str | None = None,
        price_book_path: str | None = None,
        emulator_url: str | None = None,
        results_dir: str | None = None,
        work_dir: str | None = None,
        flush_policy: FlushPolicy = FlushPolicy(),
    ) -> Router:
        """A router built from the same configuration as ``BatchGatewayResource``."""
        from batch_pipelines.services.gateway_config import build_gateway

        gateway = build_gateway(
            providers_file=providers_file,
            ledger_url=ledger_url,
            price_book_path=price_book_path,
            emulator_url=emulator_url,
            results_dir=results_dir,
            work_dir=work_dir,
        )
        return cls(gateway, flush_policy=flush_policy)

    def close(self) -> None:
        self.buffer.close()
        self.gateway.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------

    def check(self, request: Mapping[str, Any], endpoint: Endpoint | str | None = None) -> CallRequest:
        """The request, checked and routed: an unknown model or a body the vendor would refuse raises here."""
        model = request.get("model") if isinstance(request, Mapping) else None
        protocol = "openai"
        if isinstance(model, str) and model:
            protocol = self.gateway.registry.provider_for(model).protocol
        checked = parse_call_request(request, endpoint, protocol=protocol)
        self.gateway.price_book.price(checked.model)  # an unpriced model is refused before any spend
        return checked

    def call(
        self,
        request: Mapping[str, Any],
        *,
        lane: CallLane = "deferrable",
        deadline: DeadlineArg = None,
        key: str | None = None,
        endpoint: Endpoint | str | None = None,
    ) -> CallResult | DeferredCall:
        """Interactive: the answer now. Deferrable: a handle, the call durably buffered."""
        checked = self.check(request, endpoint)
        if lane == "interactive":
            outcome = self._sync_lane(checked).call(_sync_request(checked))
            return self._result(checked, outcome)
        if lane != "deferrable":
            raise InvalidInputError(f"lane must be 'interactive' or 'deferrable', not {lane!r}")
        return self.defer(checked, deadline=deadline, key=key)

    async def acall(
        self,
        request: Mapping[str, Any],
        *,
        lane: CallLane = "deferrable",
        deadline: DeadlineArg = None,
        key: str | None = None,
        endpoint: Endpoint | str | None = None,
    ) -> CallResult | DeferredCall:
        """``call`` for asyncio code: the interactive call is awaited, not blocked on."""
        checked = self.check(request, endpoint)
        if lane == "interactive":
            outcome = await self._sync_lane(checked).acall(_sync_request(checked))
            return self._result(checked, outcome)
        if lane != "deferrable":
            raise InvalidInputError(f"lane must be 'interactive' or 'deferrable', not {lane!r}")
        return self.defer(checked, deadline=deadline, key=key)

    def defer(self, checked: CallRequest, *, deadline: DeadlineArg = None, key: str | None = None) -> DeferredCall:
        """Buffer a checked call; one whose deadline leaves no time for a batch runs on sync at once."""
        now = self.flusher.now()
        due = resolve_deadline(deadline, now)
        choice = choose_call_lane(deadline=due, now=now, group_size=1, policy=self.gateway.policy)
        provider = self.gateway.registry.provider_for(checked.model).name
        row, _new = self.buffer.enqueue(
            NewCall(
                provider=provider,
                model=checked.model,
                endpoint=checked.endpoint.value,
                body=orjson.dumps(checked.body).decode(),
                deadline=due,
                idempotency_key=check_idempotency_key(key),
                warning=choice.warning,
            )
        )
        if choice.lane is Lane.SYNC and row.state != CALL_FLUSHED:
            group = WaitingGroup(provider, checked.model, checked.endpoint.value, 1, row.created_at, due)
            flushes = self.flusher.flush_calls(group, [row.call_id])
            self.flusher.collect([f.flush_id for f in flushes])  # only this call's: the caller is waiting
            return self.get(row.call_id)
        if not _new:
            return self.get(row.call_id)
        return DeferredCall(id=row.call_id, status=QUEUED, deadline=row.deadline, warning=row.warning)

    # -- lookups ----------------------------------------------------------------------------

    def get(self, call_id: str) -> DeferredCall:
        found = self.get_many([call_id])
        return found[0]

    def get_many(self, call_ids: Sequence[str]) -> list[DeferredCall]:
        """Handles in the order asked; an id the buffer never saw raises InvalidInputError."""
        found = self.buffer.lookup(call_ids)
        unknown = [i for i in call_ids if i not in found]
        if unknown:
            raise InvalidInputError(f"no deferred call {unknown[0]!r}", call_ids=unknown[:10])
        return [_handle(found[i]) for i in call_ids]

    def wait(self, call_id: str, *, timeout: float = 60.0, interval: float = 1.0) -> DeferredCall:
        """Poll ``get`` until the call is done; TimeoutError after ``timeout`` seconds."""
        started = self._monotonic()
        while True:
            handle = self.get(call_id)
            if handle.done:
                return handle
            if self._monotonic() - started >= timeout:
                raise TimeoutError(f"deferred call {call_id} is still {handle.status} after {timeout} s")
            self._sleep(interval)

    # -- the buffer's work ------------------------------------------------------------------

    def flush(self, *, everything: bool = False) -> FlushReport:
        return self.flusher.flush(everything=everything)

    def collect(self) -> CollectReport:
        return self.flusher.collect()

    def watch(self) -> WatchReport:
        return self.flusher.watch()

    # -- internals --------------------------------------------------------------------------

    def _sync_lane(self, checked: CallRequest) -> SyncLane:
        """The sync lane of the provider serving the call's model (interactive calls never batch)."""
        return self.gateway.client_for_model(checked.model).sync

    def _result(self, checked: CallRequest, outcome: ItemOutcome) -> CallResult:
        cost = Decimal(0)
        if outcome.usage.input_tokens or outcome.usage.output_tokens:
            cost = self.gateway.price_book.cost(outcome.model or checked.model, outcome.usage, Lane.SYNC).cost_usd
        return CallResult(
            status=outcome.kind,
            response=outcome.response if outcome.kind is OutcomeKind.SUCCEEDED else None,
            usage=outcome.usage,
            cost_usd=cost,
            lane=Lane.SYNC,
            reason=outcome.reason,
            status_code=outcome.status_code,
        )


def _sync_request(checked: CallRequest) -> LLMRequest:
    return LLMRequest(
        custom_id=f"int_{uuid.uuid4().hex}",
        endpoint=checked.endpoint,
        model=checked.model,
        body=checked.body,
        lane=Lane.SYNC,
    )


def _handle(found: CallLookup) -> DeferredCall:
    call, item = found.call, found.item
    if item is None:
        status = SUBMITTED if call.state == CALL_FLUSHED else QUEUED
        return DeferredCall(id=call.call_id, status=status, deadline=call.deadline, warning=call.warning)
    status = item.status.value if item.status in DONE_STATUSES else SUBMITTED
    return DeferredCall(
        id=call.call_id,
        status=status,
        deadline=call.deadline,
        warning=call.warning,
        response=json.loads(found.response_body) if found.response_body else None,
        usage=item.usage if status in DONE_STATUSES else None,
        cost_usd=item.cost_usd if status in DONE_STATUSES else None,
        lane=item.lane,
        reason=item.reason,
        status_code=item.status_code,
        model=call.model,
    )
