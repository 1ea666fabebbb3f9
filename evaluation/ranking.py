"""Composite score and ranking.

Per example, the composite is the weighted mean of the suite's weighted
metrics; if any of them could not be computed for that example, its composite
is NaN (never 0). Per configuration:

    composite = mean(per-example composite over scored examples) * coverage
    coverage  = scored examples / all examples

so failed requests and unscorable answers lower the composite through
coverage instead of being scored as empty answers. A configuration is
eligible to win only if it has a composite and breaks none of the gate's
floors and ceilings (failed-rate ceiling included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from evaluation.suite import Gate


def example_composite(metrics: dict[str, float], weights: dict[str, float],
                      lower_is_better: frozenset[str] | set[str] = frozenset()) -> float:
    """Weighted mean; a metric in `lower_is_better` (range [0, 1], e.g. bias)
    enters as 1 - value."""
    total_w = sum(weights.values())
    acc = 0.0
    for m, w in weights.items():
        v = metrics.get(m, math.nan)
        if v is None or math.isnan(v):
            return math.nan
        acc += w * ((1.0 - v) if m in lower_is_better else v)
    return acc / total_w


def config_summary(per_example: list[dict], n_total: int) -> dict[str, float]:
    """Composite, coverage and counts from per-example rows that carry
    `success` and `composite`."""
    n_failed = sum(1 for r in per_example if not r["success"])
    comps = np.array([r["composite"] for r in per_example if r["success"]], dtype=float)
    scored = comps[~np.isnan(comps)]
    coverage = scored.size / n_total if n_total else 0.0
    return {
        "n_examples": float(n_total),
        "n_scored": float(scored.size),
        "failed_rate": n_failed / n_total if n_total else math.nan,
        "coverage": coverage,
        "composite": float(scored.mean()) * coverage if scored.size else math.nan,
    }


@dataclass
class Ranked:
    config_id: str
    metrics: dict[str, float]
    eligible: bool
    reasons: list[str] = field(default_factory=list)
    rank: int = 0


def constraint_violations(metrics: dict[str, float], gate: Gate) -> list[str]:
    """Gate floors and ceilings that a *present* metric breaks. Missing
    metrics and too few examples are the gate's business (INCONCLUSIVE)."""
    out = []
    failed = metrics.get("failed_rate", math.nan)
    if not math.isnan(failed) and failed > gate.max_failed_rate:
        out.append(f"failed_rate {failed:.4g} > ceiling {gate.max_failed_rate}")
    for m, floor in gate.floors.items():
        v = metrics.get(m, math.nan)
        if not math.isnan(v) and v < floor:
            out.append(f"{m} {v:.4g} < floor {floor}")
    for m, ceiling in gate.ceilings.items():
        v = metrics.get(m, math.nan)
        if not math.isnan(v) and v > ceiling:
            out.append(f"{m} {v:.4g} > ceiling {ceiling}")
    return out


def eligibility(metrics: dict[str, float], gate: Gate) -> list[str]:
    """Why a configuration cannot win (empty: it can)."""
    reasons = []
    if math.isnan(metrics.get("composite", math.nan)):
        reasons.append("no scored examples (composite is NaN)")
    return reasons + constraint_violations(metrics, gate)


def rank_configs(results: dict[str, dict[str, float]], gate: Gate) -> list[Ranked]:
    """Eligible configurations first, by composite (descending); ties broken
    by lower p95 latency, then by config id for determinism."""
    ranked = []
    for cid, m in results.items():
        reasons = eligibility(m, gate)
        ranked.append(Ranked(cid, m, eligible=not reasons, reasons=reasons))

    def key(r: Ranked):
        comp = r.metrics.get("composite", math.nan)
        lat = r.metrics.get("latency_e2e_p95_s", math.nan)
        return (
            not r.eligible,
            -(comp if not math.isnan(comp) else -math.inf),
            lat if not math.isnan(lat) else math.inf,
            r.config_id,
        )

    ranked.sort(key=key)
    for i, r in enumerate(ranked, start=1):
        r.rank = i
    return ranked
