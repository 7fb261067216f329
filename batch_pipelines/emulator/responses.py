"""Vendor response objects for one request: chat completions, embeddings, Anthropic messages.

Both lanes use these: the sync routes answer with them directly, batch lines wrap them in the
batch output shapes. Request bodies are checked here and refused with the vendor's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batch_pipelines.core import tokens
from batch_pipelines.emulator import accounting
from batch_pipelines.emulator.catalogue import ANTHROPIC_MODEL_IDS, native_dimensions
from batch_pipelines.emulator.embeddings import embed, encode_base64, input_texts
from batch_pipelines.emulator.errors import ApiError
from batch_pipelines.emulator.models import answer_turns, two_turn_texts
from batch_pipelines.emulator.profile import Profile
from batch_pipelines.emulator.structured import answer_for

MAX_EMBEDDING_INPUTS = 2048
# The vendors' own ceilings on what one request may ask for. Every number the emulator acts on
# is bounded, so no request can make it build an answer of unbounded size.
MAX_CHOICES = 128  # OpenAI's limit on ``n``
MAX_OUTPUT_TOKENS = 128_000  # the largest completion any served model allows
MAX_EMBEDDING_INPUT_TOKENS = 8192  # per input (text-embedding-3-*)
MAX_EMBEDDING_REQUEST_TOKENS = 300_000  # summed over a request's inputs


@dataclass(slots=True)
class UsageTotals:
    """Token totals in OpenAI's accounting: input includes cached tokens."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: UsageTotals) -> None:
        self.input_tokens += other.input_tokens
        self.cached_tokens += other.cached_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, int] | None) -> UsageTotals:
        return cls(**(raw or {}))


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is int and value >= 1:  # the usual case, decided without the checks below
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(
            400, f"Invalid '{name}': expected a positive integer, got {value!r}.", param=name, code="invalid_value"
        )
    return value


def _at_most(value: int | None, name: str, maximum: int, message: str) -> int | None:
    if value is not None and value > maximum:
        raise ApiError(400, message.format(name=name, value=value, maximum=maximum), param=name, code="invalid_value")
    return value


def _output_limit(body: dict[str, Any], *, anthropic: bool) -> int | None:
    """The request's output cap, refused as the vendor does when no model could honour it."""
    if anthropic:
        return _at_most(
            _positive_int(body, "max_tokens"),
            "max_tokens",
            MAX_OUTPUT_TOKENS,
            "max_tokens: {value} > {maximum}, which is the maximum allowed number of output tokens",
        )
    for name in ("max_completion_tokens", "max_tokens"):
        limit = _at_most(
            _positive_int(body, name),
            name,
            MAX_OUTPUT_TOKENS,
            "{name} is too large: {value}. This model supports at most {maximum} completion tokens, "
            "whereas you provided {value}.",
        )
        if limit is not None:
            return limit
    return None


def _check_messages(body: Any, *, anthropic: bool) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400,
            "you must provide a model parameter" if not anthropic else "model: Field required",
            param="model",
            code="missing_required_parameter",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400,
            "messages: a non-empty list of messages is required.",
            param="messages",
            code="missing_required_parameter",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(
                400,
                f"messages.{index}: each message must be an object with a role.",
                param=f"messages[{index}]",
                code="invalid_value",
            )
    if body.get("stream"):
        raise ApiError(
            400, "stream: the emulator does not stream; send stream=false.", param="stream", code="invalid_value"
        )


class Responder:
    def __init__(self, prompt_cache: accounting.PromptCache) -> None:
        self.prompt_cache = prompt_cache

    def _answer(
        self, body: dict[str, Any], limit: int | None, key: str, profile: Profile
    ) -> tuple[str, bool, UsageTotals]:
        turns = two_turn_texts(body)
        if turns is not None:
            # The usual batch line: split the prompt once for both the answer and the counts.
            text = answer_turns(*turns, key=key, seed=profile.seed, off_list_rate=profile.off_list_rate)
        else:
            text = answer_for(body, key=key, seed=profile.seed, off_list_rate=profile.off_list_rate)
        if limit is not None:
            text, completion, truncated = accounting.truncate_to_tokens(text, limit)
        else:
            completion, truncated = accounting.count_text(text), False
        prompt, cached = (
            self.prompt_cache.measure_parts(turns) if turns is not None else self.prompt_cache.measure(body)
        )
        if tokens.encoding_for_model(body.get("model")) != tokens.O200K:
            # The prefix cache hashes o200k ids; the billed count follows the model's encoding.
            prompt = tokens.count_chat_prompt(body)
        else:
            prompt += tokens.count_request_extras(body)
        return text, truncated, UsageTotals(prompt, cached, completion, 0)

    def chat_completion(
        self,
        body: Any,
        *,
        profile: Profile,
        key: str,
        completion_id: str,
        created: int,
    ) -> tuple[dict[str, Any], UsageTotals]:
        _check_messages(body, anthropic=False)
        limit = _output_limit(body, anthropic=False)
        choices = (
            _at_most(
                _positive_int(body, "n"),
                "n",
                MAX_CHOICES,
                "Invalid 'n': integer above maximum value. Expected a value <= {maximum}, but got {value} instead.",
            )
            or 1
        )
        text, truncated, usage = self._answer(body, limit, key, profile)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "finish_reason": "length" if truncated else "stop",
            "logprobs": None,
        }
        response = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [choice] if choices == 1 else [{**choice, "index": i} for i in range(choices)],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens * choices,
                "total_tokens": usage.input_tokens + usage.output_tokens * choices,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_emulator",
        }
        usage.output_tokens *= choices
        return response, usage

    def embeddings(self, body: Any) -> tuple[dict[str, Any], UsageTotals]:
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
        texts = input_texts(body.get("input"))
        if texts is None:
            raise ApiError(
                400, "'input' must be a string, a list of strings, or token ids.", param="input", code="invalid_value"
            )
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ApiError(
                400,
                f"'input' holds {len(texts)} items; at most {MAX_EMBEDDING_INPUTS} per request.",
                param="input",
                code="invalid_value",
            )
        counts = accounting.embedding_input_tokens(body)
        longest = max(counts, default=0)
        if longest > MAX_EMBEDDING_INPUT_TOKENS:
            raise ApiError(
                400,
                f"This model's maximum context length is {MAX_EMBEDDING_INPUT_TOKENS} tokens, however you requested "
                f"{longest} tokens ({longest} in your prompt; 0 for the completion). Please reduce your prompt.",
                param="input",
                code="invalid_value",
            )
        if sum(counts) > MAX_EMBEDDING_REQUEST_TOKENS:
            raise ApiError(
                400,
                f"Requested {sum(counts)} tokens, max {MAX_EMBEDDING_REQUEST_TOKENS} tokens per request",
                param="input",
                code="max_tokens_per_request",
            )
        native = native_dimensions(model)
        dimensions = _positive_int(body, "dimensions") or native
        if dimensions > native:
            raise ApiError(
                400,
                f"'dimensions' is {dimensions}; {model} supports at most {native}.",
                param="dimensions",
                code="invalid_value",
            )
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise ApiError(
                400,
                f"'encoding_format' must be 'float' or 'base64', got {encoding!r}.",
                param="encoding_format",
                code="invalid_value",
            )
        data = []
        for index, text in enumerate(texts):
            vector = embed(text, dimensions)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": encode_base64(vector) if encoding == "base64" else vector,
                }
            )
        prompt = sum(counts)
        response = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        return response, UsageTotals(prompt, 0, 0, 0)

    def message(
        self,
        body: Any,
        *,
        profile: Profile,
        key: str,
        message_id: str,
        service_tier: str,
    ) -> tuple[dict[str, Any], UsageTotals]:
        _check_messages(body, anthropic=True)
        if body["model"] not in ANTHROPIC_MODEL_IDS:
            raise ApiError(404, f"model: {body['model']}")
        limit = _output_limit(body, anthropic=True)
        if limit is None:
            raise ApiError(400, "max_tokens: Field required", param="max_tokens")
        text, truncated, usage = self._answer(body, limit, key, profile)
        response = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if truncated else "end_turn",
            "stop_sequence": None,
            "usage": {
                # Anthropic counts cache reads beside input_tokens, not inside them.
                "input_tokens": usage.input_tokens - usage.cached_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": usage.cached_tokens,
                "output_tokens": usage.output_tokens,
                "service_tier": service_tier,
            },
        }
        return response, usage
