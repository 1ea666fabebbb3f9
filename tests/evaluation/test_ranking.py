"""Composite score, per-configuration summary and ranking with the gate."""

from __future__ import annotations

import math

import pytest

from evaluation.ranking import config_summary, eligibility, example_composite, rank_configs
from evaluation.suite import Gate

WEIGHTS = {"relevance": 0.45, "groundedness": 0.45, "latency": 0.10}


# --------------------------------------------------------------------------- #
# example_composite
# --------------------------------------------------------------------------- #


def test_example_composite_weighted_mean():
    m = {"relevance": 0.8, "groundedness": 0.6, "latency": 1.0}
    assert example_composite(m, WEIGHTS) == pytest.approx(0.45 * 0.8 + 0.45 * 0.6 + 0.10 * 1.0)
    # Weights need not sum to 1: the mean is normalised by their total.
    assert example_composite({"a": 1.0, "b": 0.0}, {"a": 3.0, "b": 1.0}) == pytest.approx(0.75)
    # Metrics that are not weighted are ignored, even if NaN.
    assert example_composite({"a": 0.5, "other": math.nan}, {"a": 2.0}) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", ["relevance", "groundedness", "latency"])
def test_example_composite_nan_if_any_weighted_metric_nan(bad):
    m = {"relevance": 0.8, "groundedness": 0.6, "latency": 1.0}
    m[bad] = math.nan
    assert math.isnan(example_composite(m, WEIGHTS))


def test_example_composite_nan_if_weighted_metric_missing_or_none():
    assert math.isnan(example_composite({"relevance": 0.8, "groundedness": 0.6}, WEIGHTS))
    assert math.isnan(example_composite({"relevance": 0.8, "groundedness": None, "latency": 1.0}, WEIGHTS))


def test_example_composite_zero_weight_nan_still_nan():
    """A weighted metric is required even at weight 0 (it is in the weights)."""
    assert math.isnan(example_composite({"a": 1.0, "b": math.nan}, {"a": 1.0, "b": 0.0}))


# --------------------------------------------------------------------------- #
# config_summary
# --------------------------------------------------------------------------- #


def _rows(composites: list[float | None]) -> list[dict]:
    """None = a failed request."""
    return [
        {"success": c is not None, "composite": math.nan if c is None else c}
        for c in composites
    ]


def test_config_summary_all_ok():
    s = config_summary(_rows([0.8, 0.6, 0.7, 0.9]), 4)
    assert s["n_examples"] == 4.0
    assert s["n_scored"] == 4.0
    assert s["failed_rate"] == 0.0
    assert s["coverage"] == 1.0
    assert s["composite"] == pytest.approx(0.75)


def test_failed_requests_lower_coverage_and_composite():
    ok = config_summary(_rows([0.8, 0.8, 0.8, 0.8]), 4)
    failed = config_summary(_rows([0.8, 0.8, None, None]), 4)
    assert failed["failed_rate"] == pytest.approx(0.5)
    assert failed["coverage"] == pytest.approx(0.5)
    assert failed["n_scored"] == 2.0
    # The mean over scored examples is the same, but coverage scales it down.
    assert failed["composite"] == pytest.approx(0.8 * 0.5)
    assert failed["composite"] < ok["composite"]


def test_unscorable_answers_lower_coverage_but_are_not_failures():
    s = config_summary(_rows([0.8, math.nan, 0.6, math.nan]), 4)
    assert s["failed_rate"] == 0.0
    assert s["n_scored"] == 2.0
    assert s["coverage"] == pytest.approx(0.5)
    assert s["composite"] == pytest.approx(0.7 * 0.5)


def test_failed_request_composite_is_ignored_even_if_set():
    """A failed request is never scored, whatever its row carries."""
    rows = [{"success": True, "composite": 0.6}, {"success": False, "composite": 1.0}]
    s = config_summary(rows, 2)
    assert s["n_scored"] == 1.0
    assert s["composite"] == pytest.approx(0.6 * 0.5)


def test_all_failed_gives_nan_composite():
    s = config_summary(_rows([None, None, None]), 3)
    assert math.isnan(s["composite"])
    assert s["failed_rate"] == 1.0
    assert s["coverage"] == 0.0
    assert s["n_scored"] == 0.0


def test_missing_rows_count_against_coverage():
    """n_total is the dataset size: examples with no row at all are uncovered."""
    s = config_summary(_rows([0.9, 0.9]), 4)
    assert s["coverage"] == pytest.approx(0.5)
    assert s["composite"] == pytest.approx(0.45)


# --------------------------------------------------------------------------- #
# rank_configs
# --------------------------------------------------------------------------- #


def _m(composite, failed_rate=0.0, n_scored=50, p95=1.0, **extra) -> dict:
    return {"composite": composite, "failed_rate": failed_rate, "n_scored": float(n_scored),
            "latency_e2e_p95_s": p95, **extra}


GATE = Gate(max_failed_rate=0.2, min_scored_examples=10, floors={"relevance": 0.3})


def test_rank_orders_eligible_by_composite():
    results = {
        "mid": _m(0.6, relevance=0.7),
        "top": _m(0.8, relevance=0.7),
        "low": _m(0.4, relevance=0.7),
    }
    ranked = rank_configs(results, GATE)
    assert [r.config_id for r in ranked] == ["top", "mid", "low"]
    assert [r.rank for r in ranked] == [1, 2, 3]
    assert all(r.eligible and r.reasons == [] for r in ranked)


def test_ineligible_after_eligible_regardless_of_composite():
    results = {
        "too-many-failures": _m(0.99, failed_rate=0.5, relevance=0.9),
        "below-floor": _m(0.95, relevance=0.1),
        "above-ceiling": _m(0.96, relevance=0.9, latency_e2e_p95_s=50.0),
        "ok-low": _m(0.2, relevance=0.5),
        "ok-high": _m(0.3, relevance=0.5),
        "all-failed": _m(math.nan, failed_rate=1.0, n_scored=0, relevance=math.nan),
    }
    gate = Gate(max_failed_rate=0.2, floors={"relevance": 0.3}, ceilings={"latency_e2e_p95_s": 30})
    ranked = rank_configs(results, gate)
    order = [r.config_id for r in ranked]
    assert order[:2] == ["ok-high", "ok-low"]
    # Ineligible ones follow, themselves by composite, NaN last.
    assert order[2:] == ["too-many-failures", "above-ceiling", "below-floor", "all-failed"]
    by_id = {r.config_id: r for r in ranked}
    assert by_id["ok-high"].eligible and by_id["ok-low"].eligible
    for cid in order[2:]:
        assert not by_id[cid].eligible
        assert by_id[cid].reasons

    (reason,) = by_id["too-many-failures"].reasons
    assert "failed_rate" in reason and "0.5" in reason and "0.2" in reason
    (reason,) = by_id["below-floor"].reasons
    assert "relevance" in reason and "floor 0.3" in reason and "0.1" in reason
    (reason,) = by_id["above-ceiling"].reasons
    assert "latency_e2e_p95_s 50 > ceiling 30" in reason
    reasons = " | ".join(by_id["all-failed"].reasons)
    assert "composite" in reasons
    assert "failed_rate" in reasons


def test_missing_metrics_and_few_rows_are_left_to_the_gate():
    """They make the gate INCONCLUSIVE (tests/evaluation/test_gate.py); they
    do not silently exclude a configuration from the ranking."""
    assert eligibility(_m(0.5, n_scored=3, relevance=math.nan), GATE) == []


def test_eligibility_boundaries_are_inclusive():
    gate = Gate(max_failed_rate=0.2, min_scored_examples=10, floors={"groundedness": 0.5})
    assert eligibility(_m(0.5, failed_rate=0.2, n_scored=10, groundedness=0.5), gate) == []
    assert eligibility(_m(0.5, failed_rate=0.2001, n_scored=10, groundedness=0.5), gate)
    assert eligibility(_m(0.5, failed_rate=0.2, n_scored=10, groundedness=0.4999), gate)


def test_ties_broken_by_p95_latency_then_id():
    gate = Gate(max_failed_rate=0.2, min_scored_examples=1)
    results = {
        "b-slow": _m(0.7, p95=3.0),
        "a-fast": _m(0.7, p95=1.0),
        "d-same": _m(0.7, p95=2.0),
        "c-same": _m(0.7, p95=2.0),
        "e-nolat": _m(0.7, p95=math.nan),
    }
    assert [r.config_id for r in rank_configs(results, gate)] == ["a-fast", "c-same", "d-same", "b-slow", "e-nolat"]


def test_summary_feeds_ranking():
    """End to end: summaries from per-example rows rank as expected."""
    gate = Gate(max_failed_rate=0.25, min_scored_examples=2)
    n = 4
    results = {
        "flaky-but-strong": config_summary(_rows([1.0, 1.0, None, None]), n),  # failed_rate 0.5
        "steady": config_summary(_rows([0.4, 0.4, 0.4, 0.4]), n),
        "dead": config_summary(_rows([None] * n), n),
    }
    assert results["flaky-but-strong"]["composite"] > results["steady"]["composite"]
    ranked = rank_configs(results, gate)
    assert [r.config_id for r in ranked] == ["steady", "flaky-but-strong", "dead"]
    assert ranked[0].eligible and not ranked[1].eligible and not ranked[2].eligible
