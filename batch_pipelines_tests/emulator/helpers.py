"""Helpers for the emulator tests: SDK clients, request files, strict validation."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import orjson
from anthropic import Anthropic
from openai import OpenAI

from batch_pipelines.emulator.testing import RunningEmulator


def openai_client(emu: RunningEmulator) -> OpenAI:
    return OpenAI(base_url=emu.openai_base_url, api_key=emu.api_key, _strict_response_validation=True, max_retries=0)


def anthropic_client(emu: RunningEmulator) -> Anthropic:
    return Anthropic(base_url=emu.base_url, api_key=emu.api_key, _strict_response_validation=True, max_retries=0)


def strict(model: Any, value: Any) -> Any:
    """Validate a JSON value against an SDK type in pydantic strict mode (JSON input rules,
    so RFC 3339 strings are datetimes but "1" is never an int)."""
    return model.model_validate_json(orjson.dumps(value), strict=True)


def chat_line(
    custom_id: str,
    content: str,
    *,
    model: str = "gpt-5.4",
    system: str | None = None,
    url: str = "/v1/chat/completions",
) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": model, "messages": messages}}


def jsonl(lines: Iterable[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)


def upload(client: OpenAI, lines: Iterable[Any], filename: str = "input.jsonl") -> str:
    return client.files.create(file=(filename, io.BytesIO(jsonl(lines))), purpose="batch").id


def chat_batch(client: OpenAI, count: int, *, metadata: dict[str, str] | None = None, prefix: str = "r") -> Any:
    file_id = upload(client, [chat_line(f"{prefix}{i}", f"question number {i} about parcels") for i in range(count)])
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
    )


def read_lines(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines() if line.strip()]


def anthropic_requests(count: int, *, model: str = "claude-sonnet-4-6", prefix: str = "q") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "params": {
                "model": model,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"hello number {i}"}],
            },
        }
        for i in range(count)
    ]
