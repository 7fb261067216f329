"""Build a ``Gateway`` from the plain configuration the resource, the router and the CLI share.

Providers come from a registry file (real vendors) or from the emulator's URL, named explicitly;
the ledger from a URL, else the SQLite file in the data folder; prices from the shipped book with an
optional override file laid over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.core.lanes import LanePolicy
from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.ledger import Ledger
from batch_pipelines.ledger.engine import default_data_dir
from batch_pipelines.providers.config import ProviderRegistry
from batch_pipelines.services.gateway import Gateway, utc_now


def registry_from(providers_file: str | None = None, emulator_url: str | None = None) -> ProviderRegistry:
    """The providers file's registry (real vendors) or the emulator's at ``emulator_url``: exactly one.

    Where the work goes is never a silent default: a deployment that forgot its providers file
    fails here, naming both choices, instead of sending its traffic to a local address.
    """
    if providers_file and emulator_url:
        raise ConfigError(
            "set providers_file (real vendors) or emulator_url (the bundled emulator), not both",
            providers_file=providers_file,
            emulator_url=emulator_url,
        )
    if providers_file:
        return ProviderRegistry.from_yaml(providers_file)
    if emulator_url:
        return ProviderRegistry.for_emulator(emulator_url)
    raise ConfigError(
        "no providers configured: set providers_file to a provider registry (real vendors) "
        "or emulator_url to the bundled emulator's URL (e.g. http://127.0.0.1:8765)"
    )


def build_gateway(
    *,
    providers_file: str | None = None,
    registry: ProviderRegistry | None = None,
    ledger_url: str | None = None,
    price_book_path: str | None = None,
    emulator_url: str | None = None,
    results_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    policy: LanePolicy = LanePolicy(),
    clock: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
) -> Gateway:
    home = default_data_dir()
    return Gateway(
        registry=registry if registry is not None else registry_from(providers_file, emulator_url),
        ledger=Ledger(ledger_url, clock=clock),  # None: a SQLite file in the data folder
        price_book=PriceBook.default(price_book_path),
        work_dir=Path(work_dir or home / "work"),
        results_dir=Path(results_dir or home / "results"),
        policy=policy,
        clock=clock,
        monotonic=monotonic,
    )
