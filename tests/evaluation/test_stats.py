"""Paired statistics on constructed data with known answers."""

from __future__ import annotations

import numpy as np

from evaluation.stats import holm, paired_compare


def _pair(n, shift, noise, seed):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.9, n)
    champion = {f"e{i}": float(v) for i, v in enumerate(base)}
    challenger = {f"e{i}": float(v + shift + rng.normal(0, noise)) for i, v in enumerate(base)}
    return challenger, champion


def test_real_improvement_is_detected_with_an_interval_around_it():
    a, b = _pair(48, 0.05, 0.03, 1)
    r = paired_compare(a, b, metric="composite", resamples=2000, seed=0)
    assert r.n == 48 and 0.03 < r.diff < 0.07
    assert r.ci_low < r.diff < r.ci_high and r.ci_low > 0
    assert r.p_value < 0.01 and r.effect_size > 1


def test_no_difference_is_not_significant_and_the_interval_covers_zero():
    a, b = _pair(48, 0.0, 0.03, 2)
    r = paired_compare(a, b, metric="composite", seed=0)
    assert r.ci_low < 0 < r.ci_high and r.p_value > 0.05


def test_identical_results_give_p_one_and_zero_width_interval():
    a, _ = _pair(10, 0.0, 0.0, 3)
    r = paired_compare(a, dict(a), metric="composite")
    assert (r.diff, r.ci_low, r.ci_high, r.p_value, r.effect_size) == (0.0, 0.0, 0.0, 1.0, 0.0)


def test_lower_is_better_metrics_are_sign_flipped():
    champion = {f"e{i}": 2.0 + 0.01 * i for i in range(20)}
    challenger = {k: v - 0.5 for k, v in champion.items()}  # faster
    r = paired_compare(challenger, champion, metric="latency_s", higher_is_better=False, seed=0)
    assert r.diff > 0 and r.ci_low > 0 and r.p_value < 0.01


def test_pairs_only_by_example_id_and_only_finite_values():
    a = {"x": 1.0, "y": 2.0, "z": float("nan"), "only-a": 5.0}
    b = {"x": 0.5, "y": 1.0, "z": 1.0, "only-b": 0.0}
    r = paired_compare(a, b, metric="m", seed=0)
    assert r.n == 2 and r.diff == 0.75


def test_seeded_bootstrap_is_reproducible():
    a, b = _pair(30, 0.02, 0.05, 4)
    r1 = paired_compare(a, b, metric="m", seed=7)
    r2 = paired_compare(a, b, metric="m", seed=7)
    assert (r1.ci_low, r1.ci_high, r1.p_value) == (r2.ci_low, r2.ci_high, r2.p_value)


def test_holm_step_down():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adj == {"a": 0.03, "c": 0.06, "b": 0.06}  # 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert holm({"only": 0.04}) == {"only": 0.04}
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}
