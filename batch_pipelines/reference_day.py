"""The reference day: one simulated day of mixed traffic through the real system, on the emulator's virtual clock.

Everything real runs: the router (interactive calls on the sync lane now; deferrable calls into
the durable buffer, flushed into batches by its thresholds), the deadline watchdog, the nightly
workloads through the gateway's submit, poll, reconcile and promote (the service functions their
sensors call), the ledger on SQLite, and both lanes over loopback HTTP to the emulator running
the ``realistic`` profile. Time is the emulator's: each tick the driver sends the calls that
arrived, runs the flush sensor and the watchdog, and every few ticks the completion sensor, then
moves the clock on. Afterwards every call is read back from the ledger into a ``CallRecord``.
"""

from __future__ import annotations

import bisect
import resource
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from batch_pipelines.core.day_oracle import OracleCall, oracle_lane
from batch_pipelines.core.day_report import CallRecord, DayFigures, RunCounters, summarise
from batch_pipelines.core.day_traffic import PlannedCall, TrafficConfig, generate
from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.core.usage import Usage
from batch_pipelines.emulator.testing import RunningEmulator, run_emulator
from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.deferred import DEFERRED_JOB
from batch_pipelines.providers.client import build_client
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.services.gateway import Gateway
from batch_pipelines.services.invoice import invoice_from_groups
from batch_pipelines.services.router import CallResult, Router

WORKLOAD_PARTITION = "day"
# The flush sensor, the watchdog and the completion sensor run every five virtual minutes (a third of
# the flush's 15-minute age threshold; the lane policy's safety margin covers the watchdog's step).
TICK_SECONDS = 300.0
COLLECT_EVERY_TICKS = 1
# After the last arrival, how long the driver waits for the last batches (36 h deadlines, 24 h windows).
TAIL_SECONDS = 48 * 3600.0


class EmulatorClock:
    """The emulator's frozen virtual clock, mirrored locally so reading it costs no HTTP call."""

    def __init__(self, emu: RunningEmulator) -> None:
        self.emu = emu
        self.now_s = emu.now()

    def advance(self, seconds: float) -> None:
        self.emu.advance(seconds)
        self.now_s = self.emu.now()

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now_s, UTC)


class RetryClock:
    """Monotonic clock and sleep for the provider clients: a Retry-After wait moves this clock, not the wall's."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass
class DayRun:
    records: list[CallRecord]
    figures: DayFigures
    ledger_total_usd: Decimal  # the ledger's exact total for the day's attempts
    interactive_total_usd: Decimal  # interactive calls answer at once and are not ledger items
    started_at: datetime
    events: list[str] = field(default_factory=list)


def simulate_day(
    config: TrafficConfig,
    work_dir: Path,
    *,
    profile: Mapping[str, Any] | str | Path = "realistic",
    echo: Callable[[str], None] = lambda line: None,
) -> DayRun:
    """Run the day in ``work_dir`` (ledger, results, emulator state) and read back every call."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    plan = generate(config)
    work_dir.mkdir(parents=True, exist_ok=True)
    with run_emulator(profile=profile, state_dir=work_dir / "emulator") as emu:
        clock = EmulatorClock(emu)
        gateway = _gateway(emu, clock, work_dir)
        with Router(gateway, sleep=lambda seconds: None) as router:
            day = _Day(router, clock, plan, echo)
            day.run()
            records = day.records(emu)
            groups = gateway.ledger.spend_between(day.start, clock.datetime() + timedelta(seconds=1))
            invoice = invoice_from_groups(day.start.date(), groups, gateway.price_book)
            counters = RunCounters(
                promotions=day.promotions,
                retries=day.retries,
                batches=sum(int(n) for n in emu.stats()["batches"].values()),
                paid_twice_usd=invoice.paid_twice_usd,
                cpu_seconds=time.process_time() - cpu_start,
                peak_rss_mb=_peak_rss_mb(),
                wall_seconds=time.perf_counter() - wall_start,
            )
    interactive = sum((r.cost for r in records if r.kind == "interactive"), Decimal(0))
    figures = summarise(records, realised_usd=invoice.cost_usd + interactive, counters=counters)
    return DayRun(records, figures, invoice.cost_usd, interactive, day.start, day.events)


def _gateway(emu: RunningEmulator, clock: EmulatorClock, work_dir: Path) -> Gateway:
    retry_clock = RetryClock()
    return Gateway(
        registry=ProviderRegistry.for_emulator(emu.base_url, api_key=emu.api_key),
        ledger=Ledger(f"sqlite:///{work_dir / 'ledger.sqlite'}", clock=clock.datetime),
        price_book=PriceBook.default(),
        work_dir=work_dir / "work",
        results_dir=work_dir / "results",
        policy=LanePolicy(),
        clock=clock.datetime,
        monotonic=retry_clock.clock,
        client_factory=lambda config: build_client(config, sleep=retry_clock.sleep, clock=retry_clock.clock),
    )


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class _Day:
    """The driver's state: what has been sent, and the counters the report needs."""

    def __init__(self, router: Router, clock: EmulatorClock, plan: list[PlannedCall], echo: Callable[[str], None]):
        self.router = router
        self.gateway = router.gateway
        self.clock = clock
        self.echo = echo
        self.start = clock.datetime()
        self.app_calls = [c for c in plan if not c.is_workload]
        self.workload_calls = [c for c in plan if c.is_workload]
        self.interactive: dict[int, tuple[float, CallResult]] = {}
        self.deferred: dict[int, str] = {}  # plan index -> deferred call id
        self.workload_requests: dict[str, list[LLMRequest]] = {}
        self.workloads_done: set[str] = set()
        self.promotions = 0
        self.retries = 0
        self.events: list[str] = []

    def elapsed(self) -> float:
        return self.clock.now_s - self.start.timestamp()

    def run(self) -> None:
        next_call = 0
        tick = 0
        workload_at = min((c.at_s for c in self.workload_calls), default=None)
        end_of_arrivals = max((c.at_s for c in self.app_calls), default=0.0)
        while True:
            now = self.elapsed()
            while next_call < len(self.app_calls) and self.app_calls[next_call].at_s <= now:
                self._send(self.app_calls[next_call])
                next_call += 1
            if workload_at is not None and now >= workload_at:
                self._submit_workloads()
                workload_at = None
            self.router.flush()
            self.promotions += self.router.watch().promoted_calls
            self._watch_workloads()
            if tick % COLLECT_EVERY_TICKS == 0:
                self.retries += self.router.collect().retried
                self._collect_workloads()
                if next_call >= len(self.app_calls) and workload_at is None and self._all_done():
                    return
            if now > end_of_arrivals + TAIL_SECONDS:
                self.events.append(f"stopped {TAIL_SECONDS / 3600:.0f} h after the last arrival with work open")
                return
            if tick % 12 == 0:
                self.echo(f"[day] {now / 3600:5.1f} h: {next_call:,} calls sent, buffer depth {self._depth()}")
            self.clock.advance(TICK_SECONDS)
            tick += 1

    def _depth(self) -> int:
        return self.router.buffer.depth()[0]

    def _all_done(self) -> bool:
        open_flushes = self.router.buffer.flushes(["claimed", "submitted"])
        return not open_flushes and self._depth() == 0 and self.workloads_done >= set(self.workload_requests)

    def _deadline(self, call: PlannedCall) -> datetime | None:
        return None if call.deadline_s is None else self.start + timedelta(seconds=call.deadline_s)

    def _send(self, call: PlannedCall) -> None:
        if call.kind == "interactive":
            answer = self.router.call(call.body, lane="interactive")
            assert isinstance(answer, CallResult)
            self.interactive[call.index] = (self.elapsed(), answer)
            return
        handle = self.router.call(call.body, deadline=self._deadline(call))
        self.deferred[call.index] = handle.id if not isinstance(handle, CallResult) else ""

    def _submit_workloads(self) -> None:
        by_job: dict[str, list[LLMRequest]] = {}
        for call in self.workload_calls:
            body = {k: v for k, v in call.body.items() if k != "model"}
            endpoint = _endpoint_of(call)
            request = LLMRequest(
                f"{call.kind}-{call.index}", endpoint, call.model, body, Lane.BATCH, self._deadline(call)
            )
            by_job.setdefault(call.kind, []).append(request)
        for job, requests in by_job.items():
            self.gateway.submit(job, WORKLOAD_PARTITION, requests)
            self.workload_requests[job] = requests
        self.echo(f"[day] nightly workloads submitted: {sum(len(r) for r in by_job.values()):,} items")

    def _rebuild(self, job: str) -> Callable[[Sequence[str]], list[LLMRequest]]:
        by_id = {r.custom_id: r for r in self.workload_requests[job]}
        return lambda ids: [by_id[i] for i in ids]

    def _watch_workloads(self) -> None:
        for job in self.workload_requests:
            if job in self.workloads_done:
                continue
            for action in self.gateway.watch_deadlines(job):
                if action.run_on_sync_now:
                    self.promotions += self.gateway.promote(job, action.partition, rebuild_requests=self._rebuild(job))

    def _collect_workloads(self) -> None:
        for job in self.workload_requests:
            if job in self.workloads_done:
                continue
            self.gateway.poll(job)
            if not self.gateway.progress(job, WORKLOAD_PARTITION).ready_for_results:
                continue
            report = self.gateway.reconcile(job, WORKLOAD_PARTITION, rebuild_requests=self._rebuild(job))
            self.retries += report.retried_on_sync + report.resubmitted
            if report.complete:
                self.workloads_done.add(job)

    # -- reading the day back ---------------------------------------------------------------

    def records(self, emu: RunningEmulator) -> list[CallRecord]:
        turnarounds = _Turnarounds(self, emu)
        book = self.gateway.price_book
        out: list[CallRecord] = []
        by_index = {c.index: c for c in self.app_calls}
        for index, (at, result) in self.interactive.items():
            call = by_index[index]
            sync, batch = _prices(book, call.model, result.usage)
            out.append(
                _record(f"int-{index}", call, at, None, at, result.status.value, "sync", result.cost_usd, sync, batch)
            )
        found = self.router.buffer.lookup([i for i in self.deferred.values() if i])
        for index, call_id in self.deferred.items():
            call = by_index[index]
            lookup = found.get(call_id)
            if lookup is None or lookup.item is None:
                out.append(
                    _record(call_id, call, call.at_s, None, None, None, None, Decimal(0), Decimal(0), Decimal(0))
                )
                continue
            item = lookup.item
            enqueued = (lookup.call.created_at - self.start).total_seconds()
            sync, batch = _prices(book, call.model, item.usage)
            answered = (item.updated_at - self.start).total_seconds()
            turnaround = turnarounds.for_call(call.model, enqueued)
            out.append(
                _record(
                    call_id, call, enqueued, turnaround, answered, item.status, item.lane.value, item.cost_usd,
                    sync, batch,
                )
            )  # fmt: skip
        for job in self.workload_requests:
            plan = {f"{c.kind}-{c.index}": c for c in self.workload_calls if c.kind == job}
            for item in self.gateway.ledger.iter_items(job, WORKLOAD_PARTITION):
                call = plan.pop(item.custom_id)
                sync, batch = _prices(book, call.model, item.usage)
                answered = (item.updated_at - self.start).total_seconds()
                turnaround = turnarounds.for_call(call.model, call.at_s)
                out.append(
                    _record(
                        item.custom_id, call, call.at_s, turnaround, answered, item.status, item.lane.value,
                        item.cost_usd, sync, batch,
                    )
                )  # fmt: skip
            for custom_id, call in plan.items():  # never recorded: lost
                out.append(
                    _record(custom_id, call, call.at_s, None, None, None, None, Decimal(0), Decimal(0), Decimal(0))
                )
        return out


def _record(
    call_id: str,
    call: PlannedCall,
    enqueued_s: float,
    turnaround_s: float | None,
    answered_s: float | None,
    status: str | None,
    lane: str | None,
    cost: Decimal,
    sync_cost: Decimal,
    batch_cost: Decimal,
) -> CallRecord:
    if lane == "batch" and answered_s is not None:
        # The batch that carried it is one the oracle could have used too (it ended by then).
        turnaround_s = min(turnaround_s or float("inf"), answered_s - enqueued_s)
    oracle = OracleCall(call.kind, enqueued_s, call.deadline_s, turnaround_s, sync_cost, batch_cost)
    return CallRecord(
        call_id=call_id,
        kind=call.kind,
        model=call.model,
        enqueued_s=enqueued_s,
        deadline_s=call.deadline_s,
        answered_s=answered_s,
        status=status,
        lane=lane,
        cost=cost,
        sync_cost=sync_cost,
        batch_cost=batch_cost,
        oracle_lane=oracle_lane(oracle).value,
    )


def _prices(book: PriceBook, model: str, usage: Usage) -> tuple[Decimal, Decimal]:
    if not (usage.input_tokens or usage.output_tokens):
        return Decimal(0), Decimal(0)
    return book.cost(model, usage, Lane.SYNC).cost_usd, book.cost(model, usage, Lane.BATCH).cost_usd


def _endpoint_of(call: PlannedCall) -> Endpoint:
    if "input" in call.body and "messages" not in call.body:
        return Endpoint.EMBEDDINGS
    return Endpoint.MESSAGES if call.model.startswith("claude") else Endpoint.CHAT


class _Turnarounds:
    """Each batch's actual turnaround as the emulator planned it (the oracle's foresight), by model and creation."""

    def __init__(self, day: _Day, emu: RunningEmulator) -> None:
        partitions: list[tuple[str, str]] = [(DEFERRED_JOB, f.flush_id) for f in day.router.buffer.flushes()]
        partitions += [(job, WORKLOAD_PARTITION) for job in day.workload_requests]
        by_model: dict[str, list[tuple[float, float | None]]] = {}
        for job, partition in partitions:
            for batch in day.gateway.ledger.batches(job, partition):
                if batch.model is None or batch.created_at is None:
                    continue
                created = (batch.created_at - day.start).total_seconds()
                by_model.setdefault(batch.model, []).append((created, _planned_turnaround(emu, batch.vendor_batch_id)))
        self._created = {m: [c for c, _ in sorted(v, key=lambda p: p[0])] for m, v in by_model.items()}
        self._turnaround = {m: [t for _, t in sorted(v, key=lambda p: p[0])] for m, v in by_model.items()}

    def for_call(self, model: str, enqueued_s: float) -> float | None:
        """The turnaround of the first batch of ``model`` created at or after the call (else the last one)."""
        created = self._created.get(model)
        if not created:
            return None
        i = min(bisect.bisect_left(created, enqueued_s), len(created) - 1)
        return self._turnaround[model][i]


def _planned_turnaround(emu: RunningEmulator, vendor_batch_id: str) -> float | None:
    """Seconds from creation to the end the emulator planned for a batch; None if it was planned to expire."""
    app = emu.app
    if app is None:
        return None
    plain = vendor_batch_id.removeprefix("batches/")
    record = (
        app.store.batches.get(vendor_batch_id)
        or app.store.anthropic_batches.get(vendor_batch_id)
        or app.gemini.records.get(plain)
        or app.gemini.records.get(vendor_batch_id)
    )
    if record is None:
        return None
    plan = record["plan"]
    if plan["expires"]:
        return None
    extra = 0.0
    if vendor_batch_id.startswith("batch_"):  # OpenAI: validating and finalizing come on top of the work
        extra = float(record["profile"]["validation_seconds"]) + float(record["profile"]["finalizing_seconds"])
    return float(plan["duration"]) + extra


def iter_rows(records: Iterable[CallRecord]) -> Iterable[dict[str, Any]]:
    for r in records:
        yield {
            "call_id": r.call_id,
            "kind": r.kind,
            "model": r.model,
            "enqueued_s": r.enqueued_s,
            "deadline_s": r.deadline_s,
            "answered_s": r.answered_s,
            "status": r.status,
            "lane": r.lane,
            "cost_usd": r.cost,
            "sync_cost_usd": r.sync_cost,
            "batch_cost_usd": r.batch_cost,
            "oracle_lane": r.oracle_lane,
            "missed": r.missed,
        }
