"""Adapters to LLM providers: the only code that speaks HTTP to a vendor.

config      ProviderRegistry / ProviderConfig: which provider serves a model, caps, limits
http        httpx clients with the protocol's auth headers; the transport seam
retry       RetryPolicy, parse_retry_after, send_with_retry / asend_with_retry
ratelimit   per provider+model request/token buckets that obey the vendor's hints
sync_lane   SyncLane, the sync lane contract: one request in, one ItemOutcome out (+ run_many)
batch_lane  BatchLane, the batch lane contract (optional capabilities have defaults)
openai_sync, anthropic_sync   the sync lane per wire protocol, and their usage readers
openai_batch, anthropic_batch the batch lane per wire protocol
lanes       LANES: protocol name -> its lane classes (adding a protocol is one entry)
client      ProviderClient (sync + batch lanes of one provider), build_client
"""

from batch_pipelines.providers.anthropic_sync import AnthropicSyncLane, anthropic_usage
from batch_pipelines.providers.batch_lane import BatchLane
from batch_pipelines.providers.client import ProviderClient, ProviderClients, build_client
from batch_pipelines.providers.config import BatchCaps, ProviderConfig, ProviderRegistry, RateLimits, Timeouts
from batch_pipelines.providers.http import build_async_http_client, build_http_client, endpoint_path, vendor_error
from batch_pipelines.providers.lanes import LANES, LaneClasses
from batch_pipelines.providers.openai_sync import OpenAISyncLane, openai_usage
from batch_pipelines.providers.ratelimit import RateLimiter, RateLimiters
from batch_pipelines.providers.retry import (
    DEFAULT_POLICY,
    NO_WAIT,
    RetryPolicy,
    asend_with_retry,
    parse_retry_after,
    send_with_retry,
)
from batch_pipelines.providers.sync_lane import SyncLane

__all__ = [
    "DEFAULT_POLICY",
    "LANES",
    "NO_WAIT",
    "AnthropicSyncLane",
    "BatchCaps",
    "BatchLane",
    "LaneClasses",
    "OpenAISyncLane",
    "ProviderClient",
    "ProviderClients",
    "ProviderConfig",
    "ProviderRegistry",
    "RateLimiter",
    "RateLimiters",
    "RateLimits",
    "RetryPolicy",
    "SyncLane",
    "Timeouts",
    "anthropic_usage",
    "asend_with_retry",
    "build_async_http_client",
    "build_client",
    "build_http_client",
    "endpoint_path",
    "openai_usage",
    "parse_retry_after",
    "send_with_retry",
    "vendor_error",
]
