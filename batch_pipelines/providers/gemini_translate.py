"""Requests for Gemini's native API, from the OpenAI shape our workloads write (or given natively).

A workload written for the OpenAI chat shape runs unchanged on a ``gemini`` provider: its body
is translated here into a ``GenerateContentRequest`` (GEMINI.md section 8 has the table), and
its embeddings body into an ``EmbedContentRequest``. A body that is already native (it has
``contents``, or ``content`` for embeddings) passes through as it is.

What has no Gemini counterpart is refused with a message naming the field, before anything is
sent: tools and function calls, logprobs, images in OpenAI's ``image_url`` form, several inputs
in one batch embedding line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.requests import Endpoint

API_VERSION = "v1beta"
# Fields of an OpenAI chat body that ask Gemini for nothing (or that we set ourselves).
_IGNORED_CHAT_FIELDS = frozenset({"model", "user", "metadata", "store", "stream", "service_tier"})
_SIMPLE_CONFIG = {"temperature": "temperature", "top_p": "topP", "seed": "seed", "n": "candidateCount"}
_HANDLED_CHAT_FIELDS = frozenset(
    {"messages", "max_tokens", "max_completion_tokens", "stop", "response_format", *_SIMPLE_CONFIG}
)
_ROLES = {"user": "user", "assistant": "model"}
_SYSTEM_ROLES = frozenset({"system", "developer"})


def model_path(model: str, method: str) -> str:
    """``/v1beta/models/{model}:{method}`` (a ``models/`` prefix in the name is accepted)."""
    return f"/{API_VERSION}/models/{model.removeprefix('models/')}:{method}"


def is_native(endpoint: Endpoint, body: Mapping[str, Any]) -> bool:
    return ("content" if endpoint is Endpoint.EMBEDDINGS else "contents") in body


def _refuse(custom_id: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"request {custom_id!r}: {message}", custom_id=custom_id)


def _text(content: Any, custom_id: str, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise _refuse(custom_id, f"{where} has a {kind!r} part; the gemini protocol here carries text only")
        return "".join(texts)
    raise _refuse(custom_id, f"{where} content must be a string or a list of text parts")


def generate_content_request(body: Mapping[str, Any], custom_id: str) -> dict[str, Any]:
    """A ``GenerateContentRequest`` from an OpenAI chat body (or a native one, minus ``model``)."""
    if is_native(Endpoint.CHAT, body):
        return {k: v for k, v in body.items() if k != "model"}
    unknown = sorted(set(body) - _HANDLED_CHAT_FIELDS - _IGNORED_CHAT_FIELDS)
    if unknown:
        raise _refuse(custom_id, f"{', '.join(unknown)} cannot be translated to Gemini's generateContent")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refuse(custom_id, "a chat body needs a non-empty 'messages' list (or native 'contents')")
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        text = _text(message.get("content") if isinstance(message, Mapping) else None, custom_id, f"messages[{index}]")
        if role in _SYSTEM_ROLES:
            system.append({"text": text})
        elif role in _ROLES:
            contents.append({"role": _ROLES[role], "parts": [{"text": text}]})
        else:
            raise _refuse(custom_id, f"messages[{index}] has role {role!r}; Gemini takes system, user and assistant")
    if not contents:
        raise _refuse(custom_id, "the messages hold no user or assistant turn")
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    config = _generation_config(body, custom_id)
    if config:
        request["generationConfig"] = config
    return request


def _generation_config(body: Mapping[str, Any], custom_id: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        config["maxOutputTokens"] = limit
    for ours, theirs in _SIMPLE_CONFIG.items():
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, Mapping) else None
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            if not isinstance(schema, Mapping):
                raise _refuse(custom_id, "response_format json_schema needs a 'schema' object")
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = dict(schema)
        elif kind != "text":
            raise _refuse(custom_id, f"response_format type {kind!r} has no Gemini counterpart")
    return config


def embedding_texts(body: Mapping[str, Any], custom_id: str) -> list[str]:
    """The inputs of an OpenAI embeddings body, which must be text for Gemini."""
    if body.get("encoding_format") not in (None, "float"):
        # Gemini answers floats only; a workload decoding base64 would misread them.
        raise _refuse(custom_id, f"encoding_format {body['encoding_format']!r}: Gemini returns float vectors only")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise _refuse(custom_id, "'input' must be a string or a list of strings for the gemini protocol")
    return texts


def embed_content_request(body: Mapping[str, Any], model: str, custom_id: str, text: str) -> dict[str, Any]:
    """One ``EmbedContentRequest`` for ``text`` with the body's ``dimensions``."""
    request: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
    if body.get("dimensions") is not None:
        request["outputDimensionality"] = body["dimensions"]
    return request


def batch_line_request(endpoint: Endpoint, body: Mapping[str, Any], model: str, custom_id: str) -> dict[str, Any]:
    """The ``request`` of one batch input line: a GenerateContentRequest or an EmbedContentRequest."""
    if endpoint is Endpoint.EMBEDDINGS:
        if is_native(endpoint, body):
            return {k: v for k, v in body.items() if k != "model"}
        texts = embedding_texts(body, custom_id)
        if len(texts) != 1:
            raise _refuse(custom_id, f"a Gemini batch embeds one input per request; this one has {len(texts)}")
        request = embed_content_request(body, model, custom_id, texts[0])
        del request["model"]  # the batch names the model once
        return request
    return generate_content_request(body, custom_id)
