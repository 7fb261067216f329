"""The gateway resource: configuration in, a ready ``Gateway`` client out.

Like dagster-fivetran's workspace/client split, the resource only holds configuration; the
client (``services.gateway.Gateway``) knows nothing of Dagster. It is built once per run or
sensor tick in ``setup_for_execution`` and closed in teardown.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.flush import FlushPolicy
from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.dagster_layer.errors import failure_for
from batch_pipelines.services.gateway import Gateway
from batch_pipelines.services.gateway_config import build_gateway, registry_from
from batch_pipelines.services.router import Router


class LanePolicyConfig(dg.Config):
    """Run config for ``core.lanes.LanePolicy``: how hard to try an item, and how the lanes are weighed.

    Not to be confused with ``providers.retry.RetryPolicy``, which retries one HTTP call.
    """

    max_attempts: int = Field(default=3, ge=1, description="Attempts per item in all, the first included.")
    max_invalid_output_attempts: int = Field(
        default=2, ge=1, description="Attempts for an item whose answers keep breaking the output contract."
    )
    sync_remainder_threshold: int = Field(
        default=100,
        ge=0,
        description="A retry remainder this small goes to the sync lane at once instead of a new batch.",
    )
    sync_items_per_second: float = Field(
        default=5.0, gt=0, description="Sync-lane throughput the deadline watchdog assumes when it plans promotions."
    )
    safety_margin_minutes: float = Field(default=30.0, ge=0, description="Slack kept before every deadline.")
    batch_window_hours: float = Field(
        default=24.0, gt=0, description="The longest a batch may take (the vendor's window)."
    )

    def lane_policy(self) -> LanePolicy:
        return LanePolicy(
            max_attempts=self.max_attempts,
            max_invalid_output_attempts=self.max_invalid_output_attempts,
            sync_remainder_threshold=self.sync_remainder_threshold,
            sync_items_per_second=self.sync_items_per_second,
            safety_margin=timedelta(minutes=self.safety_margin_minutes),
            batch_window=timedelta(hours=self.batch_window_hours),
        )


class BatchGatewayResource(dg.ConfigurableResource):  # type: ignore[type-arg]  # Dagster's documented bare form
    """Routes LLM work to providers' batch and sync lanes and keeps the ledger."""

    providers_file: str | None = Field(
        default=None,
        description="YAML provider registry for real vendors (models -> providers, base URLs, caps, rate limits). "
        "Each provider's key is read from the environment variable named by its api_key_env "
        "(default: the provider's name in capitals + _API_KEY, e.g. OPENAI_API_KEY). "
        "Set this or emulator_url, not both.",
    )
    emulator_url: str | None = Field(
        default=None,
        description="Base URL of the bundled emulator (e.g. http://127.0.0.1:8765): every model is served by it, "
        "no key needed. Set this or providers_file, not both.",
    )
    ledger_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the ledger: sqlite:///path or postgresql+psycopg://... "
        "Default: a SQLite file under $DAGSTER_HOME/batch_pipelines_data/.",
    )
    results_dir: str | None = Field(
        default=None,
        description="Where result tables are written as Parquet (default: $DAGSTER_HOME/batch_pipelines_data/results).",
    )
    work_dir: str | None = Field(
        default=None,
        description="Scratch space for shards and downloads (default: $DAGSTER_HOME/batch_pipelines_data/work).",
    )
    price_book_path: str | None = Field(
        default=None, description="YAML price book laid over the shipped one, model by model."
    )
    lane_policy: LanePolicyConfig = Field(
        default_factory=LanePolicyConfig, description="Per-item attempts and how the batch and sync lanes are weighed."
    )

    _gateway: Gateway | None = PrivateAttr(default=None)

    def build_gateway(self) -> Gateway:
        return build_gateway(
            registry=registry_from(self.providers_file, self.emulator_url),
            ledger_url=self.ledger_url,
            price_book_path=self.price_book_path,
            results_dir=self.results_dir,
            work_dir=self.work_dir,
            policy=self.lane_policy.lane_policy(),
        )

    def build_router(self, flush_policy: FlushPolicy = FlushPolicy()) -> Router:
        """A call-site router over this resource's providers, ledger and price book (see ``Router``)."""
        return Router(self.gateway, flush_policy=flush_policy)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        try:
            self._gateway = self.build_gateway()
        except BatchPipelinesError as exc:
            raise failure_for(exc) from None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None

    def results_path(self, job: str, partition: str) -> Path:
        """Where the results asset of ``job`` wrote ``partition``'s table."""
        return self.gateway.results_path(job, partition)

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:  # used outside a run (e.g. a script): build lazily
            self._gateway = self.build_gateway()
        return self._gateway
