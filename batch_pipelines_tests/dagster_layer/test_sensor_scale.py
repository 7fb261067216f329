"""A thousand open batches: one sensor tick polls them through list pages, not one call each."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd

from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.dagster_layer.factory import batch_workload
from batch_pipelines.dagster_layer.resources import BatchGatewayResource
from batch_pipelines.dagster_layer.workload import BatchWorkload
from batch_pipelines.ledger import Ledger
from batch_pipelines.providers.client import build_client
from batch_pipelines.providers.config import BatchCaps, ProviderRegistry
from batch_pipelines.services.gateway import Gateway
from batch_pipelines_tests.dagster_layer.flow import tick

BATCHES = 1000
DAY = "2026-11-26"


class CountingTransport(httpx.BaseTransport):
    """Real loopback HTTP, with a count of calls per (method, route)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.calls: Counter[tuple[str, str]] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        route = "/".join(p if not p.startswith(("batch_", "file-")) else "{id}" for p in parts)
        self.calls[(request.method, route)] += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class ScaleGatewayResource(BatchGatewayResource):
    """The gateway resource with one shard per request and counted HTTP calls."""

    def build_gateway(self) -> Gateway:
        registry = ProviderRegistry.for_emulator(self.emulator_url, caps=BatchCaps(max_requests=1))
        transport = COUNTER
        return Gateway(
            registry=registry,
            ledger=Ledger(self.ledger_url),
            price_book=PriceBook.default(),
            work_dir=Path(self.work_dir),
            results_dir=Path(self.results_dir),
            policy=LanePolicy(),
            client_factory=lambda config: build_client(config, transport=transport),
        )


COUNTER = CountingTransport()


def test_a_thousand_open_batches_poll_in_list_pages(emu, instance, tmp_path):
    """1,000 open batches: one tick makes ~one list call per 100 batches, none per batch, and observes the partition."""
    daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")

    @dg.asset(name="many_rows", partitions_def=daily)
    def rows() -> pd.DataFrame:
        return pd.DataFrame(
            {"id": [f"r{i:04d}" for i in range(BATCHES)], "text": [f"ticket {i}" for i in range(BATCHES)]}
        )

    workload = BatchWorkload(
        name="many",
        upstream=rows,
        partitions_def=daily,
        model="gpt-5.4-mini",
        build_request=lambda row: {"max_completion_tokens": 3, "messages": [{"role": "user", "content": row["text"]}]},
        parse_response=lambda response: {},
        required_columns=("text",),
    )
    wdefs = batch_workload(workload)
    resource = ScaleGatewayResource(
        emulator_url=emu.base_url,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        results_dir=str(tmp_path / "results"),
        work_dir=str(tmp_path / "work"),
    )
    defs = dg.Definitions(assets=[rows, *wdefs.assets], sensors=[wdefs.sensor], resources={"batch_gateway": resource})
    submitted = dg.materialize(
        [rows, *wdefs.assets],
        selection=[rows.key, workload.submit_key],
        partition_key=DAY,
        instance=instance,
        resources={"batch_gateway": resource},
    )
    assert submitted.success
    assert sum(emu.stats()["batches_created"].values()) == BATCHES

    COUNTER.calls.clear()
    result = tick(defs, wdefs.sensor, instance)
    list_calls = COUNTER.calls[("GET", "/v1/batches")]
    single_gets = COUNTER.calls[("GET", "/v1/batches/{id}")]
    assert single_gets == 0
    assert BATCHES // 100 <= list_calls <= BATCHES // 100 + 2
    (observation,) = result.asset_events
    summary = observation.metadata["batch_status"].value  # e.g. "1000 validating"
    assert sum(int(part.split()[0]) for part in summary.split(", ")) == BATCHES
    assert "completed" not in summary
    assert result.run_requests == []

    emu.advance(6 * 3600)
    COUNTER.calls.clear()
    result = tick(defs, wdefs.sensor, instance)
    assert COUNTER.calls[("GET", "/v1/batches/{id}")] == 0
    (request,) = result.run_requests
    assert request.partition_key == DAY
    assert result.asset_events[0].metadata["batch_status"].value == f"{BATCHES} completed"
