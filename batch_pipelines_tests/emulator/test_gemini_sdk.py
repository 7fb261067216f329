"""Gemini's native API (generateContent, embeddings, Files, batch mode), driven with google-genai.

The official SDK is the client; every vendor object is validated with the SDK's own pydantic
types, which forbid unknown fields.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from batch_pipelines.core.tokens import count_text

pytestmark = pytest.mark.filterwarnings("ignore:batches.create_embeddings:google.genai.errors.ExperimentalWarning")
FIXED = {"validation_seconds": 10, "batch_completion_seconds": {"min": 100, "max": 100}, "cancel_seconds": 20}
HOURS = 3600


def strict(model, value):
    """Validate a wire object with an SDK type as the SDK does: unknown fields are refused, and
    proto3 JSON's int64-as-string and RFC 3339 strings are read as numbers and datetimes."""
    return model.model_validate(value)


def client(emu, **options) -> genai.Client:
    http = types.HttpOptions(base_url=emu.base_url, api_version="v1beta", **options)
    return genai.Client(api_key=emu.api_key, http_options=http)


def write_lines(path, lines) -> str:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return str(path)


def chat_lines(n: int) -> list[dict]:
    return [
        {
            "key": f"row-{i}",
            "request": {
                "systemInstruction": {"parts": [{"text": "Labels: billing, bug, other"}]},
                "contents": [{"role": "user", "parts": [{"text": f"ticket {i}: my billing is wrong"}]}],
                "generationConfig": {"maxOutputTokens": 16},
            },
        }
        for i in range(n)
    ]


def result_lines(gc: genai.Client, job: types.BatchJob) -> list[dict]:
    assert job.dest is not None and job.dest.file_name
    return [orjson.loads(line) for line in gc.files.download(file=job.dest.file_name).splitlines()]


def raw_get(emu, name: str) -> dict:
    response = httpx.get(f"{emu.base_url}/v1beta/{name}", headers={"x-goog-api-key": emu.api_key})
    return response.raise_for_status().json()


def test_generate_content_answers_with_usage_metadata(emulator):
    """generateContent reads systemInstruction and contents and answers a GenerateContentResponse with usage."""
    gc = client(emulator)
    response = gc.models.generate_content(
        model="gemini-3-flash",
        contents="my invoice is wrong",
        config={"system_instruction": "Labels: billing, bug", "max_output_tokens": 10},
    )
    assert response.text == "billing"
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0 and usage.candidates_token_count == 1
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    raw = httpx.post(
        f"{emulator.base_url}/v1beta/models/gemini-3-flash:generateContent",
        headers={"x-goog-api-key": emulator.api_key},
        json={"contents": [{"parts": [{"text": "hello"}]}]},
    ).json()
    strict(types.GenerateContentResponse, raw)


def test_json_schema_and_thinking_budget(emulator):
    """responseJsonSchema gets JSON matching the schema; a thinking budget reports thoughtsTokenCount apart."""
    gc = client(emulator)
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": ["billing", "bug"]}}}
    response = gc.models.generate_content(
        model="gemini-3-flash",
        contents="a bug in the app",
        config={
            "response_mime_type": "application/json",
            "response_json_schema": schema,
            "thinking_config": {"thinking_budget": 100},
        },
    )
    assert orjson.loads(response.text) == {"label": "bug"}
    assert response.usage_metadata.thoughts_token_count == 24
    usage = response.usage_metadata
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + 24


def test_embeddings_sync(emulator):
    """embed_content (batchEmbedContents) and embedContent answer unit vectors of the asked dimension."""
    gc = client(emulator)
    result = gc.models.embed_content(
        model="gemini-embedding-001", contents=["cats purr", "dogs bark"], config={"output_dimensionality": 64}
    )
    assert [len(e.values) for e in result.embeddings] == [64, 64]
    assert abs(sum(v * v for v in result.embeddings[0].values) - 1.0) < 1e-9
    single = httpx.post(
        f"{emulator.base_url}/v1beta/models/gemini-embedding-001:embedContent",
        headers={"x-goog-api-key": emulator.api_key},
        json={"content": {"parts": [{"text": "cats purr"}]}, "outputDimensionality": 64},
    ).json()
    assert single["embedding"]["values"] == result.embeddings[0].values
    assert single["usageMetadata"]["promptTokenCount"] == count_text("cats purr")


def test_file_batch_full_lifecycle(emulator, tmp_path):
    """Upload (resumable), create, PENDING -> RUNNING -> SUCCEEDED, download: one line per key, in order."""
    emulator.set_profile(FIXED)
    gc = client(emulator)
    uploaded = gc.files.upload(file=write_lines(tmp_path / "in.jsonl", chat_lines(5)), config={"mime_type": "jsonl"})
    strict(types.File, raw_get(emulator, uploaded.name))
    assert uploaded.state == types.FileState.ACTIVE and uploaded.source == types.FileSource.UPLOADED
    job = gc.batches.create(model="gemini-3-flash", src=uploaded.name, config={"display_name": "bp-intent-1"})
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "bp-intent-1"
    emulator.advance(10)
    assert gc.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    emulator.advance(99)
    assert gc.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    emulator.advance(1)
    done = gc.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.end_time is not None
    operation = raw_get(emulator, job.name)
    assert operation["done"] is True and operation["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert operation["metadata"]["batchStats"]["successfulRequestCount"] == "5"
    output = gc.files.get(name=done.dest.file_name)
    assert output.source == types.FileSource.GENERATED and output.download_uri
    lines = result_lines(gc, done)
    assert [line["key"] for line in lines] == [f"row-{i}" for i in range(5)]
    for line in lines:
        response = strict(types.GenerateContentResponse, line["response"])
        assert response.text == "billing" and response.usage_metadata.prompt_token_count > 0
    usage = emulator.stats()["usage"][job.name.removeprefix("batches/")]
    assert usage["input_tokens"] == sum(line["response"]["usageMetadata"]["promptTokenCount"] for line in lines)


def test_uploaded_files_cannot_be_downloaded_and_are_deleted(emulator, tmp_path):
    """Only generated files download; delete removes a file (then get is a 404 ClientError)."""
    gc = client(emulator)
    uploaded = gc.files.upload(file=write_lines(tmp_path / "in.jsonl", chat_lines(1)), config={"mime_type": "jsonl"})
    with pytest.raises(errors.ClientError) as refused:
        gc.files.download(file=uploaded.name)
    assert refused.value.code == 400
    gc.files.delete(name=uploaded.name)
    with pytest.raises(errors.ClientError) as gone:
        gc.files.get(name=uploaded.name)
    assert gone.value.code == 404 and gone.value.status == "NOT_FOUND"


def test_embeddings_batch_from_a_file(emulator, tmp_path):
    """asyncBatchEmbedContent with a JSONL file: one embedding per key, tokenCount as an int64 string."""
    emulator.set_profile(FIXED)
    gc = client(emulator)
    lines = [
        {"key": f"c{i}", "request": {"output_dimensionality": 32, "content": {"parts": [{"text": f"chunk {i}"}]}}}
        for i in range(4)
    ]
    uploaded = gc.files.upload(file=write_lines(tmp_path / "emb.jsonl", lines), config={"mime_type": "jsonl"})
    job = gc.batches.create_embeddings(model="gemini-embedding-001", src={"file_name": uploaded.name})
    emulator.advance(110)
    done = gc.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    results = result_lines(gc, done)
    assert [r["key"] for r in results] == ["c0", "c1", "c2", "c3"]
    for result in results:
        parsed = strict(types.SingleEmbedContentResponse, result["response"])
        assert len(parsed.embedding.values) == 32 and parsed.token_count == count_text(f"chunk {result['key'][1:]}")


def test_inline_batches_echo_metadata(emulator):
    """Inline chat and embedding batches answer inlinedResponses in input order with metadata echoed."""
    emulator.set_profile(FIXED)
    gc = client(emulator)
    chat = gc.batches.create(
        model="gemini-3-flash",
        src=[
            {"contents": [{"role": "user", "parts": [{"text": f"question {i}"}]}], "metadata": {"key": f"q{i}"}}
            for i in range(3)
        ],
    )
    embeddings = gc.batches.create_embeddings(
        model="gemini-embedding-001", src={"inlined_requests": {"contents": ["a b", "c d"]}}
    )
    emulator.advance(110)
    chat_done = gc.batches.get(name=chat.name)
    assert [r.metadata["key"] for r in chat_done.dest.inlined_responses] == ["q0", "q1", "q2"]
    assert all(r.response.text.startswith("Emulated reply") for r in chat_done.dest.inlined_responses)
    embed_done = gc.batches.get(name=embeddings.name)
    assert [len(r.response.embedding.values) for r in embed_done.dest.inlined_embed_content_responses] == [768, 768]


def test_cancel_keeps_what_ran_and_marks_the_rest(emulator, tmp_path):
    """A cancel mid-run ends CANCELLED: lines that ran keep answers, the rest carry a CANCELLED status."""
    emulator.set_profile({**FIXED, "validation_seconds": 0})
    gc = client(emulator)
    uploaded = gc.files.upload(file=write_lines(tmp_path / "in.jsonl", chat_lines(10)), config={"mime_type": "jsonl"})
    job = gc.batches.create(model="gemini-3-flash", src=uploaded.name)
    emulator.advance(50)
    gc.batches.cancel(name=job.name)
    assert gc.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    emulator.advance(20)
    done = gc.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_CANCELLED
    lines = result_lines(gc, done)
    answered = [line for line in lines if "response" in line]
    cancelled = [line for line in lines if "error" in line]
    assert len(answered) == 5 and len(cancelled) == 5
    assert {(line["error"]["code"], line["error"]["status"]) for line in cancelled} == {(1, "CANCELLED")}
    with pytest.raises(errors.ClientError):
        gc.batches.cancel(name=job.name)


def test_expiry_after_48_hours_with_partial_output(emulator, tmp_path):
    """A batch that runs out of time is EXPIRED 48 h after creation; 70% answered, 30% DEADLINE_EXCEEDED."""
    emulator.set_profile({**FIXED, "expire_rate": 1.0, "unfinished_at_expiry": 0.3})
    gc = client(emulator)
    uploaded = gc.files.upload(file=write_lines(tmp_path / "in.jsonl", chat_lines(10)), config={"mime_type": "jsonl"})
    job = gc.batches.create(model="gemini-3-flash", src=uploaded.name)
    emulator.advance(48 * HOURS - 1)
    assert gc.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    emulator.advance(1)
    done = gc.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_EXPIRED
    statuses = [line.get("error", {}).get("status") for line in result_lines(gc, done)]
    assert statuses == [None] * 7 + ["DEADLINE_EXCEEDED"] * 3


def test_item_faults_missing_and_malformed_lines(emulator, tmp_path):
    """Profile faults: per-line status objects with gRPC codes, absent lines, a line cut short."""
    emulator.set_profile({**FIXED, "item_error_rate": 0.5, "missing_line_rate": 0.2, "malformed_output_lines": 1})
    gc = client(emulator)
    uploaded = gc.files.upload(file=write_lines(tmp_path / "in.jsonl", chat_lines(30)), config={"mime_type": "jsonl"})
    job = gc.batches.create(model="gemini-3-flash", src=uploaded.name)
    emulator.advance(110)
    done = gc.batches.get(name=job.name)
    raw = gc.files.download(file=done.dest.file_name).splitlines()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw[next(i for i, line in enumerate(raw) if b'"response"' in line)])
    parsed = [orjson.loads(line) for line in raw if b'"error"' in line]
    assert parsed and {line["error"]["code"] for line in parsed} <= {3, 8, 13}
    for line in parsed:
        strict(types.JobError, {k: v for k, v in line["error"].items() if k != "status"})
    assert 0 < len(raw) < 30, "some lines are missing from the results"


def test_list_pages_with_page_tokens(emulator):
    """batches.list pages with pageSize/nextPageToken, newest first; the SDK pager walks every page."""
    gc = client(emulator)
    names = [
        gc.batches.create(model="gemini-3-flash", src=[{"contents": [{"parts": [{"text": "x"}]}]}]).name
        for _ in range(5)
    ]
    first = httpx.get(
        f"{emulator.base_url}/v1beta/batches", params={"pageSize": 2}, headers={"x-goog-api-key": emulator.api_key}
    ).json()
    assert [op["name"] for op in first["operations"]] == names[::-1][:2] and first["nextPageToken"]
    assert [job.name for job in gc.batches.list(config={"page_size": 2})] == names[::-1]


def test_errors_use_googles_envelope(emulator, tmp_path):
    """No key is a 403, an unknown batch a 404, a full queue a 429 RESOURCE_EXHAUSTED, injected 5xx a ServerError."""
    response = httpx.get(f"{emulator.base_url}/v1beta/batches")
    assert response.status_code == 403 and response.json()["error"]["status"] == "PERMISSION_DENIED"
    gc = client(emulator)
    with pytest.raises(errors.ClientError) as missing:
        gc.batches.get(name="batches/doesnotexist")
    assert missing.value.code == 404
    emulator.set_profile({"enqueued_token_limits": {"gemini-3-flash": 10}})
    uploaded = gc.files.upload(file=write_lines(tmp_path / "in.jsonl", chat_lines(3)), config={"mime_type": "jsonl"})
    with pytest.raises(errors.ClientError) as full:
        gc.batches.create(model="gemini-3-flash", src=uploaded.name)
    assert full.value.code == 429 and full.value.status == "RESOURCE_EXHAUSTED"
    emulator.set_profile({"route_5xx_rate": 1.0})
    flaky = client(emulator, retry_options=types.HttpRetryOptions(attempts=1))
    with pytest.raises(errors.ServerError):
        list(flaky.batches.list())


def test_files_list_pages(emulator, tmp_path):
    """files.list pages with pageSize/nextPageToken until every file was seen once."""
    gc = client(emulator)
    names = {
        gc.files.upload(file=write_lines(tmp_path / f"in{i}.jsonl", chat_lines(1)), config={"mime_type": "jsonl"}).name
        for i in range(3)
    }
    listed = [f.name for f in gc.files.list(config={"page_size": 1})]
    assert sorted(listed) == sorted(names)
