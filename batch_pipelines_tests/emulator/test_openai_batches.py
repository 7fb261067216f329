"""OpenAI batch lifecycle paths, driven with the official SDK and checked with its types."""

from __future__ import annotations

import threading

import orjson
import pytest
from openai.types import Batch, FileDeleted, FileObject

from batch_pipelines.emulator.testing import run_emulator
from batch_pipelines_tests.emulator.helpers import (
    chat_batch,
    chat_line,
    jsonl,
    openai_client,
    read_lines,
    strict,
    upload,
)

FIXED = {
    "validation_seconds": 10,
    "batch_completion_seconds": {"min": 100, "max": 100},
    "finalizing_seconds": 10,
    "cancel_seconds": 20,
}


def raw_batch(emu, batch_id):
    return openai_client(emu).batches.with_raw_response.retrieve(batch_id).http_response.json()


def test_normal_lifecycle_moves_through_every_status_with_growing_counts(emulator):
    """validating -> in_progress (counts grow with virtual time) -> finalizing -> completed."""
    emulator.set_profile(FIXED)
    client = openai_client(emulator)
    batch = chat_batch(client, 100, metadata={"intent": "abc"})
    assert batch.status == "validating" and batch.metadata == {"intent": "abc"}
    emulator.advance(10)
    first = client.batches.retrieve(batch.id)
    assert first.status == "in_progress" and first.request_counts.total == 100
    assert first.request_counts.completed == 0 and first.model == "gpt-5.4"
    emulator.advance(50)
    half = client.batches.retrieve(batch.id)
    assert half.request_counts.completed == 50
    emulator.advance(50)
    finalizing = client.batches.retrieve(batch.id)
    assert finalizing.status == "finalizing" and finalizing.request_counts.completed == 100
    emulator.advance(10)
    done = client.batches.retrieve(batch.id)
    strict(Batch, raw_batch(emulator, batch.id))
    assert done.status == "completed" and done.error_file_id is None
    assert done.in_progress_at < done.finalizing_at <= done.completed_at < done.expires_at
    lines = read_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"r{i}" for i in range(100))
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in lines)
    assert done.usage.input_tokens == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in lines)
    assert (
        done.usage.output_tokens > 0 and done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    )
    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output" and output.bytes > 0


def test_every_batch_status_object_validates_strictly(emulator):
    """The batch object in each status validates against the SDK's Batch type in strict mode."""
    emulator.set_profile(FIXED)
    client = openai_client(emulator)
    batch = chat_batch(client, 10)
    for step in (0, 10, 60, 50, 10):
        emulator.advance(step)
        strict(Batch, raw_batch(emulator, batch.id))


@pytest.mark.parametrize(
    "lines, code",
    [
        ([b"{not json", chat_line("a", "x")], "invalid_json_line"),
        ([chat_line("a", "x"), chat_line("a", "y")], "duplicate_custom_id"),
        ([chat_line("a", "x"), chat_line("b", "y", model="gpt-5.4-mini")], "mixed_models"),
        ([chat_line("a", "x", url="/v1/embeddings")], "invalid_url"),
        ([], "empty_file"),
    ],
)
def test_invalid_input_fails_validation_with_errors_data(emulator, lines, code):
    """Malformed lines, duplicate ids, mixed models, endpoint mismatch, empty files: failed + errors.data."""
    client = openai_client(emulator)
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    emulator.advance(5)
    failed = client.batches.retrieve(batch.id)
    strict(Batch, raw_batch(emulator, batch.id))
    assert failed.status == "failed" and failed.failed_at is not None
    assert code in [error.code for error in failed.errors.data]
    assert failed.output_file_id is None and failed.error_file_id is None


def test_more_than_50000_lines_fails_validation(emulator):
    """An input file over the 50,000-request cap fails with a too_many_requests error."""
    client = openai_client(emulator)
    lines = [orjson.dumps(chat_line(f"c{i}", "hi")) for i in range(50_001)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    emulator.advance(5)
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.errors.data[0].code == "too_many_requests"


def test_token_limit_fails_the_batch_that_overflows_the_queue_and_frees_up_later(emulator):
    """Over the enqueued-token limit the batch goes failed/token_limit_exceeded; once the queue drains, a new one
    runs."""
    client = openai_client(emulator)
    probe = chat_batch(client, 10, prefix="p")
    emulator.advance(5)
    per_batch = client.batches.retrieve(probe.id)
    emulator.advance(200)
    tokens = emulator.stats()["usage"][probe.id]["input_tokens"]
    assert client.batches.retrieve(probe.id).status == "completed" and per_batch.status == "in_progress"
    emulator.set_profile({**FIXED, "enqueued_token_limits": {"gpt-5.4": int(tokens * 1.5)}})
    first = chat_batch(client, 10, prefix="a")
    second = chat_batch(client, 10, prefix="b")
    emulator.advance(10)
    assert client.batches.retrieve(first.id).status == "in_progress"
    refused = client.batches.retrieve(second.id)
    assert refused.status == "failed" and refused.errors.data[0].code == "token_limit_exceeded"
    assert emulator.stats()["enqueued_tokens"] == {"gpt-5.4": tokens}
    emulator.advance(200)
    assert client.batches.retrieve(first.id).status == "completed"
    third = chat_batch(client, 10, prefix="c")
    emulator.advance(10)
    assert client.batches.retrieve(third.id).status == "in_progress"


def test_expiry_returns_finished_lines_and_batch_expired_errors_for_the_rest(emulator):
    """A never-completing batch expires at 24 h: finished lines in the output file, batch_expired for the rest."""
    emulator.set_profile({**FIXED, "never_complete": True, "unfinished_at_expiry": 0.4})
    client = openai_client(emulator)
    batch = chat_batch(client, 50)
    emulator.advance(12 * 3600)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    emulator.advance(12 * 3600)
    expired = client.batches.retrieve(batch.id)
    strict(Batch, raw_batch(emulator, batch.id))
    assert expired.status == "expired" and expired.expired_at == expired.expires_at
    done = read_lines(client, expired.output_file_id)
    rest = read_lines(client, expired.error_file_id)
    assert len(done) == 30 and len(rest) == 20
    assert all(line["response"] is None and line["error"]["code"] == "batch_expired" for line in rest)
    assert {line["custom_id"] for line in done} | {line["custom_id"] for line in rest} == {f"r{i}" for i in range(50)}


def test_cancel_keeps_partial_output(emulator):
    """cancel -> cancelling -> cancelled after cancel_seconds, with the lines finished before the cancel."""
    emulator.set_profile(FIXED)
    client = openai_client(emulator)
    batch = chat_batch(client, 40)
    emulator.advance(10 + 25)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    emulator.advance(19)
    assert client.batches.retrieve(batch.id).status == "cancelling"
    emulator.advance(1)
    cancelled = client.batches.retrieve(batch.id)
    strict(Batch, raw_batch(emulator, batch.id))
    assert cancelled.status == "cancelled" and cancelled.request_counts.completed == 10
    assert {line["custom_id"] for line in read_lines(client, cancelled.output_file_id)} == {f"r{i}" for i in range(10)}
    assert client.batches.cancel(batch.id).status == "cancelled"


def test_cancel_of_a_completed_batch_is_refused(emulator):
    """Cancelling a batch that already completed is a 400, not a silent success."""
    import openai

    client = openai_client(emulator)
    batch = chat_batch(client, 2)
    emulator.advance(3600)
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_all_lines_failed_completes_without_output_file(emulator):
    """Every line failing ends completed with output_file_id null and an error file holding every line."""
    emulator.set_profile({"all_lines_fail": True, "item_error_kinds": {"invalid_request_400": 1}})
    client = openai_client(emulator)
    batch = chat_batch(client, 20)
    emulator.advance(3600)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id is None
    assert done.request_counts.failed == 20 and done.request_counts.completed == 0
    errors = read_lines(client, done.error_file_id)
    assert len(errors) == 20 and {line["response"]["status_code"] for line in errors} == {400}
    assert errors[0]["response"]["body"]["error"]["type"] == "invalid_request_error"


def test_item_faults_missing_and_malformed_lines_follow_the_profile(emulator):
    """Item errors carry 400/500/429 bodies, missing lines are absent, the malformed line does not parse."""
    emulator.set_profile({"seed": 3, "item_error_rate": 0.3, "missing_line_rate": 0.1, "malformed_output_lines": 1})
    client = openai_client(emulator)
    batch = chat_batch(client, 200)
    emulator.advance(3600)
    done = client.batches.retrieve(batch.id)
    raw_output = client.files.content(done.output_file_id).content.splitlines()
    parsed, broken = [], 0
    for line in raw_output:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            broken += 1
    errors = read_lines(client, done.error_file_id)
    assert broken == 1
    assert done.request_counts.failed == len(errors) > 0
    assert {line["response"]["status_code"] for line in errors} == {400, 500, 429}
    missing = done.request_counts.completed - len(raw_output)
    assert missing > 0
    assert done.request_counts.completed + done.request_counts.failed == 200


def test_fault_outcomes_replay_exactly_with_the_same_seed(tmp_path):
    """Two emulators with the same profile give the same per-line outcomes."""
    outcomes = []
    for run in range(2):
        with run_emulator({"seed": 11, "item_error_rate": 0.2}, state_dir=tmp_path / str(run)) as emu:
            client = openai_client(emu)
            batch = chat_batch(client, 50)
            emu.advance(3600)
            done = client.batches.retrieve(batch.id)
            outcomes.append(sorted(line["custom_id"] for line in read_lines(client, done.error_file_id)))
    assert outcomes[0] == outcomes[1] and outcomes[0]


def test_restart_keeps_files_batches_and_the_clock(tmp_path):
    """A restarted emulator on the same state dir still has every file and batch, and the clock resumes."""
    state = tmp_path / "state"
    with run_emulator(FIXED, state_dir=state) as emu:
        client = openai_client(emu)
        batch = chat_batch(client, 20)
        emu.advance(60)
        before = client.batches.retrieve(batch.id)
        clock = emu.now()
    with run_emulator(FIXED, state_dir=state) as emu:
        client = openai_client(emu)
        assert emu.now() >= clock
        again = client.batches.retrieve(batch.id)
        assert again.status == "in_progress" and again.request_counts.completed == before.request_counts.completed
        assert client.files.retrieve(batch.input_file_id).filename == "input.jsonl"
        emu.advance(3600)
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed" and len(read_lines(client, done.output_file_id)) == 20
        assert emu.stats()["batches_created"]["openai"] == 1


def test_list_batches_pages_newest_first_with_after_and_limit(emulator):
    """GET /v1/batches pages newest first; the SDK's auto-pagination visits every batch once."""
    client = openai_client(emulator)
    ids = [chat_batch(client, 1, prefix=f"b{i}x").id for i in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]
    after = client.batches.list(after=ids[2], limit=10)
    assert [b.id for b in after.data] == ids[:2][::-1] and not after.has_more


def test_files_upload_list_by_purpose_retrieve_and_delete(emulator):
    """Files carry filename and purpose, list filters by purpose, delete removes them (then 404)."""
    import openai

    client = openai_client(emulator)
    file_id = upload(client, [chat_line("a", "x")], filename="intent-123.jsonl")
    raw = client.files.with_raw_response.retrieve(file_id).http_response.json()
    strict(FileObject, raw)
    assert raw["filename"] == "intent-123.jsonl" and raw["purpose"] == "batch"
    assert [f.filename for f in client.files.list(purpose="batch")] == ["intent-123.jsonl"]
    assert list(client.files.list(purpose="batch_output")) == []
    assert client.files.content(file_id).content == jsonl([chat_line("a", "x")])
    deleted = client.files.with_raw_response.delete(file_id).http_response.json()
    strict(FileDeleted, deleted)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)


def test_batch_keeps_running_after_its_input_file_is_deleted(emulator):
    """Deleting the input file mid-batch does not break the batch (the emulator keeps its own link)."""
    client = openai_client(emulator)
    batch = chat_batch(client, 5)
    client.files.delete(batch.input_file_id)
    emulator.advance(3600)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and len(read_lines(client, done.output_file_id)) == 5


@pytest.mark.parametrize(
    "metadata",
    [{f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}],
)
def test_metadata_over_the_limits_is_a_400(emulator, metadata):
    """Metadata with more than 16 pairs, a key over 64 or a value over 512 characters is refused."""
    import openai

    client = openai_client(emulator)
    file_id = upload(client, [chat_line("a", "x")])
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
        )


def test_embeddings_batch_returns_vectors(emulator):
    """An embeddings batch answers each line with an embedding list of the requested size."""
    client = openai_client(emulator)
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": f"text {i}", "dimensions": 16},
        }
        for i in range(3)
    ]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    emulator.advance(3600)
    done = client.batches.retrieve(batch.id)
    output = read_lines(client, done.output_file_id)
    assert len(output) == 3
    assert all(len(line["response"]["body"]["data"][0]["embedding"]) == 16 for line in output)


def test_every_line_is_processed_whatever_the_float_rounding_of_the_end_time(tmp_path):
    """A batch whose drawn duration is not exactly representable still completes every line."""
    import httpx
    import orjson

    from batch_pipelines.emulator.testing import run_emulator

    lines = b"".join(
        orjson.dumps(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": f"hi {i}"}]},
            }
        )
        + b"\n"
        for i in range(40)
    )
    for seed in range(6):
        with run_emulator(
            profile={"seed": seed, "batch_completion_seconds": {"min": 60, "max": 600}}, state_dir=tmp_path / str(seed)
        ) as emu:
            client = httpx.Client(base_url=emu.openai_base_url, headers={"Authorization": "Bearer k"})
            file_id = client.post("/files", files={"file": ("a.jsonl", lines)}, data={"purpose": "batch"}).json()["id"]
            batch = client.post(
                "/batches",
                json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            ).json()
            emu.advance(7200)
            batch = client.get(f"/batches/{batch['id']}").json()
            assert batch["status"] == "completed"
            assert batch["request_counts"] == {"total": 40, "completed": 40, "failed": 0}


def test_a_batch_is_answered_off_the_request_path_and_reads_never_wait_on_it(emulator):
    """While a batch's work is unfinished, a read past its validation answers 'validating' at once; then it runs."""
    client = openai_client(emulator)
    batches = emulator.app.openai
    batches.read_wait_seconds = 0.05
    gate = threading.Event()
    batches.worker.submit("gate", lambda: gate.wait(30) and None)  # holds the worker: jobs run in order
    lines = [orjson.dumps(chat_line(f"c{i}", "hi")) for i in range(20)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    emulator.advance(3600)
    assert client.batches.retrieve(batch.id).status == "validating"
    assert [b.status for b in client.batches.list().data] == ["validating"]
    gate.set()
    batches.read_wait_seconds = 30.0
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 20


def test_a_batch_cancelled_while_its_work_is_queued_leaves_no_files(emulator):
    """Cancelling a batch whose work has not run yet cancels it with no output, and the work never runs."""
    client = openai_client(emulator)
    batches = emulator.app.openai
    gate = threading.Event()
    batches.worker.submit("gate", lambda: gate.wait(30) and None)
    lines = [orjson.dumps(chat_line(f"c{i}", "hi")) for i in range(5)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    client.batches.cancel(batch.id)
    emulator.advance(3600)
    cancelled = client.batches.retrieve(batch.id)
    gate.set()
    assert cancelled.status == "cancelled"
    assert cancelled.output_file_id is None and cancelled.error_file_id is None
    assert not batches.worker.has(batch.id)
