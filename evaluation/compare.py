"""Paired comparison of two configurations' per-example results (the
winner against the champion) on the same examples, with Holm's adjustment
over the sweep; the statistics themselves are in evaluation.stats."""

from __future__ import annotations

import logging
import math

import numpy as np

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


def config_terms(suite: Suite, store: RunStore, challenger: str, champion: str) -> list:
    """The configuration-level weighted metrics (bias, latency) of the
    composite as stats.ConfigTerm, from each side's bootstrap replicates
    (written by the score stage). A side without replicates of a weighted
    configuration-level metric contributes no uncertainty for it."""
    from evaluation.scorers import metric_info, scorer_for_metric
    from evaluation.stats import ConfigTerm

    total = sum(suite.scoring.weights.values())
    sides = {}
    for cid in (challenger, champion):
        rows = store.scores(cid)
        reps = store.read_json(store.replicates_name(cid), {}) or {}
        scored = frozenset(r["example_id"] for r in rows
                           if r.get("success") and r.get("composite") is not None
                           and not math.isnan(float(r["composite"])))  # fmt: skip
        point = store.read_json(store.config_values_name(cid), {}) or {}
        sides[cid] = (reps, scored, point)
    terms = []
    for m, w in suite.scoring.weights.items():
        if not w or scorer_for_metric(m).level != "config":
            continue
        sign = 1.0 if metric_info(m).higher_is_better else -1.0
        deltas = []
        for cid in (challenger, champion):
            reps, _, point = sides[cid]
            r = np.asarray(reps.get(m, []), dtype=float)
            p = point.get(m)
            deltas.append(sign * (w / total) * (r - p) if r.size and p is not None and math.isfinite(p)
                          else np.zeros(0))  # fmt: skip
        terms.append(ConfigTerm(deltas[0], deltas[1], sides[challenger][1], sides[champion][1]))
    return terms


def holm_family(sweep: dict, champion: str) -> list[str]:
    """Every configuration of the sweep that competed against the champion:
    all candidates, the ineligible ones and those successive halving dropped
    included (the winner was selected among all of them)."""
    return [row["config_id"] for row in sweep["leaderboard"]
            if row["config_id"] != champion and (row.get("rank") is not None or row.get("dropped"))]  # fmt: skip


def paired_comparisons(suite: Suite, run_id: str, sweep: dict, winner: str, champion: str):
    """Winner vs champion on every weighted per-example metric and on the
    composite (with the uncertainty of its configuration-level metrics),
    plus Holm's adjustment of the composite p-value over every configuration
    of the sweep (holm_family): a configuration dropped by successive
    halving counts with p = 1."""
    from evaluation.scorers import metric_info, scorer_for_metric
    from evaluation.stats import holm, paired_compare

    g = suite.gate
    kw = dict(resamples=g.bootstrap_resamples, confidence=g.confidence, seed=g.seed)
    store = RunStore(run_id)
    champ_rows, winner_rows = store.scores(champion), store.scores(winner)
    out = []
    per_example_metrics = [m for m in suite.scoring.weights if scorer_for_metric(m).level == "example"]
    for metric in per_example_metrics:
        out.append(paired_compare(_values(winner_rows, metric), _values(champ_rows, metric), metric=metric,
                                  higher_is_better=metric_info(metric).higher_is_better, **kw))  # fmt: skip
    champ_comp = _values(champ_rows, "composite")

    def composite(cid: str, rows: list[dict]):
        return paired_compare(_values(rows, "composite"), champ_comp, metric="composite",
                              config_terms=config_terms(suite, store, cid, champion), **kw)  # fmt: skip

    out.append(composite(winner, winner_rows))
    dropped = {row["config_id"] for row in sweep["leaderboard"] if row.get("dropped")}
    p = {cid: 1.0 if cid in dropped else (out[-1].p_value if cid == winner else composite(cid, store.scores(cid)).p_value)
         for cid in holm_family(sweep, champion)}  # fmt: skip
    adjusted = holm(p)
    for c in out:
        c.p_adjusted = adjusted.get(winner) if c.metric == "composite" else None
    return out
