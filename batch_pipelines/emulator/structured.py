"""Structured output: JSON that validates against the requested schema, and the answer entry point.

``answer_for`` is what the responders call: it honours an OpenAI ``response_format`` (a JSON
schema, or a JSON object) and otherwise answers text by the conventions in ``models.py``.
"""

from __future__ import annotations

from typing import Any

import orjson

from batch_pipelines.emulator.faults import stable_index
from batch_pipelines.emulator.models import (
    PromptView,
    answer_text,
    choose_label,
    judge,
    normalise,
    summary,
    title_words,
    view_prompt,
)


class _SchemaFiller:
    def __init__(self, root: dict[str, Any], view: PromptView) -> None:
        self.root = root
        self.view = view
        self._verdict: tuple[int, str] | None | bool = False

    @property
    def verdict(self) -> tuple[int, str] | None:
        if self._verdict is False:
            self._verdict = judge(self.view)
        return self._verdict  # type: ignore[return-value]

    def resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return {}
            node: Any = self.root
            for piece in ref[2:].split("/"):
                node = node.get(piece, {}) if isinstance(node, dict) else {}
            schema = node
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def fill(self, schema: Any, name: str = "", depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if depth > 16:
            return None
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._enum(schema["enum"])
        for combinator in ("anyOf", "oneOf"):
            options = schema.get(combinator)
            if isinstance(options, list) and options:
                chosen = next((o for o in options if self.resolve(o).get("type") != "null"), options[0])
                return self.fill(chosen, name, depth + 1)
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self.resolve(part)
                merged.update({k: v for k, v in part.items() if k != "properties"})
                merged.setdefault("properties", {}).update(part.get("properties", {}))
            return self.fill(merged, name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        return getattr(self, f"_{kind}", self._string)(schema, name, depth)

    def _enum(self, values: list[Any]) -> Any:
        strings = [v for v in values if isinstance(v, str)]
        if not strings:
            return values[stable_index(self.view.last_user, len(values))]
        return choose_label(tuple(strings), tuple(normalise(s) for s in strings), self.view.last_user)

    def _object(self, schema: dict[str, Any], name: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        return {key: self.fill(sub, key, depth + 1) for key, sub in properties.items()}

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 1) or 0)
        high = schema.get("maxItems")
        count = max(low, 1)
        if isinstance(high, int):
            count = min(count, high)
        items = schema.get("items", {})
        if isinstance(schema.get("prefixItems"), list):
            return [self.fill(s, name, depth + 1) for s in schema["prefixItems"]]
        return [self.fill(items, name, depth + 1) for _ in range(count)]

    def _string(self, schema: dict[str, Any], name: str, depth: int) -> str:
        lowered = name.lower()
        features = self.view.features
        if features.labels and any(w in lowered for w in ("label", "category", "class", "answer")):
            value = choose_label(features.labels, features.normalised_labels, self.view.last_user)
        elif "summary" in lowered or "report" in lowered:
            value = summary(self.view)
        elif any(w in lowered for w in ("rationale", "reason", "explanation")):
            verdict = self.verdict
            value = verdict[1] if verdict else "Chosen from the words of the request."
        elif "title" in lowered:
            value = title_words(self.view.last_user)
        else:
            value = title_words(self.view.last_user, 6) if self.view.last_user else "value"
        low = int(schema.get("minLength", 0) or 0)
        high = schema.get("maxLength")
        if len(value) < low:
            value = value + "x" * (low - len(value))
        if isinstance(high, int):
            value = value[:high]
        return value

    def _bounded(self, schema: dict[str, Any], preferred: float) -> float:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        value = preferred
        if isinstance(low, (int, float)):
            value = max(value, low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0))
        if isinstance(high, (int, float)):
            value = min(value, high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0))
        return value

    def _integer(self, schema: dict[str, Any], name: str, depth: int) -> int:
        verdict = self.verdict if "score" in name.lower() else None
        preferred = verdict[0] if verdict else 1 + stable_index(name + self.view.last_user, 5)
        return int(self._bounded(schema, preferred))

    def _number(self, schema: dict[str, Any], name: str, depth: int) -> float:
        verdict = self.verdict if "score" in name.lower() else None
        preferred = float(verdict[0]) if verdict else stable_index(name + self.view.last_user, 100) / 100
        return float(self._bounded(schema, preferred))

    def _boolean(self, schema: dict[str, Any], name: str, depth: int) -> bool:
        return stable_index(name + self.view.last_user, 2) == 1

    def _null(self, schema: dict[str, Any], name: str, depth: int) -> None:
        return None


def answer_json(body: dict[str, Any], schema: dict[str, Any]) -> str:
    """JSON text that validates against ``schema`` (object, array, string, integer, number,
    boolean, null, enum, const, required, $ref, anyOf/oneOf/allOf, min/max bounds)."""
    view = view_prompt(body)
    filler = _SchemaFiller(schema, view)
    return orjson.dumps(filler.fill(schema)).decode()


def answer_for(body: dict[str, Any], *, key: str, seed: int, off_list_rate: float) -> str:
    """The answer text, honouring an OpenAI ``response_format`` when one is given."""
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return answer_json(body, schema if isinstance(schema, dict) else {"type": "object"})
        if kind == "json_object":
            text = answer_text(body, key=key, seed=seed, off_list_rate=off_list_rate)
            if text.startswith("{"):
                return text
            return orjson.dumps({"answer": text}).decode()
    return answer_text(body, key=key, seed=seed, off_list_rate=off_list_rate)
