"""Latency: a serving property of a configuration, scored from the latency
probe (evaluation.stages.latency): a seeded sample of dataset rows sent at
the suite's serving concurrency (`latency.concurrency`, default one request
at a time), for every configuration of the run in the same session. Never
read off the throughput sweep, where dozens of requests in flight make it
queueing time.

Reported: time to first token, end-to-end latency and time per output token
as p50/p95/p99 seconds, and `latency` in [0, 1] for the composite: the mean
over probe requests of clip(1 - e2e / latency_budget_s, 0, 1) (0 at or
beyond the suite's budget). Its uncertainty for the gate is a bootstrap over
the probe requests."""

from __future__ import annotations

import math

import numpy as np

from evaluation.scorers import ConfigInputs, ConfigScore, Metric, Scorer, register_scorer

KINDS = ("ttft", "e2e", "tpot")


def _seconds(name: str) -> Metric:
    return Metric(name, higher_is_better=False, value_range=(0.0, math.inf), unit="s", aggregation=None)


def _count(name: str) -> Metric:
    return Metric(name, higher_is_better=False, value_range=(0.0, math.inf), aggregation=None)


@register_scorer("latency")
class Latency(Scorer):
    version = "2"
    level = "config"
    metrics = (Metric("latency"),)
    reported = (*(_seconds(f"latency_{k}_p{q}_s") for k in KINDS for q in (50, 95, 99)),
                _count("latency_probe_requests"), _count("latency_probe_failed"))  # fmt: skip

    def score_config(self, inputs: ConfigInputs) -> ConfigScore:
        recs = inputs.latency
        ok = [r for r in recs if r.get("success") and r.get("latency_s") is not None]
        # A failed or timed-out request is the worst latency a user sees: it
        # scores 0, never dropped (dropping would flatter a struggling engine).
        failed = [{"example_id": r.get("example_id"), "ttft_s": math.nan, "e2e_s": math.nan, "tpot_s": math.nan,
                   "completion_tokens": 0, "latency": 0.0, "failed": True} for r in recs if r not in ok]  # fmt: skip
        rows = []
        for r in ok:
            e2e, ttft, toks = float(r["latency_s"]), r.get("ttft_s"), r.get("completion_tokens") or 0
            tpot = (e2e - float(ttft)) / (toks - 1) if ttft is not None and toks > 1 else math.nan
            rows.append({"example_id": r.get("example_id"), "ttft_s": math.nan if ttft is None else float(ttft),
                         "e2e_s": e2e, "tpot_s": tpot, "completion_tokens": toks,
                         "latency": float(np.clip(1 - e2e / inputs.latency_budget_s, 0, 1))})  # fmt: skip
        metrics: dict[str, float] = {"latency_probe_requests": float(len(recs)),
                                     "latency_probe_failed": float(len(recs) - len(ok))}  # fmt: skip
        rows += failed
        scores = np.array([r["latency"] for r in rows], dtype=float)
        metrics["latency"] = float(scores.mean()) if scores.size else math.nan
        for k in KINDS:
            vals = np.array([r[f"{k}_s"] for r in rows], dtype=float)
            vals = vals[~np.isnan(vals)]
            for q in (50, 95, 99):
                metrics[f"latency_{k}_p{q}_s"] = float(np.percentile(vals, q)) if vals.size else math.nan
        reps = []
        if scores.size:
            rng = np.random.default_rng(inputs.seed)
            reps = scores[rng.integers(0, scores.size, size=(inputs.resamples, scores.size))].mean(axis=1).tolist()
        return ConfigScore(metrics=metrics, table=rows, replicates={"latency": reps})
