"""A run killed at any step resumes on the next run without a second batch, a lost item, a
duplicated row or a double-counted cost; two PostgreSQL workers reconcile into one set of results."""

from __future__ import annotations

import threading
import uuid

import pytest

from batch_pipelines.services.submit import SUBMIT_STEPS, submit_partition
from batch_pipelines_tests.reliability.conftest import with_profile
from batch_pipelines_tests.reliability.pipeline import (
    ANTHROPIC_MODEL,
    GEMINI_MODEL,
    OPENAI_MODEL,
    assert_invariants,
    build_gateway,
    drive,
    make_requests,
    start,
    submit,
)


class Crash(BaseException):
    """Stands in for the process dying: nothing catches it on the way out."""


def _resume(scenario, emu, vtime, tmp_path, **options):
    """A fresh process: a new Gateway (own clients, own ledger connection) on the same ledger file."""
    scenario.gateway.close()
    scenario.gateway = build_gateway(emu, tmp_path, vtime, **options)
    return scenario


# Anthropic sends requests inline: it has no upload steps. Gemini uploads a file and finds its
# batch again by display name.
_SUBMIT_CRASHES = (
    [(s, OPENAI_MODEL) for s in SUBMIT_STEPS]
    + [(s, ANTHROPIC_MODEL) for s in SUBMIT_STEPS if s not in ("uploaded", "upload_recorded")]
    + [(s, GEMINI_MODEL) for s in SUBMIT_STEPS]
)


@pytest.mark.parametrize(("step", "model"), _SUBMIT_CRASHES)
def test_crash_during_submit_resumes_without_a_second_batch(emu, vtime, tmp_path, step, model):
    """Killed after any submit step, the next submit re-attaches to the batch already created."""
    with_profile(emu)
    gateway = build_gateway(emu, tmp_path, vtime)
    scenario = start(emu, gateway, vtime, make_requests(20, model=model))

    def crash_at(name):
        if name == step:
            raise Crash(name)

    with pytest.raises(Crash):
        submit_partition(
            gateway.ledger,
            gateway.client_for_model(model),
            scenario.requests,
            job=scenario.job,
            partition=scenario.partition,
            work_dir=gateway.work_dir / scenario.job / scenario.partition,
            crash_hook=crash_at,
        )
    _resume(scenario, emu, vtime, tmp_path)
    submit(scenario)
    drive(scenario)
    assert assert_invariants(scenario) == {"succeeded": 20}
    assert len(scenario.gateway.ledger.batches(scenario.job, scenario.partition)) == 1


def _crash_once(obj, name, *, after_call: bool = False):
    """Make ``obj.name`` raise Crash on its first call (before it runs, or after it returned)."""
    original = getattr(obj, name)
    state = {"armed": True}

    def wrapper(*args, **kwargs):
        if state["armed"] and not after_call:
            state["armed"] = False
            raise Crash(name)
        result = original(*args, **kwargs)
        if state["armed"]:
            state["armed"] = False
            raise Crash(name)
        return result

    setattr(obj, name, wrapper)


def _partition_with_retries(emu, vtime, tmp_path, model=OPENAI_MODEL, **faults):
    with_profile(emu, **faults)
    gateway = build_gateway(emu, tmp_path, vtime)
    scenario = start(emu, gateway, vtime, make_requests(30, model=model))
    submit(scenario)
    vtime.advance(3600)
    gateway.poll(scenario.job)
    assert gateway.progress(scenario.job, scenario.partition).ready_for_results
    return scenario


def _reconcile(scenario, worker):
    return scenario.gateway.reconcile(
        scenario.job, scenario.partition, rebuild_requests=scenario.rebuild, worker=worker
    )


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL])
def test_crash_mid_download_resumes(emu, vtime, tmp_path, model):
    """Killed while downloading the results, the next run (another worker) collects them once."""
    scenario = _partition_with_retries(
        emu, vtime, tmp_path, model, item_error_rate=0.2, item_error_kinds={"server_error_500": 1}
    )
    lane = scenario.gateway.client_for_model(model).batch
    _crash_once(lane, "download_results" if model == ANTHROPIC_MODEL else "download")
    with pytest.raises(Crash):
        _reconcile(scenario, "run-1")
    _resume(scenario, emu, vtime, tmp_path)
    scenario.reports.append(_reconcile(scenario, "run-2"))  # the claim was given back: no wait
    assert scenario.last.collected_batches
    drive(scenario)
    assert assert_invariants(scenario) == {"succeeded": 30}


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_crash_after_recording_outcomes_before_marking_reconciled(emu, vtime, tmp_path, model):
    """Killed after the outcomes are in the ledger, the replay records nothing twice."""
    scenario = _partition_with_retries(
        emu, vtime, tmp_path, model, item_error_rate=0.2, item_error_kinds={"server_error_500": 1}
    )
    _crash_once(scenario.gateway.ledger, "mark_batch_reconciled")
    with pytest.raises(Crash):
        _reconcile(scenario, "run-1")
    recorded = scenario.gateway.ledger.partition_totals(scenario.job, scenario.partition).cost_usd
    assert recorded > 0
    _resume(scenario, emu, vtime, tmp_path)
    drive(scenario)
    assert assert_invariants(scenario) == {"succeeded": 30}  # the cost check proves no double count


def test_crash_mid_sync_retry_releases_and_resumes(emu, vtime, tmp_path):
    """Killed mid sync retry, items left 'submitted' under the sync key are released and retried once."""
    scenario = _partition_with_retries(
        emu, vtime, tmp_path, item_error_rate=0.3, item_error_kinds={"server_error_500": 1}
    )
    sync = scenario.gateway.client_for_model(OPENAI_MODEL).sync
    _crash_once(sync, "run_many")
    with pytest.raises(Crash):
        _reconcile(scenario, "run-1")
    stuck = scenario.gateway.ledger.items(scenario.job, scenario.partition, statuses=["submitted"])
    assert stuck and all(i.batch_key.startswith("sync-") for i in stuck)
    _resume(scenario, emu, vtime, tmp_path)
    report = _reconcile(scenario, "run-2")  # the sync run is still fresh: maybe another worker's
    assert not report.complete
    vtime.advance(3600)  # now quiet for an hour: presumed dead
    drive(scenario)
    assert assert_invariants(scenario) == {"succeeded": 30}
    assert all(i.attempts <= 2 for i in scenario.gateway.ledger.iter_items(scenario.job, scenario.partition))


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
def test_crash_between_mark_for_retry_and_resubmit(emu, vtime, tmp_path, model):
    """Killed after items went back to pending for a retry, the next run sends them again."""
    scenario = _partition_with_retries(
        emu, vtime, tmp_path, model, item_error_rate=0.3, item_error_kinds={"server_error_500": 1}
    )
    gateway = scenario.gateway
    _crash_once(gateway.ledger, "mark_for_retry", after_call=True)
    with pytest.raises(Crash):
        _reconcile(scenario, "run-1")
    assert gateway.ledger.item_counts(scenario.job, scenario.partition).get("pending")
    _resume(scenario, emu, vtime, tmp_path)
    drive(scenario)
    assert assert_invariants(scenario) == {"succeeded": 30}


def test_crash_mid_promotion_resumes(emu, vtime, tmp_path):
    """Killed while running promoted items on the sync lane, the next run finishes them once."""
    from datetime import timedelta

    with_profile(emu, batch_completion_seconds=20 * 3600)
    gateway = build_gateway(emu, tmp_path, vtime)
    deadline = vtime.datetime() + timedelta(minutes=25)
    scenario = start(emu, gateway, vtime, make_requests(20, deadline=deadline))
    submit(scenario)
    (action,) = gateway.watch_deadlines(scenario.job)
    assert action.run_on_sync_now
    _crash_once(gateway.client_for_model(OPENAI_MODEL).sync, "run_many")
    with pytest.raises(Crash):
        gateway.promote(scenario.job, scenario.partition, rebuild_requests=scenario.rebuild)
    _resume(scenario, emu, vtime, tmp_path)
    vtime.advance(900)  # the cancellation ends; the crashed promotion has been quiet long enough
    drive(scenario, step_seconds=600)
    assert assert_invariants(scenario) == {"succeeded": 20}


@pytest.mark.postgres
def test_two_workers_reconcile_the_same_partition_once(emu, vtime, tmp_path, postgres_schema_url):
    """Two workers (own Gateway and Ledger each) reconciling one partition at once produce one set of results."""
    url = postgres_schema_url  # a schema of its own: runs in parallel never share a ledger
    with_profile(emu, item_error_rate=0.2, item_error_kinds={"server_error_500": 1, "invalid_request_400": 1})
    gateways = [build_gateway(emu, tmp_path / f"w{n}", vtime, ledger_url=url) for n in range(2)]
    for gw in gateways:  # one shared results and work area, as workers on one deployment have
        gw.results_dir, gw.work_dir = tmp_path / "results", tmp_path / "work"
    scenario = start(emu, gateways[0], vtime, make_requests(40), job=f"pg-{uuid.uuid4().hex[:10]}")
    submit(scenario)
    vtime.advance(3600)
    gateways[0].poll(scenario.job)
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def work(gw, name):
        try:
            barrier.wait()
            reports.append(
                gw.reconcile(scenario.job, scenario.partition, rebuild_requests=scenario.rebuild, worker=name)
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(gw, f"worker-{n}")) for n, gw in enumerate(gateways)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(len(r.collected_batches) for r in reports) == 1, "exactly one worker collected the batch"
    scenario.reports.extend(reports)
    if not any(r.complete for r in reports):
        drive(scenario)
    else:
        scenario.reports.sort(key=lambda r: r.complete)  # the complete one wrote the table
    assert_invariants(scenario)
    gateways[1].close()


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL])
@pytest.mark.parametrize("step", ["created", "recorded"])
def test_crash_inside_a_retry_round_resumes_without_a_second_batch(emu, vtime, tmp_path, monkeypatch, step, model):
    """Killed after a retry batch was created but before its items were assigned, the next run re-attaches to it."""
    from batch_pipelines.core.lanes import LanePolicy
    from batch_pipelines.services import retry_rounds as retry_rounds_module

    policy = LanePolicy(sync_remainder_threshold=0)  # every retry goes out as a new batch
    with_profile(emu, item_error_rate=0.3, item_error_kinds={"server_error_500": 1})
    scenario = start(emu, build_gateway(emu, tmp_path, vtime, policy=policy), vtime, make_requests(30, model=model))
    submit(scenario)
    vtime.advance(3600)
    scenario.gateway.poll(scenario.job)

    def crashing_submit(*args, **kwargs):
        def crash_at(name):
            if name == step:
                raise Crash(name)

        return submit_partition(*args, crash_hook=crash_at, **kwargs)

    monkeypatch.setattr(retry_rounds_module, "submit_partition", crashing_submit)
    created = sum(emu.stats()["batches_created"].values())
    with pytest.raises(Crash):
        _reconcile(scenario, "run-1")
    assert sum(emu.stats()["batches_created"].values()) == created + 1  # the retry batch the dead run created
    monkeypatch.setattr(retry_rounds_module, "submit_partition", submit_partition)
    _resume(scenario, emu, vtime, tmp_path, policy=policy)
    scenario.reports.append(_reconcile(scenario, "run-2"))
    assert sum(emu.stats()["batches_created"].values()) == created + 1  # re-attached, not created again
    drive(scenario)
    assert sum(assert_invariants(scenario).values()) == 30  # one batch per intent, every item terminal once
    retry_intents = [i for i in scenario.gateway.ledger.intents(scenario.job, scenario.partition) if i.round == 1]
    assert len(retry_intents) == 1 and retry_intents[0].vendor_batch_id
