"""Seeded generators of realistic input for the four workloads (plain pandas, no Dagster).

The same (partition, seed, size) always gives the same rows, so demos and tests are repeatable.
"""

from __future__ import annotations

import random
import zlib

import pandas as pd

TEAMS = ["payments", "search", "checkout", "mobile", "data-platform", "growth", "identity", "infra"]
EVENTS = [
    ("deploy", "deployed {svc} v{major}.{minor}.{patch} to production"),
    ("incident", "paged for elevated 5xx on {svc}; mitigated in {mins} minutes"),
    ("pr_merged", "merged PR #{num}: {change} in {svc}"),
    ("alert", "latency p95 on {svc} crossed {ms} ms for {mins} minutes"),
    ("experiment", "experiment {exp} on {svc} reached significance (+{lift}% conversion)"),
    ("oncall", "on-call handover for {svc}: {num} open tickets"),
]
SERVICES = ["api-gateway", "ledger", "pricing", "notifications", "auth", "search-indexer", "cart", "feature-store"]
CHANGES = [
    "retry budget for upstream calls",
    "new cache key layout",
    "schema migration",
    "feature flag cleanup",
    "timeout tuning",
]

LABELS = ["billing", "bug", "account_access", "feature_request", "shipping", "other"]
TICKET_TEMPLATES = {
    "billing": [
        "I was charged twice for my {plan} plan this month",
        "My invoice shows the wrong billing amount after the upgrade",
    ],
    "bug": [
        "The export button crashes the app with a bug on {os}",
        "Found a bug: search results are empty after the last update on {os}",
    ],
    "account_access": [
        "I cannot log in to my account since I reset my password",
        "Two-factor codes never arrive, I am locked out of my account",
    ],
    "feature_request": [
        "Feature request: please add dark mode to the {os} app",
        "Could you add a feature to export reports as CSV?",
    ],
    "shipping": [
        "My order has not arrived and shipping tracking stopped updating",
        "The shipping address on order {num} is wrong",
    ],
    "other": ["Do you have an office in Lisbon?", "Just wanted to say thanks to the support team"],
}
TOPICS = [
    "Dagster assets are declarative data products with lineage and partitions.",
    "Batch inference trades latency for a fifty percent discount on tokens.",
    "Parquet stores columns with compression and fixed size lists for vectors.",
    "PostgreSQL row locks let two workers reconcile the same batch safely.",
    "Prompt caching bills repeated prefixes at a tenth of the input price.",
    "Embeddings map text to vectors where similar texts are close together.",
    "A deadline watchdog promotes late work to the synchronous lane.",
    "Idempotent submission records an intent before any provider call.",
]
EVAL_CASES = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What does HTTP 429 mean?", "HTTP 429 means too many requests; the client should back off and retry later."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice."),
    ("What does a batch API trade for lower price?", "A batch API trades latency, up to 24 hours, for a lower price."),
]


def _rng(partition: str, seed: int, salt: str) -> random.Random:
    return random.Random(zlib.crc32(f"{salt}:{partition}:{seed}".encode()))


def activity_by_group(partition: str, *, groups: int = 8, records_per_group: int = 12, seed: int = 7) -> pd.DataFrame:
    """One row per team: the day's activity records as text, ready for a report."""
    rng = _rng(partition, seed, "activity")
    rows = []
    for g in range(groups):
        team = TEAMS[g % len(TEAMS)] + ("" if g < len(TEAMS) else f"-{g // len(TEAMS)}")
        lines = []
        for r in range(records_per_group):
            kind, template = rng.choice(EVENTS)
            text = template.format(
                svc=rng.choice(SERVICES),
                major=rng.randint(1, 9),
                minor=rng.randint(0, 30),
                patch=rng.randint(0, 9),
                mins=rng.randint(3, 90),
                num=rng.randint(100, 9999),
                change=rng.choice(CHANGES),
                ms=rng.randint(200, 2500),
                exp=f"exp-{rng.randint(10, 99)}",
                lift=round(rng.uniform(0.2, 4.5), 1),
            )
            lines.append(f"{partition} {8 + r // 2:02d}:{rng.randint(0, 59):02d} [{kind}] {text}.")
        rows.append({"group_id": team, "n_records": records_per_group, "activity": "\n".join(lines)})
    return pd.DataFrame(rows)


def support_tickets(partition: str, *, rows: int = 200, seed: int = 7) -> pd.DataFrame:
    """Support tickets with their true label (kept for evaluation, not sent to the model)."""
    rng = _rng(partition, seed, "tickets")
    out = []
    for i in range(rows):
        label = rng.choice(LABELS)
        text = rng.choice(TICKET_TEMPLATES[label]).format(
            plan=rng.choice(["Pro", "Team", "Enterprise"]),
            os=rng.choice(["iOS", "Android", "Windows"]),
            num=rng.randint(1000, 99999),
        )
        out.append(
            {
                "ticket_id": f"T{partition.replace('-', '')}-{i:05d}",
                "subject": text.split(",")[0][:60],
                "body": text,
                "true_label": label,
            }
        )
    return pd.DataFrame(out)


def corpus_chunks(shard: str, *, rows: int = 200, seed: int = 7) -> pd.DataFrame:
    """Text chunks of a corpus shard, each two or three topic sentences with a little noise."""
    rng = _rng(shard, seed, "corpus")
    out = []
    for i in range(rows):
        sentences = rng.sample(TOPICS, k=rng.randint(2, 3))
        out.append(
            {
                "chunk_id": f"{shard}-{i:06d}",
                "doc_id": f"doc-{rng.randint(1, rows // 4 + 1):05d}",
                "text": " ".join(sentences),
            }
        )
    return pd.DataFrame(out)


def eval_cases(partition: str, *, rows: int = 60, seed: int = 7) -> pd.DataFrame:
    """Model answers beside their references: some right, some paraphrased, some wrong."""
    rng = _rng(partition, seed, "evals")
    out = []
    for i in range(rows):
        question, reference = rng.choice(EVAL_CASES)
        quality = rng.random()
        if quality < 0.5:
            answer = reference
        elif quality < 0.8:
            answer = reference.split(" ", 2)[-1].capitalize()
        else:
            answer = rng.choice(EVAL_CASES)[1] if rng.random() < 0.5 else "I am not sure."
        out.append({"case_id": f"case-{i:05d}", "question": question, "answer": answer, "reference": reference})
    return pd.DataFrame(out)
