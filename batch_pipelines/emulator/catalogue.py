"""The models the emulator serves, per surface."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    owned_by: str
    kind: str  # "chat" or "embedding"
    dimensions: int = 0  # native embedding size
    display_name: str = ""


OPENAI_SURFACE_MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("gpt-5.4", "openai", "chat"),
    ModelEntry("gpt-5.4-mini", "openai", "chat"),
    ModelEntry("text-embedding-3-small", "openai", "embedding", 1536),
    ModelEntry("text-embedding-3-large", "openai", "embedding", 3072),
    ModelEntry("gemini-3-flash", "google", "chat"),
    ModelEntry("gemini-3.1-pro", "google", "chat"),
    ModelEntry("gemini-embedding-001", "google", "embedding", 768),
    ModelEntry("deepseek-v3.2", "deepseek", "chat"),
)

# The price book spells Anthropic versions with dots, the vendor with dashes: accept both.
ANTHROPIC_MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("claude-opus-4.7", "anthropic", "chat", display_name="Claude Opus 4.7"),
    ModelEntry("claude-sonnet-4.6", "anthropic", "chat", display_name="Claude Sonnet 4.6"),
    ModelEntry("claude-haiku-4.5", "anthropic", "chat", display_name="Claude Haiku 4.5"),
    ModelEntry("claude-opus-4-7", "anthropic", "chat", display_name="Claude Opus 4.7"),
    ModelEntry("claude-sonnet-4-6", "anthropic", "chat", display_name="Claude Sonnet 4.6"),
    ModelEntry("claude-haiku-4-5", "anthropic", "chat", display_name="Claude Haiku 4.5"),
)
ANTHROPIC_MODEL_IDS = frozenset(m.id for m in ANTHROPIC_MODELS)

DEFAULT_EMBEDDING_DIMENSIONS = 1536
_EMBEDDING_DIMENSIONS = {m.id: m.dimensions for m in OPENAI_SURFACE_MODELS if m.kind == "embedding"}


def native_dimensions(model: str) -> int:
    return _EMBEDDING_DIMENSIONS.get(model, DEFAULT_EMBEDDING_DIMENSIONS)
