"""A local provider that speaks the OpenAI and Anthropic batch and sync wire protocols.

It answers deterministically, injects faults from a seeded profile, runs on a virtual clock and
keeps its state on disk. Start it with ``batch-pipelines emulator`` or, in tests and scripts,
with ``batch_pipelines.emulator.testing.run_emulator``. See docs/emulator.md.
"""

# Where the tools that run on the emulator (make dev's code location, the deferred CLI's --emulator)
# read its base URL from; set by ``batch-pipelines dev``. Nothing falls back to it silently.
EMULATOR_URL_ENV = "BATCH_PIPELINES_EMULATOR_URL"
