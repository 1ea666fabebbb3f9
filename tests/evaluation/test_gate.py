"""The gate table: PROMOTE / REJECT / INCONCLUSIVE at and around the
thresholds. INCONCLUSIVE never moves an alias (checked in test_registry and
the e2e test through the pipeline)."""

from __future__ import annotations

import math

import pytest

from evaluation.registry import INCONCLUSIVE, PROMOTE, REJECT, decide
from evaluation.stats import PairedResult
from evaluation.suite import Gate

GATE = Gate(min_improvement=0.02, alpha=0.05, min_scored_examples=10, max_failed_rate=0.2,
            floors={"relevance": 0.3}, ceilings={"latency_e2e_p95_s": 30})  # fmt: skip
OK = {"composite": 0.7, "relevance": 0.6, "latency_e2e_p95_s": 5.0, "failed_rate": 0.0, "n_scored": 40}


def cmp(ci_low, ci_high, p=0.001, n=40, diff=None):
    diff = (ci_low + ci_high) / 2 if diff is None else diff
    return PairedResult("composite", n, 0.7, 0.7 - diff, diff, ci_low, ci_high, p, 2 * p, 0.8, True, p_adjusted=p)


@pytest.mark.parametrize(
    ("metrics", "comparison", "outcome", "needle"),
    [
        (OK, cmp(0.02, 0.06), PROMOTE, "lower bound >= margin"),  # exactly at the threshold
        (OK, cmp(0.0199, 0.06), INCONCLUSIVE, "straddles the margin"),  # just below it
        (OK, cmp(0.03, 0.06, p=0.08), INCONCLUSIVE, "not significant"),  # better, not significant
        (OK, cmp(-0.05, 0.0199), REJECT, "whole interval is below the margin"),
        (OK, cmp(-0.01, 0.05), INCONCLUSIVE, "straddles"),  # A/A-like
        ({**OK, "relevance": math.nan}, cmp(0.03, 0.06), INCONCLUSIVE, "missing: relevance"),
        ({k: v for k, v in OK.items() if k != "latency_e2e_p95_s"}, cmp(0.03, 0.06), INCONCLUSIVE,
         "missing: latency_e2e_p95_s"),
        ({**OK, "n_scored": 9}, cmp(0.03, 0.06), INCONCLUSIVE, "9 scored examples < minimum 10"),
        (OK, cmp(0.03, 0.06, n=9), INCONCLUSIVE, "9 paired examples < minimum 10"),
        ({**OK, "relevance": 0.29}, cmp(0.03, 0.06), REJECT, "relevance 0.29 < floor 0.3"),
        ({**OK, "latency_e2e_p95_s": 31.0}, cmp(0.03, 0.06), REJECT, "> ceiling 30"),
        ({**OK, "failed_rate": 0.25}, cmp(0.03, 0.06), REJECT, "failed_rate 0.25 > ceiling 0.2"),
        (OK, None, INCONCLUSIVE, "no paired results"),
    ],
    ids=["at-threshold", "just-below", "better-not-significant", "clearly-worse", "aa-noise", "metric-nan",
         "metric-absent", "too-few-scored", "too-few-paired", "floor", "ceiling", "failed-rate", "no-pairs"],
)
def test_gate_table(metrics, comparison, outcome, needle):
    d = decide(metrics, comparison, GATE, champion_version="3")
    assert d.outcome == outcome, d.reasons
    assert any(needle in r for r in d.reasons), d.reasons


def test_first_promotion_needs_no_comparison_but_still_the_constraints():
    assert decide(OK, None, GATE, champion_version=None).outcome == PROMOTE
    assert decide({**OK, "n_scored": 3}, None, GATE, champion_version=None).outcome == INCONCLUSIVE
    assert decide({**OK, "relevance": 0.1}, None, GATE, champion_version=None).outcome == REJECT


def test_holm_adjusted_p_is_the_one_gated():
    c = cmp(0.03, 0.06, p=0.01)
    c.p_adjusted = 0.09  # significant alone, not after the family-wise correction
    assert decide(OK, c, GATE, champion_version="3").outcome == INCONCLUSIVE
