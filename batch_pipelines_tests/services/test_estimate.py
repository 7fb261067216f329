"""The pre-flight token estimate agrees with what the provider reports (the emulator over HTTP)."""

from __future__ import annotations

import httpx
import pytest

from batch_pipelines.core.pricing import PriceBook
from batch_pipelines.core.requests import Endpoint, Lane, LLMRequest
from batch_pipelines.services.estimate import estimate_requests
from batch_pipelines.workloads.classification import SYSTEM

TOOL = {
    "type": "function",
    "function": {
        "name": "route_ticket",
        "description": "Send the ticket to a queue.",
        "parameters": {"type": "object", "properties": {"queue": {"type": "string", "enum": ["billing", "bug"]}}},
    },
}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "label",
        "strict": True,
        "schema": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
    },
}
CHAT = {
    "model": "gpt-5.4-mini",
    "max_completion_tokens": 5,
    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Ticket: I was charged twice."}],
}


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (Endpoint.CHAT, CHAT),
        (Endpoint.CHAT, {**CHAT, "tools": [TOOL]}),
        (Endpoint.CHAT, {**CHAT, "response_format": SCHEMA}),
        (Endpoint.EMBEDDINGS, {"model": "text-embedding-3-small", "input": "Café déjà vu: 東京 ünïcödé 😀 tokens"}),
        (Endpoint.EMBEDDINGS, {"model": "text-embedding-3-large", "input": ["Grüße aus Köln", "naïve façade"]}),
    ],
    ids=["chat", "chat-tools", "chat-response-format", "embedding-cl100k", "embedding-list"],
)
def test_estimate_equals_the_emulators_reported_prompt_tokens(emulator, endpoint, body):
    """The estimate's input tokens equal the prompt_tokens the emulator reports for the same body."""
    path = "/chat/completions" if endpoint is Endpoint.CHAT else "/embeddings"
    response = httpx.post(
        emulator.openai_base_url + path, json=body, headers={"Authorization": f"Bearer {emulator.api_key}"}
    )
    assert response.status_code == 200, response.text
    reported = response.json()["usage"]["prompt_tokens"]
    request = LLMRequest("item-1", endpoint, body["model"], body, Lane.BATCH)
    estimate = estimate_requests([request], PriceBook.default())
    assert estimate.input_tokens == reported
