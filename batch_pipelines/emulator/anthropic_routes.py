"""The Anthropic surface's routes: messages and message batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipelines.emulator.anthropic_batches import MAX_BODY_BYTES as ANTHROPIC_MAX_BODY
from batch_pipelines.emulator.faults import fingerprint
from batch_pipelines.emulator.route_helpers import (
    MAX_JSON_BODY,
    base_url,
    int_param,
    json_response,
    parse_json,
    read_body,
    vendor_route,
)

if TYPE_CHECKING:
    from batch_pipelines.emulator.app import Emulator


def anthropic_routes(emulator: Emulator) -> list[Route]:
    """The Anthropic-surface routes of ``emulator``, each behind ``vendor_route``."""
    e = emulator

    async def messages(request: Request) -> Response:
        raw = await read_body(request, MAX_JSON_BODY)
        body = parse_json(raw)
        key = fingerprint(raw)
        await e.sync_faults(key)
        response, usage = await run_in_threadpool(
            e.responder.message,
            body,
            profile=e.profile,
            key=key,
            message_id=f"msg_{key}{e.sync_requests:x}",
            service_tier="standard",
        )
        e.sync_requests += 1
        e.sync_usage.add(usage)
        return json_response(response)

    async def create_message_batch(request: Request) -> Response:
        payload = parse_json(await read_body(request, ANTHROPIC_MAX_BODY))
        record = await run_in_threadpool(e.anthropic.create, payload)
        return json_response(e.anthropic.render(record, base_url(request)))

    async def list_message_batches(request: Request) -> Response:
        limit = int_param(request, "limit", 20, 1, 1000)
        page, has_more = await run_in_threadpool(
            e.anthropic.list,
            after_id=request.query_params.get("after_id"),
            before_id=request.query_params.get("before_id"),
            limit=limit,
        )
        base = base_url(request)
        data = [e.anthropic.render(r, base) for r in page]
        return json_response(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def get_message_batch(request: Request) -> Response:
        record = await run_in_threadpool(e.anthropic.retrieve, request.path_params["batch_id"])
        return json_response(e.anthropic.render(record, base_url(request)))

    async def cancel_message_batch(request: Request) -> Response:
        record = await run_in_threadpool(e.anthropic.cancel, request.path_params["batch_id"])
        return json_response(e.anthropic.render(record, base_url(request)))

    async def delete_message_batch(request: Request) -> Response:
        return json_response(await run_in_threadpool(e.anthropic.delete, request.path_params["batch_id"]))

    async def message_batch_results(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        path = await run_in_threadpool(e.anthropic.results_path, batch_id)
        return e.download(request, path, f"results:{batch_id}", "application/binary")

    table = [
        ("/v1/messages", messages, ["POST"], None),
        ("/v1/messages/batches", create_message_batch, ["POST"], "message_batches.create"),
        ("/v1/messages/batches", list_message_batches, ["GET"], "message_batches.list"),
        ("/v1/messages/batches/{batch_id}", get_message_batch, ["GET"], "message_batches.retrieve"),
        ("/v1/messages/batches/{batch_id}", delete_message_batch, ["DELETE"], "message_batches.delete"),
        ("/v1/messages/batches/{batch_id}/cancel", cancel_message_batch, ["POST"], "message_batches.cancel"),
        ("/v1/messages/batches/{batch_id}/results", message_batch_results, ["GET"], "message_batches.results"),
    ]
    return [vendor_route(e, path, handler, methods, fault) for path, handler, methods, fault in table]
