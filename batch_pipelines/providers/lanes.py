"""Which lane classes speak each wire protocol: one plain map, protocol name -> classes.

Adding a protocol is one entry here plus its two classes: a ``SyncLane`` subclass and a
``BatchLane`` subclass (see their contracts in ``sync_lane.py`` and ``batch_lane.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batch_pipelines.core.errors import ConfigError
from batch_pipelines.providers.anthropic_batch import AnthropicBatchLane
from batch_pipelines.providers.anthropic_sync import AnthropicSyncLane
from batch_pipelines.providers.batch_lane import BatchLane
from batch_pipelines.providers.gemini_batch import GeminiBatchLane
from batch_pipelines.providers.gemini_sync import GeminiSyncLane
from batch_pipelines.providers.openai_batch import OpenAIBatchLane
from batch_pipelines.providers.openai_sync import OpenAISyncLane
from batch_pipelines.providers.sync_lane import SyncLane


@dataclass(frozen=True, slots=True)
class LaneClasses:
    """The two lanes of one wire protocol."""

    sync: type[SyncLane]
    batch: type[BatchLane]


LANES: Mapping[str, LaneClasses] = {
    "openai": LaneClasses(sync=OpenAISyncLane, batch=OpenAIBatchLane),
    "anthropic": LaneClasses(sync=AnthropicSyncLane, batch=AnthropicBatchLane),
    "gemini": LaneClasses(sync=GeminiSyncLane, batch=GeminiBatchLane),
}


def lanes_for(protocol: str, *, provider: str) -> LaneClasses:
    """The lane classes of ``protocol``; an unknown one is a ConfigError naming the provider."""
    try:
        return LANES[protocol]
    except KeyError:
        raise ConfigError(
            f"provider {provider!r} speaks {protocol!r}, which has no lanes; "
            f"known protocols: {', '.join(sorted(LANES))}",
            provider=provider,
            protocol=protocol,
        ) from None
