"""Paired comparison of two configurations' per-example results (the
winner against the champion) on the same examples, with Holm's adjustment
over the sweep; the statistics themselves are in evaluation.stats."""

from __future__ import annotations

import logging
import math

from evaluation.runstore import RunStore
from evaluation.suite import Suite

log = logging.getLogger(__name__)


def _values(rows: list[dict], metric: str) -> dict[str, float]:
    """Per-example values keyed by example id. For the composite an example
    that failed or could not be scored counts 0, exactly as it does in the
    configuration's coverage-weighted composite, so the mean of these values
    *is* that composite; other metrics pair only examples scored on both sides."""
    out = {}
    for r in rows:
        v = r.get(metric)
        v = math.nan if v is None else float(v)
        if metric == "composite" and math.isnan(v):
            v = 0.0
        out[r["example_id"]] = v
    return out


def paired_comparisons(suite: Suite, run_id: str, sweep: dict, winner: str, champion: str):
    """Winner vs champion on every weighted metric and the composite, plus
    Holm's adjustment of the composite p-value over all eligible candidates
    (each was, in effect, tested against the champion)."""
    from evaluation.scorers import scorer_for_metric
    from evaluation.stats import holm, paired_compare

    g = suite.gate
    kw = dict(resamples=g.bootstrap_resamples, confidence=g.confidence, seed=g.seed)
    store = RunStore(run_id)
    champ_rows, winner_rows = store.scores(champion), store.scores(winner)
    out = []
    per_example_metrics = [m for m in suite.scoring.weights if scorer_for_metric(m).level == "example"]
    for metric in [*per_example_metrics, "composite"]:
        hib = True if metric == "composite" else scorer_for_metric(metric).higher_is_better
        out.append(paired_compare(_values(winner_rows, metric), _values(champ_rows, metric),
                                  metric=metric, higher_is_better=hib, **kw))  # fmt: skip
    eligible = [row["config_id"] for row in sweep["leaderboard"] if row["rank"] is not None and row["eligible"]]
    champ_comp = _values(champ_rows, "composite")
    p = {cid: paired_compare(_values(store.scores(cid), "composite"), champ_comp, metric="composite", **kw).p_value
         for cid in eligible}  # fmt: skip
    adjusted = holm(p)
    for c in out:
        c.p_adjusted = adjusted.get(winner) if c.metric == "composite" else None
    return out
