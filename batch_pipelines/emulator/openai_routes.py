"""The OpenAI surface's routes: chat completions, embeddings, models, files and batches.

``/v1/models`` is shared with Anthropic (same path on both vendors); it answers in the shape of
the surface the request's headers name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipelines.emulator import catalogue
from batch_pipelines.emulator.anthropic_batches import rfc3339
from batch_pipelines.emulator.errors import ApiError, surface_of
from batch_pipelines.emulator.faults import fingerprint
from batch_pipelines.emulator.openai_files import MAX_UPLOAD_BYTES
from batch_pipelines.emulator.route_helpers import (
    MAX_JSON_BODY,
    int_param,
    json_response,
    parse_json,
    read_body,
    vendor_route,
)

if TYPE_CHECKING:
    from batch_pipelines.emulator.app import Emulator

MULTIPART_SLACK = 1024 * 1024
MODELS_CREATED = 1_767_225_600  # 2026-01-01: a fixed, plausible creation stamp


def openai_routes(emulator: Emulator) -> list[Route]:
    """The OpenAI-surface routes of ``emulator``, each behind ``vendor_route``."""
    e = emulator

    async def chat_completions(request: Request) -> Response:
        raw = await read_body(request, MAX_JSON_BODY)
        body = parse_json(raw)
        key = fingerprint(raw)
        await e.sync_faults(key)
        now = int(e.clock.now())
        response, usage = await run_in_threadpool(
            e.responder.chat_completion,
            body,
            profile=e.profile,
            key=key,
            completion_id=f"chatcmpl-{key}{e.sync_requests:x}",
            created=now,
        )
        e.sync_requests += 1
        e.sync_usage.add(usage)
        return json_response(response)

    async def embeddings(request: Request) -> Response:
        raw = await read_body(request, MAX_JSON_BODY)
        body = parse_json(raw)
        await e.sync_faults(fingerprint(raw))
        response, usage = await run_in_threadpool(e.responder.embeddings, body)
        e.sync_requests += 1
        e.sync_usage.add(usage)
        return json_response(response)

    async def models(request: Request) -> Response:
        data: list[dict[str, Any]]
        if surface_of(request.url.path, request.headers) == "anthropic":
            data = [
                {
                    "type": "model",
                    "id": m.id,
                    "display_name": m.display_name,
                    "created_at": rfc3339(MODELS_CREATED),
                    "lifecycle": "active",
                }
                for m in catalogue.ANTHROPIC_MODELS
            ]
            return json_response(
                {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
            )
        data = [
            {"id": m.id, "object": "model", "created": MODELS_CREATED, "owned_by": m.owned_by}
            for m in catalogue.OPENAI_SURFACE_MODELS
        ]
        return json_response({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for m in catalogue.OPENAI_SURFACE_MODELS:
            if m.id == model_id:
                return json_response({"id": m.id, "object": "model", "created": MODELS_CREATED, "owned_by": m.owned_by})
        raise ApiError(
            404, f"The model '{model_id[:100]}' does not exist or you do not have access to it.", code="model_not_found"
        )

    async def upload_file(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + MULTIPART_SLACK:
            raise ApiError(
                413,
                f"File is larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit.",
                param="file",
                code="file_too_large",
            )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "Uploads must be multipart/form-data with 'file' and 'purpose' fields.", param="file")
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            purpose = form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
                )
            if not isinstance(purpose, str) or not purpose:
                raise ApiError(
                    400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
                )
            filename = (upload.filename or "upload.jsonl")[:255]
            record = await run_in_threadpool(e.files.upload, upload.file, filename=filename, purpose=purpose)
        return json_response(record)

    async def list_files(request: Request) -> Response:
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "Invalid 'order': use 'asc' or 'desc'.", param="order", code="invalid_value")
        limit = int_param(request, "limit", 10_000, 1, 10_000)
        result = await run_in_threadpool(
            e.files.list,
            purpose=request.query_params.get("purpose"),
            after=request.query_params.get("after"),
            limit=limit,
            order=order,
        )
        return json_response(result)

    async def get_file(request: Request) -> Response:
        return json_response(e.files.record(request.path_params["file_id"]))

    async def delete_file(request: Request) -> Response:
        return json_response(await run_in_threadpool(e.files.delete, request.path_params["file_id"]))

    async def file_content(request: Request) -> Response:
        file_id = request.path_params["file_id"]
        path = e.files.data_path(file_id)
        return e.download(request, path, f"file:{file_id}", "application/octet-stream")

    async def create_batch(request: Request) -> Response:
        payload = parse_json(await read_body(request, MAX_JSON_BODY))
        return json_response(await run_in_threadpool(e.openai.create, payload))

    async def list_batches(request: Request) -> Response:
        limit = int_param(request, "limit", 20, 1, 100)
        return json_response(
            await run_in_threadpool(e.openai.list, after=request.query_params.get("after"), limit=limit)
        )

    async def get_batch(request: Request) -> Response:
        return json_response(await run_in_threadpool(e.openai.retrieve, request.path_params["batch_id"]))

    async def cancel_batch(request: Request) -> Response:
        return json_response(await run_in_threadpool(e.openai.cancel, request.path_params["batch_id"]))

    table = [
        ("/v1/chat/completions", chat_completions, ["POST"], None),
        ("/v1/embeddings", embeddings, ["POST"], None),
        ("/v1/models", models, ["GET"], None),
        ("/v1/models/{model_id}", model, ["GET"], None),
        ("/v1/files", upload_file, ["POST"], "files.create"),
        ("/v1/files", list_files, ["GET"], "files.list"),
        ("/v1/files/{file_id}", get_file, ["GET"], "files.retrieve"),
        ("/v1/files/{file_id}", delete_file, ["DELETE"], "files.delete"),
        ("/v1/files/{file_id}/content", file_content, ["GET"], "files.content"),
        ("/v1/batches", create_batch, ["POST"], "batches.create"),
        ("/v1/batches", list_batches, ["GET"], "batches.list"),
        ("/v1/batches/{batch_id}", get_batch, ["GET"], "batches.retrieve"),
        ("/v1/batches/{batch_id}/cancel", cancel_batch, ["POST"], "batches.cancel"),
    ]
    return [vendor_route(e, path, handler, methods, fault) for path, handler, methods, fault in table]
