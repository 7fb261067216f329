"""Metadata key names shared by the assets that write them and the checks that read them.

Checks and assets share nothing but these names. Token keys follow dagster-openai's
``openai.{model}.*`` style, with the provider in front: ``anthropic.claude-sonnet-4.6.prompt_tokens``.
"""

from __future__ import annotations

# Submit asset
ITEM_COUNT = "item_count"
BATCH_IDS = "batch_ids"
ESTIMATED_COST_USD = "estimated_cost_usd"
ESTIMATED_SYNC_EQUIVALENT_USD = "estimated_sync_equivalent_usd"
ESTIMATED_INPUT_TOKENS = "estimated_input_tokens"

# Progress observations (completion sensor)
BATCH_STATUS = "batch_status"
PROGRESS_COMPLETED = "progress_completed"
PROGRESS_FAILED = "progress_failed"
PROGRESS_TOTAL = "progress_total"

# Results asset
ITEMS_TOTAL = "items_total"
SUCCESS_RATE = "success_rate"
COST_USD = "cost_usd"  # a float, so the UI plots it across partitions
COST_USD_EXACT = "cost_usd_exact"  # the same amount as an exact decimal string (checks compare this)
SYNC_EQUIVALENT_USD = "sync_equivalent_usd"
SAVINGS_USD = "savings_usd"
SAVINGS_PCT = "savings_pct"
RESULTS_PATH = "results_path"
SUMMARY = "summary"
PROMOTED_ITEMS = "promoted_items"
PROMOTION_EXTRA_COST_USD = "promotion_extra_cost_usd"
PAID_TWICE_USD = "paid_twice_usd"
RETRIED_ITEMS = "retried_items"
FAILURES_BY_REASON = "failures_by_reason"  # a table: status, reason, items
ROW_COUNT = "dagster/row_count"  # Dagster's standard keys: the UI shows them on the asset's page
COLUMN_SCHEMA = "dagster/column_schema"


def outcome_count(kind: str) -> str:
    """``items_succeeded``, ``items_failed``, ``items_invalid_output``..."""
    return f"items_{kind}"


def token_key(provider: str, model: str, field: str) -> str:
    """``openai.gpt-5.4-mini.prompt_tokens`` (fields: calls, prompt_tokens, cached_tokens, completion_tokens,
    total_tokens); the prefix is the model's provider (``openai``, ``anthropic``, ``gemini``)."""
    return f"{provider}.{model}.{field}"


# daily_invoice (dagster_layer/invoice.py); it also writes COST_USD, COST_USD_EXACT, SYNC_EQUIVALENT_USD,
# SAVINGS_USD, SAVINGS_PCT, PAID_TWICE_USD and SUMMARY (the invoice as a markdown table).
INVOICE_PROMOTION_EXTRA_USD = "promotion_extra_usd"  # the sync premium on promoted attempts plus paid twice
INVOICE_RETRY_EXTRA_USD = "retry_extra_usd"  # the sync premium on retries plus attempts billed for unused answers
INVOICE_CHART = "chart"  # markdown with the PNG of spend by workload inlined (base64)
INVOICE_CHART_PATH = "chart_path"  # the same PNG as a file under the results folder
