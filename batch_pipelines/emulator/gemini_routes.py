"""The Gemini Developer API's routes (``/v1beta``, ``/upload/v1beta``, ``/download/v1beta``).

Google's method URLs put a verb after a colon (``models/{model}:generateContent``,
``batches/{id}:cancel``, ``files/{id}:download``), so each resource has one route whose last
path segment is split at the colon here. Every route checks ``x-goog-api-key`` (or ``?key=``),
applies the profile's route faults, and answers errors in Google's envelope. The second leg
of a resumable upload is the exception: its ``upload_id`` is its credential, as at Google.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.faults import fingerprint
from batch_pipelines.emulator.gemini_files import DEFAULT_PAGE_SIZE as FILES_PAGE_SIZE
from batch_pipelines.emulator.gemini_files import MAX_FILE_BYTES
from batch_pipelines.emulator.gemini_files import MAX_PAGE_SIZE as FILES_MAX_PAGE_SIZE
from batch_pipelines.emulator.gemini_wire import API_VERSION, answer_embed, answer_generate, error_response
from batch_pipelines.emulator.responses import UsageTotals

if TYPE_CHECKING:
    from batch_pipelines.emulator.app import Emulator

MAX_JSON_BODY = 32 * 1024 * 1024
MAX_SYNC_EMBEDDINGS = 100
_V = f"/{API_VERSION}"
Handler = Callable[[Request], Awaitable[Response]]


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


async def _body(request: Request, limit: int = MAX_JSON_BODY) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(400, f"Request payload size exceeds the limit: {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Invalid JSON payload received.") from None


def _split(segment: str) -> tuple[str, str | None]:
    """``gemini-3-flash:generateContent`` -> (``gemini-3-flash``, ``generateContent``)."""
    name, colon, verb = segment.partition(":")
    return name, (verb if colon else None)


def _page_size(request: Request, default: int, high: int) -> int:
    raw = request.query_params.get("pageSize")
    if raw is None:
        return default
    if not raw.isdigit():
        raise ApiError(400, f"Invalid pageSize {raw[:20]!r}.")
    return max(1, min(int(raw), high))


def gemini_routes(e: Emulator) -> list[Route]:
    files = e.gemini_files
    batches = e.gemini

    def authorize(request: Request) -> None:
        supplied = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not supplied:
            raise ApiError(
                403, "Method doesn't allow unregistered callers. Please use an API key (x-goog-api-key header)."
            )
        if e.api_key is not None and not e.key_matches(supplied):
            raise ApiError(400, "API key not valid. Please pass a valid API key.")

    def route(path: str, handler: Handler, methods: list[str], *, fault: str | None, auth: bool = True) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                if auth:
                    authorize(request)
                if fault:
                    e.route_fault(fault)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc)
            except Exception:  # never a stack trace to the client
                return error_response(ApiError(500, "An internal error has occurred."))

        return Route(path, endpoint, methods=methods)

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- models: sync calls and batch creation --

    async def model_method(request: Request) -> Response:
        model, verb = _split(request.path_params["segment"])
        raw = await _body(request)
        payload = _parse(raw)
        if verb in ("batchGenerateContent", "asyncBatchEmbedContent"):
            e.route_fault(f"gemini.{verb}")
            kind = "generate" if verb == "batchGenerateContent" else "embed"
            record = await run_in_threadpool(batches.create, model, payload, kind=kind)
            return _json(batches.render(record))
        key = fingerprint(raw)
        if verb == "generateContent":
            await e.sync_faults(key)
            response, usage = await run_in_threadpool(
                answer_generate,
                e.responder,
                model,
                payload,
                profile=e.profile,
                key=key,
                response_id=f"{key}{e.sync_requests:x}",
            )
            e.count_sync(usage)
            return _json(response)
        if verb == "embedContent":
            await e.sync_faults(key)
            values, tokens = answer_embed(model, payload, "request")
            e.count_sync(UsageTotals(tokens, 0, 0, 0))
            return _json({"embedding": {"values": values}, "usageMetadata": _embed_usage(tokens)})
        if verb == "batchEmbedContents":
            await e.sync_faults(key)
            requests = payload.get("requests") if isinstance(payload, dict) else None
            if not isinstance(requests, list) or not requests:
                raise ApiError(400, "* BatchEmbedContentsRequest.requests: at least one request is required.")
            if len(requests) > MAX_SYNC_EMBEDDINGS:
                raise ApiError(400, f"* BatchEmbedContentsRequest.requests: at most {MAX_SYNC_EMBEDDINGS} requests.")
            embeddings, total = [], 0
            for index, item in enumerate(requests):
                values, tokens = answer_embed(model, item, f"requests[{index}]")
                embeddings.append({"values": values})
                total += tokens
            e.count_sync(UsageTotals(total, 0, 0, 0))
            return _json({"embeddings": embeddings, "usageMetadata": _embed_usage(total)})
        raise ApiError(404, f"Method models/{model}:{verb} is not found.")

    # -- batches --

    async def list_batches(request: Request) -> Response:
        size = _page_size(request, 50, 1000)
        page, token = await run_in_threadpool(batches.list_page, size, request.query_params.get("pageToken"))
        out: dict[str, Any] = {"operations": [batches.render(r) for r in page]}
        if token:
            out["nextPageToken"] = token
        return _json(out)

    async def batch_method(request: Request) -> Response:
        batch_id, verb = _split(request.path_params["segment"])
        if request.method == "GET" and verb is None:
            e.route_fault("gemini.batches.get")
            return _json(batches.render(await run_in_threadpool(batches.get, batch_id)))
        if request.method == "POST" and verb == "cancel":
            e.route_fault("gemini.batches.cancel")
            await run_in_threadpool(batches.cancel, batch_id)
            return _json({})
        if request.method == "DELETE" and verb is None:
            await run_in_threadpool(batches.delete, batch_id)
            return _json({})
        raise ApiError(404, f"Method {request.method} batches/{batch_id}:{verb} is not found.")

    # -- files --

    async def start_upload(request: Request) -> Response:
        upload_id = request.query_params.get("upload_id")
        if upload_id is not None:
            return await upload_leg(request, upload_id)
        authorize(request)
        e.route_fault("gemini.files.upload")
        headers = request.headers
        if headers.get("x-goog-upload-protocol", "").lower() != "resumable" or (
            headers.get("x-goog-upload-command", "").lower() != "start"
        ):
            raise ApiError(400, "Send X-Goog-Upload-Protocol: resumable and X-Goog-Upload-Command: start.")
        payload = _parse(await _body(request, 1024 * 1024))
        declared_size = headers.get("x-goog-upload-header-content-length")
        upload_id = files.start_upload(payload, declared_size, headers.get("x-goog-upload-header-content-type"))
        url = f"{base(request)}/upload/{API_VERSION}/files?upload_id={upload_id}&upload_protocol=resumable"
        return Response(
            b"",
            headers={
                "x-goog-upload-url": url,
                "x-goog-upload-status": "active",
                "x-goog-upload-chunk-granularity": str(8 * 1024 * 1024),
                "x-goog-upload-control-url": url,
            },
        )

    async def upload_leg(request: Request, upload_id: str) -> Response:
        headers = request.headers
        data = await _body(request, MAX_FILE_BYTES)
        record = await run_in_threadpool(
            files.upload_chunk,
            upload_id,
            headers.get("x-goog-upload-command", ""),
            headers.get("x-goog-upload-offset"),
            data,
        )
        if record is None:
            return Response(
                b"",
                headers={
                    "x-goog-upload-status": "active",
                    "x-goog-upload-size-received": str(files.received(upload_id)),
                },
            )
        return Response(
            orjson.dumps({"file": files.render(record, base(request))}),
            media_type="application/json",
            headers={"x-goog-upload-status": "final"},
        )

    async def list_files(request: Request) -> Response:
        size = _page_size(request, FILES_PAGE_SIZE, FILES_MAX_PAGE_SIZE)
        page, token = files.list_page(size, request.query_params.get("pageToken"))
        out: dict[str, Any] = {"files": [files.render(r, base(request)) for r in page]}
        if token:
            out["nextPageToken"] = token
        return _json(out)

    async def file_method(request: Request) -> Response:
        file_id, verb = _split(request.path_params["segment"])
        name = f"files/{file_id}"
        if request.method == "GET" and verb == "download":
            return download(request, name)
        if request.method == "GET" and verb is None:
            return _json(files.render(files.record(name), base(request)))
        if request.method == "DELETE" and verb is None:
            files.delete(name)
            return _json({})
        raise ApiError(404, f"Method {request.method} {name}:{verb} is not found.")

    async def download_route(request: Request) -> Response:
        file_id, verb = _split(request.path_params["segment"])
        if verb != "download":
            raise ApiError(404, f"Method files/{file_id}:{verb} is not found.")
        return download(request, f"files/{file_id}")

    def download(request: Request, name: str) -> Response:
        e.route_fault("gemini.files.download")
        if request.query_params.get("alt") != "media":
            raise ApiError(400, "Downloads need ?alt=media.")
        path = files.download_path(name)
        return e.download(request, path, f"gemini:{name}", "application/octet-stream")

    return [
        route(f"{_V}/models/{{segment}}", model_method, ["POST"], fault=None),
        route(f"{_V}/batches", list_batches, ["GET"], fault="gemini.batches.list"),
        route(f"{_V}/batches/{{segment}}", batch_method, ["GET", "POST", "DELETE"], fault=None),
        route(f"/upload{_V}/files", start_upload, ["POST"], fault=None, auth=False),
        route(f"{_V}/files", list_files, ["GET"], fault="gemini.files.list"),
        route(f"{_V}/files/{{segment}}", file_method, ["GET", "DELETE"], fault=None),
        route(f"/download{_V}/files/{{segment}}", download_route, ["GET"], fault=None),
    ]


def _embed_usage(tokens: int) -> dict[str, Any]:
    return {"promptTokenCount": tokens, "totalTokenCount": tokens}
