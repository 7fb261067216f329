"""``batch-pipelines deferred status|flush|collect`` and ``batch-pipelines serve``: the router by hand.

For cron users, tests and operations outside Dagster: the same flush, collection and deadline
watch the Dagster sensors run, against the ledger and providers named by ``--ledger`` and
``--providers`` or ``--emulator`` (one of them, named: there is no default provider).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click
import orjson

from batch_pipelines.core.errors import BatchPipelinesError
from batch_pipelines.core.flush import FlushPolicy, flush_due
from batch_pipelines.core.lanes import human_duration
from batch_pipelines.core.requests import Lane
from batch_pipelines.emulator import EMULATOR_URL_ENV

F = TypeVar("F", bound=Callable[..., Any])


def router_options(command: F) -> F:
    """The options every router command shares: where the providers, the ledger and the prices are."""
    options = [
        click.option("--providers", "providers_file", type=click.Path(dir_okay=False), default=None,
                     help="Provider registry YAML (real vendors). Give this or --emulator."),
        click.option("--emulator", "emulator_url", envvar=EMULATOR_URL_ENV, default=None,
                     help=f"Base URL of the bundled emulator (or ${EMULATOR_URL_ENV}). Give this or --providers."),
        click.option("--ledger", "ledger_url", default=None,
                     help="Ledger URL (default: the SQLite file under $DAGSTER_HOME/batch_pipelines_data)."),
        click.option("--prices", "price_book_path", type=click.Path(dir_okay=False), default=None,
                     help="YAML price book laid over the default one."),
        click.option("--max-calls", type=click.IntRange(min=1), default=FlushPolicy().max_calls, show_default=True,
                     help="Flush a group when this many calls wait."),
        click.option("--max-age-minutes", type=click.FloatRange(min=0), default=15.0, show_default=True,
                     help="Flush a group when its oldest call has waited this long."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _router(options: dict[str, Any]) -> Any:
    from batch_pipelines.services.router import Router

    policy = FlushPolicy(max_calls=options["max_calls"], max_age=timedelta(minutes=options["max_age_minutes"]))
    return Router.from_config(
        providers_file=options["providers_file"],
        emulator_url=options["emulator_url"],
        ledger_url=options["ledger_url"],
        price_book_path=options["price_book_path"],
        flush_policy=policy,
    )


def _handles_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BatchPipelinesError as exc:
            raise click.ClickException(exc.message) from None

    return wrapped  # type: ignore[return-value]


@click.group("deferred")
def deferred_command() -> None:
    """Look at, flush and collect the buffer of deferrable calls."""


@deferred_command.command()
@router_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handles_errors
def status(as_json: bool, **options: Any) -> None:
    """The buffer's depth and oldest age, each group's flush decision, and the flushes by state."""
    with _router(options) as router:
        now = router.flusher.now()
        depth, oldest = router.buffer.depth()
        groups = []
        for group in router.buffer.waiting_groups():
            decision = flush_due(
                group,
                now=now,
                flush_policy=router.flusher.flush_policy,
                lane_policy=router.gateway.policy,
                turnaround=router.flusher.turnaround(group.provider, group.model),
            )
            groups.append((group, decision))
        states: dict[str, int] = {}
        for flush in router.buffer.flushes():
            states[flush.state] = states.get(flush.state, 0) + 1
    age = (now - oldest) if oldest is not None else None
    if as_json:
        payload = {
            "waiting": depth,
            "oldest_age_seconds": None if age is None else age.total_seconds(),
            "groups": [
                {
                    "provider": g.provider,
                    "model": g.model,
                    "endpoint": g.endpoint,
                    "waiting": g.waiting,
                    "due": d.due,
                    "reason": d.reason,
                }
                for g, d in groups
            ],
            "flushes": states,
        }
        click.echo(orjson.dumps(payload).decode())
        return
    click.echo(f"waiting calls: {depth}" + (f", oldest {human_duration(age)}" if age is not None else ""))
    for group, decision in groups:
        mark = "due" if decision.due else "waits"
        click.echo(f"  {group.provider}/{group.model} {group.endpoint}: {group.waiting} ({mark}) {decision.reason}")
    click.echo("flushes: " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"))


@deferred_command.command()
@router_options
@click.option("--all", "everything", is_flag=True, help="Flush every waiting call now, whatever the thresholds.")
@_handles_errors
def flush(everything: bool, **options: Any) -> None:
    """Send every due group (or, with --all, every waiting call) to its lane."""
    with _router(options) as router:
        report = router.flush(everything=everything)
    lanes = report.by_lane()
    click.echo(
        f"flushed {report.calls} calls in {len(report.flushes)} flushes: "
        f"{lanes[Lane.BATCH]} to the batch lane, {lanes[Lane.SYNC]} to the sync lane"
        + (f" ({len(report.taken_over)} taken over from a dead flusher)" if report.taken_over else "")
    )
    for name, reason in sorted(report.reasons.items()):
        click.echo(f"  {name}: {reason}")


@deferred_command.command()
@router_options
@_handles_errors
def collect(**options: Any) -> None:
    """Watch the deadlines (cancel and promote what would be late), then collect every ended flush."""
    with _router(options) as router:
        watched = router.watch()
        report = router.collect()
    click.echo(
        f"collected {len(report.collected)} flushes, {len(report.waiting)} still running; "
        f"{len(watched.cancelled_batches)} batches cancelled and {watched.promoted_calls} calls promoted for deadlines"
    )


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8780, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--default-lane",
    type=click.Choice(["deferrable", "interactive"]),
    default="deferrable",
    show_default=True,
    help="The lane of a request without an X-Batch-Lane header.",
)
@router_options
def serve_command(host: str, port: int, default_lane: str, **options: Any) -> None:
    """Serve the router over HTTP: OpenAI- and Anthropic-shaped routes, interactive or deferred."""
    import uvicorn

    from batch_pipelines.frontdoor.app import FrontDoorSettings, create_app
    from batch_pipelines.frontdoor.server import InsecureBindError, check_bind, keys_from_env

    keys = keys_from_env()
    try:
        notice = check_bind(host, keys)
    except InsecureBindError as exc:
        raise click.UsageError(str(exc)) from None
    if notice:
        click.echo(notice, err=True)
    try:
        router = _router(options)
    except BatchPipelinesError as exc:
        raise click.ClickException(exc.message) from None
    app = create_app(router, FrontDoorSettings(keys=keys, default_lane=default_lane))
    click.echo(f"serving the router on http://{host}:{port} (default lane: {default_lane})", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        router.close()
