"""The cost engine reproduces PRICES.md exactly and stacks discounts in the documented order."""

from decimal import Decimal

import pytest

from batch_pipelines.core.errors import ConfigError, UnknownModelError
from batch_pipelines.core.pricing import Discounts, PriceBook
from batch_pipelines.core.requests import Lane
from batch_pipelines.core.usage import Usage

M = 1_000_000
BOOK = PriceBook.default()


def test_gpt_5_4_worked_example():
    """gpt-5.4, 30M in + 10M out: sync $225.00, batch $112.50."""
    result = BOOK.cost("gpt-5.4", Usage(input_tokens=30 * M, output_tokens=10 * M), Lane.BATCH)
    assert result.sync_equivalent_usd == Decimal("225.00")
    assert result.cost_usd == Decimal("112.50")
    assert result.savings_usd == Decimal("112.50")
    assert result.savings_pct == Decimal(50)


@pytest.mark.parametrize(
    ("lane", "structural", "expected"),
    [
        (Lane.SYNC, "0", "270.00"),
        (Lane.SYNC, "0.15", "229.50"),
        (Lane.BATCH, "0", "135.00"),
        (Lane.BATCH, "0.15", "114.75"),
    ],
)
def test_claude_sonnet_worked_examples(lane, structural, expected):
    """claude-sonnet-4.6, 40M in + 10M out, every row of the PRICES.md table, exact (114.75 not 114.90)."""
    usage = Usage(input_tokens=40 * M, output_tokens=10 * M)
    result = BOOK.cost("claude-sonnet-4.6", usage, lane, Discounts(structural=Decimal(structural)))
    assert result.cost_usd == Decimal(expected)


@pytest.mark.parametrize(
    ("model", "sync_in", "sync_out", "batch_in", "batch_out"),
    [
        ("claude-opus-4.7", "5.00", "25.00", "2.50", "12.50"),
        ("claude-sonnet-4.6", "3.00", "15.00", "1.50", "7.50"),
        ("gpt-5.4", "2.50", "15.00", "1.25", "7.50"),
        ("gemini-3.1-pro", "2.00", "12.00", "1.00", "6.00"),
        ("deepseek-v3.2", "0.14", "0.28", "0.07", "0.14"),
    ],
)
def test_default_book_carries_the_reference_prices(model, sync_in, sync_out, batch_in, batch_out):
    """The shipped price book holds the PRICES.md table, cache reads at 0.1x the lane's input."""
    price = BOOK.price(model)
    assert (price.sync.input, price.sync.output) == (Decimal(sync_in), Decimal(sync_out))
    assert (price.batch.input, price.batch.output) == (Decimal(batch_in), Decimal(batch_out))
    assert price.sync.cache_read == price.sync.input / 10
    assert price.batch.cache_read == price.batch.input / 10


def test_default_book_has_siblings_and_embedding_models():
    """gpt-5.4-mini, gemini-3-flash and the embedding models are priced too."""
    for model in (
        "gpt-5.4-mini",
        "gemini-3-flash",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "gemini-embedding-001",
    ):
        assert model in BOOK
    assert BOOK.price("text-embedding-3-small").kind == "embedding"


def test_cached_input_bills_at_the_cache_read_rate_of_the_lane():
    """1M cached of 2M input on gpt-5.4 batch: 1M x 1.25 + 1M x 0.125 = $1.375."""
    usage = Usage(input_tokens=2 * M, cached_input_tokens=1 * M)
    result = BOOK.cost("gpt-5.4", usage, Lane.BATCH)
    assert result.cost_usd == Decimal("1.375")
    assert result.sync_equivalent_usd == Decimal("2.75")


def test_cache_writes_bill_at_the_cache_write_rate():
    """Anthropic 5-minute cache writes cost 1.25x input: 1M on sonnet sync = $3.75."""
    result = BOOK.cost("claude-sonnet-4.6", Usage(input_tokens=M, cache_write_tokens=M), Lane.SYNC)
    assert result.cost_usd == Decimal("3.75")


def test_credit_bonus_divides_the_cost_last():
    """A 25% prepaid bonus divides the stacked cost by 1.25, in either lane."""
    usage = Usage(input_tokens=40 * M, output_tokens=10 * M)
    result = BOOK.cost("claude-sonnet-4.6", usage, Lane.BATCH, Discounts(Decimal("0.15"), Decimal("0.25")))
    assert result.cost_usd == Decimal("114.75") / Decimal("1.25")
    assert result.sync_equivalent_usd == Decimal("229.50") / Decimal("1.25")


def test_costs_are_exact_decimals_for_tiny_usage():
    """One token of gpt-5.4-mini batch input is $0.000000375, exactly."""
    assert BOOK.cost("gpt-5.4-mini", Usage(input_tokens=1), Lane.BATCH).cost_usd == Decimal("0.000000375")


def test_unknown_model_lists_the_known_ones():
    """An unknown model is an error naming it and every model the book knows."""
    with pytest.raises(UnknownModelError) as info:
        BOOK.cost("gpt-9", Usage(input_tokens=1))
    assert "gpt-9" in str(info.value) and "gpt-5.4" in str(info.value) and "claude-sonnet-4.6" in str(info.value)


@pytest.mark.parametrize("bad", ["-0.1", "1", "1.5"])
def test_structural_discount_outside_unit_interval_is_refused(bad):
    """A structural discount must lie in [0, 1)."""
    with pytest.raises(ConfigError, match="structural discount"):
        Discounts(structural=Decimal(bad))


def test_user_file_overrides_and_extends_the_default_book(tmp_path):
    """A user's YAML replaces a model's rates and adds new models; the rest stay."""
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n"
        "  gpt-5.4:\n    sync: {input: '2.00', output: '10.00'}\n    batch: {input: '1.00', output: '5.00'}\n"
        "  my-model:\n    provider: vllm\n    sync: {input: '1', output: '1'}\n    batch: "
        "{input: '0.5', output: '0.5'}\n"
    )
    book = PriceBook.default(path)
    assert book.price("gpt-5.4").sync.input == Decimal("2.00")
    assert book.price("gpt-5.4").batch.cache_read == Decimal("0.1")  # defaulted to 0.1x input
    assert book.price("my-model").provider == "vllm"
    assert book.price("claude-opus-4.7").sync.input == Decimal("5.00")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [1, 2]", "top-level 'models:'"),
        ("models:\n  m:\n    sync: {input: '1', output: '1'}\n", "no 'batch' rates"),
        ("models:\n  m:\n    sync: {input: 'x', output: '1'}\n    batch: {input: '1', output: '1'}\n", "not a number"),
        ("models:\n  m:\n    sync: {input: '-1', output: '1'}\n    batch: {input: '1', output: '1'}\n", "non-negative"),
        ("models:\n  m:\n    sync: {input: '1', outptu: '1'}\n    batch: {input: '1', output: '1'}\n", "lacks output"),
        ("models: {m: [", "not valid YAML"),
    ],
)
def test_broken_price_book_names_the_problem(tmp_path, text, message):
    """A broken price book file fails with a message that says what is wrong."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        PriceBook.load(path)


def test_the_book_carries_each_models_encoding():
    """Embedding models count in cl100k; a user's entry may name its encoding; a bad name is refused."""
    book = PriceBook.default(
        {
            "models": {
                "my-finetune": {
                    "encoding": "cl100k_base",
                    "sync": {"input": "1", "output": "1"},
                    "batch": {"input": "1", "output": "1"},
                }
            }
        }
    )
    assert book.encoding("text-embedding-3-small") == "cl100k_base"
    assert book.encoding("gpt-5.4-mini") == "o200k_base"
    assert book.encoding("my-finetune") == "cl100k_base"
    assert book.encoding("not-in-the-book") == "o200k_base"
    bad = {
        "models": {
            "m": {"encoding": "p50k", "sync": {"input": "1", "output": "1"}, "batch": {"input": "1", "output": "1"}}
        }
    }
    with pytest.raises(ConfigError, match="encoding 'p50k'"):
        PriceBook.from_mapping(bad)


def _usage_columns(rows):
    import numpy as np

    names = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
    return {name: np.array([getattr(u, name) for u in rows], dtype=np.int64) for name in names}


@pytest.mark.parametrize(
    "discounts",
    [Discounts(), Discounts(structural=Decimal("0.15")), Discounts(credit_bonus=Decimal("0.3"))],
    ids=["list", "structural", "credit-bonus"],
)
@pytest.mark.parametrize("model", ["gpt-5.4-mini", "claude-sonnet-4.6", "text-embedding-3-small", "gemini-3-flash"])
def test_column_costs_equal_the_scalar_price_book_to_the_femto_dollar(model, discounts):
    """cost_columns gives, row by row, the scalar cost() rounded half-even to 1e-15 USD, in both lanes."""
    import random

    rng = random.Random(7)
    rows = []
    for _ in range(300):
        total = rng.randint(0, 2_000_000)
        cached = rng.randint(0, total)
        written = rng.randint(0, total - cached)
        rows.append(Usage(total, cached, written, rng.randint(0, 50_000)))
    book = PriceBook.default()
    for lane in (Lane.BATCH, Lane.SYNC):
        cost, sync = book.cost_columns(model, _usage_columns(rows), lane, discounts)
        for i, usage in enumerate(rows):
            scalar = book.cost(model, usage, lane, discounts)
            assert Decimal(int(cost[i])).scaleb(-15) == scalar.cost_usd.quantize(Decimal("1e-15"))
            assert Decimal(int(sync[i])).scaleb(-15) == scalar.sync_equivalent_usd.quantize(Decimal("1e-15"))
