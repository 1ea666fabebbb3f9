"""Latency: time to first token and end-to-end latency per request, reported
as p50/p95/p99 in seconds, plus a [0, 1] `latency` score for the composite:
1 - e2e / latency_budget_s, clipped (0 at or beyond the suite's budget)."""

from __future__ import annotations

import math

import numpy as np

from evaluation.scorers import Scorer, ScoringContext, ScoringItem, register_scorer


@register_scorer("latency")
class Latency(Scorer):
    version = "1"
    metrics = ("latency", "ttft_s", "e2e_s")
    reported = ("latency",) + tuple(f"latency_{k}_p{q}_s" for k in ("ttft", "e2e") for q in (50, 95, 99))

    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict[str, float]]:
        out = []
        for it in items:
            e2e = it.result.latency_s
            ttft = it.result.ttft_s
            out.append(
                {
                    "latency": math.nan if e2e is None else float(np.clip(1 - e2e / ctx.latency_budget_s, 0, 1)),
                    "ttft_s": math.nan if ttft is None else float(ttft),
                    "e2e_s": math.nan if e2e is None else float(e2e),
                }
            )
        return out

    def cache_params(self, ctx: ScoringContext) -> dict:
        return {"latency_budget_s": ctx.latency_budget_s}

    def aggregate(self, per_item: list[dict[str, float]]) -> dict[str, float]:
        out = super().aggregate(per_item)
        for src, prefix in (("ttft_s", "latency_ttft"), ("e2e_s", "latency_e2e")):
            vals = np.array([d[src] for d in per_item], dtype=float)
            vals = vals[~np.isnan(vals)]
            for q in (50, 95, 99):
                out[f"{prefix}_p{q}_s"] = float(np.percentile(vals, q)) if vals.size else math.nan
            out.pop(src, None)
            out.pop(f"{src}_nan_count", None)
        return out
