"""Scorer base types: what a scorer receives (ScoringItem, ScoringContext,
JudgeEndpoint), how it declares its metrics (Metric) and the Scorer base class.

A leaf module: it imports no other module of the library at run time (Config,
Example and RequestResult only for type checking), so `evaluation.candidates
-> evaluation.suite -> evaluation.scorers` cannot close into an import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from evaluation.candidates import Config
    from evaluation.dataset import Example
    from evaluation.generation import RequestResult


def _percentile(q: float):
    return lambda v: float(np.percentile(v, q))


# How per-example values become one run-level value (over the values that
# could be computed; NaN when none could).
AGGREGATIONS = {
    "mean": lambda v: float(np.mean(v)),
    "median": lambda v: float(np.median(v)),
    "min": lambda v: float(np.min(v)),
    "max": lambda v: float(np.max(v)),
    **{f"p{q}": _percentile(q) for q in (50, 90, 95, 99)},
}


@dataclass(frozen=True)
class Metric:
    """One metric a scorer declares, like lm-evaluation-harness'
    `register_metric(higher_is_better=, aggregation=)`.

    A per-example metric (in `Scorer.metrics`) with an `aggregation` is
    reported at run level under its own name, with `<name>_nan_count`; with
    `aggregation=None` it stays per-example only. A run-level metric (in
    `Scorer.reported`) with `of=` is the `aggregation` of that per-example
    metric (e.g. p95 of `e2e_s`). Only metrics whose range lies in [0, 1] can
    be weighted in the composite.
    """

    name: str
    higher_is_better: bool = True
    value_range: tuple[float, float] = (0.0, 1.0)
    aggregation: str | None = "mean"
    of: str | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        if self.aggregation is not None and self.aggregation not in AGGREGATIONS:
            raise ValueError(f"metric {self.name!r}: aggregation {self.aggregation!r} is not one of "
                             f"{sorted(AGGREGATIONS)} (or None)")  # fmt: skip
        lo, hi = self.value_range
        if not lo <= hi:
            raise ValueError(f"metric {self.name!r}: value_range {self.value_range} is not (low, high)")

    @property
    def weightable(self) -> bool:
        """Whether the composite (a weighted mean of [0, 1] values, 1 - v
        for lower-is-better ones) can use it."""
        return self.value_range[0] >= 0.0 and self.value_range[1] <= 1.0

    def aggregate(self, values) -> float:
        vals = np.asarray(values, dtype=float)
        vals = vals[~np.isnan(vals)]
        return AGGREGATIONS[self.aggregation or "mean"](vals) if vals.size else math.nan

    def info(self) -> dict:
        return {"name": self.name, "higher_is_better": self.higher_is_better, "range": list(self.value_range),
                "aggregation": self.aggregation, "of": self.of, "unit": self.unit}  # fmt: skip


@dataclass(frozen=True)
class ScoringItem:
    example: Example
    result: RequestResult  # always a successful one


@dataclass(frozen=True)
class JudgeEndpoint:
    """An OpenAI-compatible endpoint serving the judge model, and how to call it."""

    base_url: str  # ends with /v1
    model: str  # the served model name to put in requests
    identity: str  # model fingerprint + engine version: part of score cache keys
    max_tokens: int = 256
    temperature: float = 0.0
    concurrency: int = 4  # judge requests in flight, per scorer
    timeout_s: float = 60.0  # per judge request
    max_retries: int = 2  # per judge request, on connection errors, 429 and 5xx
    # Read at use time (evaluation.secrets); never in repr, cache keys or logs.
    api_key: str | None = field(default=None, repr=False)

    def cache_identity(self) -> dict:
        return {"judge": self.identity, "model": self.model, "max_tokens": self.max_tokens,
                "temperature": self.temperature}  # fmt: skip


@dataclass
class ScoringContext:
    config: Config
    latency_budget_s: float = 10.0
    judge: JudgeEndpoint | None = None  # required by scorers with needs_judge


@dataclass
class ConfigInputs:
    """What a configuration-level scorer (level = "config") rates: the
    answers to the bias probes, the latency probe's request records (dicts
    with success, ttft_s, latency_s, completion_tokens), and how many
    bootstrap replicates of its headline metric to draw (seeded)."""

    probe_answers: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    latency: list = field(default_factory=list)
    latency_budget_s: float = 10.0
    resamples: int = 200
    seed: int = 0


@dataclass
class ConfigScore:
    """A configuration-level scorer's result: run-level metrics, a table (one
    row per group or per request, logged to MLflow), and bootstrap replicates
    of each weightable metric over its own units (probes, requests), which
    the gate's statistics use as that metric's uncertainty."""

    metrics: dict
    table: list = field(default_factory=list)
    replicates: dict = field(default_factory=dict)


class Scorer:
    """Base class. Subclasses declare `metrics` (per-example, headline
    first; a `Metric` or a bare name that takes the class defaults
    `higher_is_better` and `value_range`) and optionally `reported` (extra
    run-level metrics). `register_scorer` checks the declarations, keeps
    them in `metric_specs` and leaves plain names in `metrics` and
    `reported`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    # Defaults for metrics declared by name only.
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    higher_is_better: ClassVar[bool] = True
    needs_judge: ClassVar[bool] = False
    # "example": score() rates each generation; "config": the scorer rates a
    # configuration as a whole from extra generations (bias probes), through
    # score_config(), and its value applies to every example of the config.
    level: ClassVar[str] = "example"
    # Per-example metrics; the first is the headline metric. Defaults to the
    # scorer's name.
    metrics: ClassVar[tuple] = ()
    # Run-level metrics aggregate() reports (gate floors/ceilings may use
    # them): after registration, the aggregated per-example metrics followed
    # by the extra ones declared here.
    reported: ClassVar[tuple] = ()
    # Filled by register_scorer: every declared metric by name.
    metric_specs: ClassVar[dict[str, Metric]] = {}

    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict[str, float]]:
        raise NotImplementedError

    def cache_params(self, ctx: ScoringContext) -> dict:
        """Whatever in the context changes this scorer's values (part of its
        cache key, with its name and version). Judge scorers add the judge."""
        return {}

    def aggregate(self, per_item: list[dict[str, float]]) -> dict[str, float]:
        """Run-level metrics as declared: each aggregated per-example metric
        over the values that could be computed (and how many could not), then
        each run-level metric computed from a per-example one."""
        out: dict[str, float] = {}
        for m in self.metrics:
            spec = self.metric_specs[m]
            if spec.aggregation is None:
                continue
            vals = [d.get(m, math.nan) for d in per_item]
            out[m] = spec.aggregate(vals)
            out[f"{m}_nan_count"] = float(sum(1 for v in vals if v is None or math.isnan(v)))
        for m in self.reported:
            spec = self.metric_specs[m]
            if spec.of is not None:
                out[m] = spec.aggregate([d.get(spec.of, math.nan) for d in per_item])
        return out

    @classmethod
    def info(cls) -> dict:
        headline = cls.metric_specs[cls.metrics[0]]
        return {
            "name": cls.name,
            "version": cls.version,
            "range": list(headline.value_range),
            "higher_is_better": headline.higher_is_better,
            "needs_judge": cls.needs_judge,
            "level": cls.level,
            "metrics": list(cls.metrics),
            "reported": list(cls.reported),
            "metric_specs": {n: s.info() for n, s in cls.metric_specs.items()},
        }
