"""The gate's statistics with configuration-level metrics (issue item 4):
`bias` (and latency) are one value per configuration, added as a constant
to every example's composite; their own uncertainty (bootstrap replicates
over probes / probe requests) must reach the interval and the p-value.
And under successive halving the Holm family is every configuration of the
sweep, not only the survivors. Both through the real compare functions on
a run's stored scores."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.compare import holm_family, paired_comparisons
from evaluation.runstore import RunStore
from evaluation.suite import load_suite
from tests.conftest import write_suite

N = 40
EXTRA = """
bias: {categories: [gender]}
scoring: {scorers: [relevance, bias], weights: {relevance: 0.5, bias: 0.5}}
"""


def _store(run_id: str, cid: str, bias: float, bias_reps, relevance: float = 0.6) -> None:
    store = RunStore(run_id)
    rows = [{"example_id": f"e{i}", "success": True, "relevance": relevance + 0.01 * (i % 3),
             "composite": 0.5 * (relevance + 0.01 * (i % 3)) + 0.5 * (1 - bias)} for i in range(N)]  # fmt: skip
    store.write_scores(cid, rows)
    store.write_json(store.config_values_name(cid), {"bias": bias})
    store.write_json(store.replicates_name(cid), {"bias": list(bias_reps)})


def _sweep(*rows) -> dict:
    return {"leaderboard": [dict(r) for r in rows]}


def test_bias_uncertainty_reaches_the_composite_interval(tmp_path, llmops_home):
    suite = load_suite(write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1", extra=EXTRA))
    rng = np.random.default_rng(1)
    # Point estimates: the winner's bias 0.10 against the champion's 0.30, so
    # every example's composite is 0.10 higher; with no per-example noise in
    # the difference a noise-free bias would make the interval [0.10, 0.10].
    _store("r", "win", 0.10, np.clip(rng.normal(0.10, 0.15, 300), 0, 1))
    _store("r", "champ", 0.30, np.clip(rng.normal(0.30, 0.15, 300), 0, 1))
    sweep = _sweep({"config_id": "win", "rank": 1, "eligible": True})
    composite = next(c for c in paired_comparisons(suite, "r", sweep, "win", "champ") if c.metric == "composite")
    assert composite.diff == pytest.approx(0.10)
    assert composite.ci_low < 0.01 < 0.10 < composite.ci_high, composite  # the margin is no longer cleared
    assert composite.p_value > 0.01

    # Precise bias estimates on both sides: the same difference is clear.
    _store("r", "win", 0.10, np.full(300, 0.10))
    _store("r", "champ", 0.30, np.full(300, 0.30))
    composite = next(c for c in paired_comparisons(suite, "r", sweep, "win", "champ") if c.metric == "composite")
    assert composite.ci_low == pytest.approx(0.10) and composite.p_value < 0.01


def test_holm_family_under_halving_counts_the_dropped_configurations(tmp_path, llmops_home):
    suite = load_suite(write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1", extra=EXTRA))
    _store("h", "win", 0.10, np.full(300, 0.10), relevance=0.7)
    _store("h", "other", 0.30, np.full(300, 0.30), relevance=0.6)
    _store("h", "champ", 0.30, np.full(300, 0.30), relevance=0.6)
    sweep = _sweep({"config_id": "win", "rank": 1, "eligible": True},
                   {"config_id": "other", "rank": 2, "eligible": False},
                   *({"config_id": f"d{i}", "rank": None, "dropped": True} for i in range(3)),
                   {"config_id": "champ", "rank": None, "eligible": True})  # the baseline row
    assert holm_family(sweep, "champ") == ["win", "other", "d0", "d1", "d2"]
    composite = next(c for c in paired_comparisons(suite, "h", sweep, "win", "champ") if c.metric == "composite")
    assert composite.p_adjusted == pytest.approx(min(1.0, 5 * composite.p_value))
