"""Pins what batch processing produces, byte for byte, so speed work cannot change it.

The state dir is seeded with a fixed id nonce and clock, so batch ids, line ids and `created`
stamps are the same on every run; the digests were recorded from the emulator before its
batch loop was optimised. The chat and partial digests were re-recorded once, when a body's
``response_format`` (and tools) began to count as prompt tokens, as the vendors bill them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from batch_pipelines.core.tokens import count_chat_prompt
from batch_pipelines.emulator import anthropic_batches, openai_batch_work
from batch_pipelines.emulator.testing import run_emulator

LABELS = "billing, shipping, technical-issue, account_access, refund"
LONG_SYSTEM = (
    "You sort tickets. Answer with one label only.\nLabels: "
    + LABELS
    + "\n"
    + "\n".join(
        f"Rule {i}: prefer the most specific label when topic {i} mentions an order, a parcel or a card."
        for i in range(60)
    )
)
SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["billing", "shipping", "refund"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "rationale": {"type": "string", "maxLength": 40},
    },
    "required": ["label", "score", "rationale"],
}
PROFILE = {
    "seed": 7,
    "validation_seconds": 1,
    "batch_completion_seconds": {"min": 10, "max": 10},
    "finalizing_seconds": 1,
    "item_error_rate": 0.05,
    "missing_line_rate": 0.03,
    "malformed_output_lines": 2,
    "off_list_rate": 0.05,
}


def _body(i: int) -> dict[str, Any]:
    """A request of one of several shapes, chosen by ``i``: every answer convention appears."""
    ticket = f"Ticket {i}: my card was charged twice for order {i * 37 % 1000}; the parcel is late and login fails."
    shape = i % 10
    if shape == 0:
        return {
            "messages": [
                {"role": "system", "content": f"Classify.\nLabels: {LABELS}"},
                {"role": "user", "content": ticket},
            ],
            "max_completion_tokens": 5,
        }
    if shape == 1:
        return {"messages": [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": ticket}]}
    if shape == 2:
        return {
            "messages": [
                {"role": "system", "content": "You are a judge; give a score."},
                {
                    "role": "user",
                    "content": f"Question: what broke?\nAnswer: the parcel {i} was late\nReference: the parcel "
                    "was late",
                },
            ]
        }
    if shape == 3:
        return {
            "messages": [
                {"role": "user", "content": f"Please summarise this. First point {i}. Second point here! Third one?"}
            ],
            "max_tokens": 12,
        }
    if shape == 4:
        return {
            "messages": [{"role": "user", "content": ticket}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
        }
    if shape == 5:
        return {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": ticket}, {"type": "text", "text": " more"}]}
            ],
            "n": 2,
        }
    if shape == 6:
        return {
            "messages": [
                {"role": "system", "content": LONG_SYSTEM},
                {"role": "user", "content": "earlier turn"},
                {"role": "assistant", "content": "billing"},
                {"role": "user", "content": f"Allowed labels: red, green\nthis one is green {i}"},
            ]
        }
    if shape == 7:
        return {
            "messages": [{"role": "user", "content": f"Labels: a, b\n{ticket} with a report"}],
            "response_format": {"type": "json_object"},
        }
    if shape == 8:
        return {"messages": [{"role": "user", "content": ""}], "max_completion_tokens": 1}
    return {"messages": [{"role": "user", "content": ticket}], "n": 0}  # refused: an error line


def _chat_lines(count: int, start: int = 0) -> list[dict[str, Any]]:
    lines = []
    for i in range(start, start + count):
        body = {"model": "gpt-5.4-mini", **_body(i)}
        lines.append({"custom_id": f"c-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    return lines


def _embedding_lines(count: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"e-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": [f"parcel {i}", "late card"], "dimensions": 8},
        }
        for i in range(count)
    ]


def _seed_state(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    meta = {
        "nonce": "0123456789abcdef",
        "next_id": 0,
        "batches_created": {"openai": 0, "anthropic": 0},
        "clock": {"virtual": 1_800_000_000.0, "wall": 0.0},
    }
    (state_dir / "emulator.json").write_bytes(orjson.dumps(meta))


def _run_openai(http: httpx.Client, emu: Any, lines: list[dict[str, Any]], endpoint: str) -> dict[str, Any]:
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    file_id = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", data)}).json()["id"]
    batch = http.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
    ).json()
    emu.advance(60)
    return http.get(f"/v1/batches/{batch['id']}").json()


def _content(http: httpx.Client, file_id: str | None) -> bytes:
    return b"" if file_id is None else http.get(f"/v1/files/{file_id}/content").content


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little") + part)
    return hasher.hexdigest()


@pytest.fixture
def seeded(tmp_path):
    state = tmp_path / "state"
    _seed_state(state)
    with (
        run_emulator(PROFILE, state_dir=state) as emu,
        httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}, timeout=60) as http,
    ):
        yield emu, http


ANTHROPIC = {"anthropic-version": "2023-06-01"}


def _anthropic_digest(http: httpx.Client, emu: Any) -> str:
    requests = [
        {
            "custom_id": f"a-{i}",
            "params": {
                "model": "claude-sonnet-4-6",
                "max_tokens": 8,
                **{k: v for k, v in _body(i).items() if k not in ("response_format", "n", "max_completion_tokens")},
            },
        }
        for i in range(120)
    ]
    requests[17]["params"]["model"] = "claude-unknown"  # an errored result
    for request in requests:  # Anthropic takes the system prompt beside the messages
        messages = request["params"]["messages"]
        if messages[0]["role"] == "system":
            request["params"]["system"] = messages.pop(0)["content"]
    created = http.post("/v1/messages/batches", json={"requests": requests}, headers=ANTHROPIC).json()
    emu.advance(60)
    ended = http.get(f"/v1/messages/batches/{created['id']}", headers=ANTHROPIC).json()
    assert ended["processing_status"] == "ended"
    results = http.get(f"/v1/messages/batches/{created['id']}/results", headers=ANTHROPIC).content
    return _digest(results, orjson.dumps(ended["request_counts"]), orjson.dumps(emu.stats()["usage"][created["id"]]))


GOLDEN = {
    "chat_first": "bc579f0833987708fc7f058bba807d4d941b4ec3d625cdb7b227ef6565f91249",
    "chat_second": "7819e2173ffa16f187c3684f6b16b125a7dc429a4c5e6e807d4f834252c6d06e",
    "embeddings": "3084c7b62f1cee08ee657574f0bdbd3fa7d6ceedde06e1abd10695b4f1958dfc",
    "anthropic": "49c5d0ae8ee46955f8b40e15291935236a102f86383ca9f5074d1e441543f5d9",
}
PARTIAL_GOLDEN = {
    "progress": "c9e61883434d25201d4111c4d07a3198b636c8bc6762b6e2b15565183bf6b1d2",
    "expired": "717fbd8b2c336eb75f15332faecf8ea0c3781b05a140aa1e667eab384bc7811e",
    "cancelled": "3e5bcb4c3ecb71599a3f18ae6f1648a78e32d2d513af40477f953ea6127e6b14",
}


def test_openai_batch_files_and_usage_match_the_recorded_digests(seeded):
    """Same seed and requests give byte-identical output and error files and the same usage."""
    emu, http = seeded
    found = {}
    # Two batches over overlapping prompts: the second sees the first's long prefixes cached.
    for name, lines in (("chat_first", _chat_lines(300)), ("chat_second", _chat_lines(300, start=150))):
        batch = _run_openai(http, emu, lines, "/v1/chat/completions")
        assert batch["status"] == "completed"
        found[name] = _digest(
            _content(http, batch["output_file_id"]),
            _content(http, batch["error_file_id"]),
            orjson.dumps(batch["usage"]),
            orjson.dumps(batch["request_counts"]),
        )
    batch = _run_openai(http, emu, _embedding_lines(50), "/v1/embeddings")
    found["embeddings"] = _digest(
        _content(http, batch["output_file_id"]), _content(http, batch["error_file_id"]), orjson.dumps(batch["usage"])
    )
    found["anthropic"] = _anthropic_digest(http, emu)
    assert found == GOLDEN


def test_small_draw_blocks_and_many_queued_writes_change_nothing(seeded, monkeypatch):
    """Seeded draws computed in blocks of 5 and output written in blocks of 7 lines give the same files."""
    monkeypatch.setattr(openai_batch_work, "_DRAW_BLOCK", 5)
    monkeypatch.setattr(openai_batch_work, "_FLUSH_LINES", 7)
    monkeypatch.setattr(openai_batch_work, "_WRITES_IN_FLIGHT", 1)
    emu, http = seeded
    batch = _run_openai(http, emu, _chat_lines(300), "/v1/chat/completions")
    found = _digest(
        _content(http, batch["output_file_id"]),
        _content(http, batch["error_file_id"]),
        orjson.dumps(batch["usage"]),
        orjson.dumps(batch["request_counts"]),
    )
    assert found == GOLDEN["chat_first"]


def test_anthropic_results_are_the_same_when_requests_are_read_back_from_disk(seeded, monkeypatch):
    """A batch whose parsed requests were not kept in memory (as after a restart) ends the same."""
    monkeypatch.setattr(anthropic_batches, "_HELD_REQUEST_BYTES", 0)
    emu, http = seeded
    for lines in (_chat_lines(300), _chat_lines(300, start=150)):  # the same prompt-cache history
        _run_openai(http, emu, lines, "/v1/chat/completions")
    _run_openai(http, emu, _embedding_lines(50), "/v1/embeddings")
    assert _anthropic_digest(http, emu) == GOLDEN["anthropic"]


def test_partial_progress_expiry_and_cancel_match_the_recorded_digests(seeded):
    """Counts and usage mid-run, an expired batch's files and a cancelled batch's files are pinned."""
    emu, http = seeded
    found = {}

    def create(lines: list[dict[str, Any]]) -> str:
        data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        file_id = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", data)}).json()["id"]
        return http.post(
            "/v1/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ).json()["id"]

    def state(batch_id: str) -> dict[str, Any]:
        return http.get(f"/v1/batches/{batch_id}").json()

    emu.set_profile({**PROFILE, "batch_completion_seconds": {"min": 100, "max": 100}})
    batch_id = create(_chat_lines(270))
    snapshots = []
    for step in (1, 7, 13, 30, 80):
        emu.advance(step)
        batch = state(batch_id)
        snapshots.append([batch["status"], batch["request_counts"], batch["usage"]])
    found["progress"] = _digest(orjson.dumps(snapshots))

    emu.set_profile({**PROFILE, "never_complete": True, "unfinished_at_expiry": 0.35})
    batch_id = create(_chat_lines(200, start=40))
    emu.advance(24 * 3600)
    batch = state(batch_id)
    assert batch["status"] == "expired"
    found["expired"] = _digest(
        _content(http, batch["output_file_id"]),
        _content(http, batch["error_file_id"]),
        orjson.dumps(batch["usage"]),
        orjson.dumps(batch["request_counts"]),
    )

    emu.set_profile({**PROFILE, "batch_completion_seconds": {"min": 100, "max": 100}, "cancel_seconds": 5})
    batch_id = create(_chat_lines(150, start=7))
    emu.advance(1 + 43)
    http.post(f"/v1/batches/{batch_id}/cancel")
    emu.advance(5)
    batch = state(batch_id)
    assert batch["status"] == "cancelled"
    found["cancelled"] = _digest(
        _content(http, batch["output_file_id"]),
        _content(http, batch["error_file_id"]),
        orjson.dumps(batch["usage"]),
        orjson.dumps(batch["request_counts"]),
    )
    assert found == PARTIAL_GOLDEN


def test_prompt_tokens_of_every_line_equal_count_chat_prompt(seeded):
    """Each output line's prompt_tokens is count_chat_prompt of its request body."""
    emu, http = seeded
    lines = _chat_lines(200)
    batch = _run_openai(http, emu, lines, "/v1/chat/completions")
    bodies = {line["custom_id"]: line["body"] for line in lines}
    checked = 0
    for raw in _content(http, batch["output_file_id"]).splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # the profile's deliberately malformed lines
        usage = line["response"]["body"]["usage"]
        assert usage["prompt_tokens"] == count_chat_prompt(bodies[line["custom_id"]])
        assert usage["prompt_tokens_details"]["cached_tokens"] <= usage["prompt_tokens"]
        checked += 1
    assert checked > 150
