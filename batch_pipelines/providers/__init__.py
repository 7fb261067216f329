"""Adapters to LLM providers: the only code that speaks HTTP to a vendor.

config      ProviderRegistry / ProviderConfig: which provider serves a model, caps, limits
http        httpx clients with the protocol's auth headers; the transport seam
retry       RetryPolicy, parse_retry_after, send_with_retry / asend_with_retry
ratelimit   per provider+model request/token buckets that obey the vendor's hints
sync_lane   SyncLane: one request in, one ItemOutcome out (+ run_many)
openai_sync, anthropic_sync   the sync lane per wire protocol, and their usage readers
openai_batch, anthropic_batch the batch lane per wire protocol
client      ProviderClient (sync + batch lanes of one provider), build_client
"""

from batch_pipelines.providers.anthropic_sync import AnthropicSyncLane, anthropic_usage
from batch_pipelines.providers.client import ProviderClient, ProviderClients, build_client
from batch_pipelines.providers.config import BatchCaps, ProviderConfig, ProviderRegistry, RateLimits, Timeouts
from batch_pipelines.providers.http import build_async_http_client, build_http_client, endpoint_path, vendor_error
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
    "NO_WAIT",
    "AnthropicSyncLane",
    "BatchCaps",
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
