"""What we ask a provider to do: one request, on a lane, before a deadline."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batch_pipelines.core.errors import InvalidInputError


class Lane(str, enum.Enum):
    """Where a request runs: the half-price batch endpoint or the synchronous one."""

    BATCH = "batch"
    SYNC = "sync"


class Endpoint(str, enum.Enum):
    """The provider endpoints a request can target (one endpoint per batch)."""

    CHAT = "/v1/chat/completions"
    EMBEDDINGS = "/v1/embeddings"
    MESSAGES = "/v1/messages"


# Anthropic's rule, and the strictest of the vendors: a custom_id valid here is valid everywhere.
CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One unit of work: its id within the partition, where it goes, and what it says."""

    custom_id: str
    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    lane: Lane = Lane.BATCH
    deadline: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not CUSTOM_ID_PATTERN.match(self.custom_id):
            raise InvalidInputError(
                f"custom_id {self.custom_id!r} must match {CUSTOM_ID_PATTERN.pattern} "
                "(letters, digits, '_' and '-', 1 to 64 characters)",
                custom_id=self.custom_id,
            )
        if not self.model:
            raise InvalidInputError(f"request {self.custom_id!r} names no model", custom_id=self.custom_id)
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise InvalidInputError(
                f"request {self.custom_id!r} has a naive deadline; use a timezone-aware datetime",
                custom_id=self.custom_id,
            )
