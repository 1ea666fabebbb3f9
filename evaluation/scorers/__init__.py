"""Scorer registry, in the style of lm-evaluation-harness.

A scorer is a class registered under a unique name with its version, value
range, direction and whether it needs an LLM judge. It scores successful
generations only (failed requests are counted in failed_rate, never scored)
and returns NaN, never 0, where a value cannot be computed. New scorers
(bias, judge-backed metrics) register here and need no DAG change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from evaluation.candidates import Config
from evaluation.dataset import Example
from evaluation.generation import RequestResult


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

    def cache_identity(self) -> dict:
        return {"judge": self.identity, "model": self.model, "max_tokens": self.max_tokens,
                "temperature": self.temperature}  # fmt: skip


@dataclass
class ScoringContext:
    config: Config
    latency_budget_s: float = 10.0
    judge: JudgeEndpoint | None = None  # required by scorers with needs_judge


class Scorer:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    higher_is_better: ClassVar[bool] = True
    needs_judge: ClassVar[bool] = False
    # "example": score() rates each generation; "config": the scorer rates a
    # configuration as a whole from extra generations (bias probes), through
    # score_config(), and its value applies to every example of the config.
    level: ClassVar[str] = "example"
    # Per-example metrics this scorer produces; the first is its headline
    # metric, the one a suite may weight in the composite.
    metrics: ClassVar[tuple[str, ...]] = ()
    # Run-level metrics aggregate() reports (gate floors/ceilings may use
    # them); defaults to `metrics`.
    reported: ClassVar[tuple[str, ...]] = ()

    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict[str, float]]:
        raise NotImplementedError

    def cache_params(self, ctx: ScoringContext) -> dict:
        """Whatever in the context changes this scorer's values (part of its
        cache key, with its name and version). Judge scorers add the judge."""
        return {}

    def aggregate(self, per_item: list[dict[str, float]]) -> dict[str, float]:
        """Run-level metrics: the mean of each per-example metric over the
        values that could be computed, and how many could not."""
        out: dict[str, float] = {}
        for m in self.metrics:
            vals = np.array([d.get(m, math.nan) for d in per_item], dtype=float)
            ok = vals[~np.isnan(vals)]
            out[m] = float(ok.mean()) if ok.size else math.nan
            out[f"{m}_nan_count"] = float(vals.size - ok.size)
        return out

    @classmethod
    def info(cls) -> dict:
        return {
            "name": cls.name,
            "version": cls.version,
            "range": list(cls.value_range),
            "higher_is_better": cls.higher_is_better,
            "needs_judge": cls.needs_judge,
            "level": cls.level,
            "metrics": list(cls.metrics),
            "reported": list(cls.reported or cls.metrics),
        }


_REGISTRY: dict[str, type[Scorer]] = {}


def register_scorer(name: str):
    def deco(cls: type[Scorer]) -> type[Scorer]:
        if name in _REGISTRY:
            raise ValueError(f"scorer {name!r} is already registered by {_REGISTRY[name].__module__}")
        cls.name = name
        if not cls.metrics:
            cls.metrics = (name,)
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtin() -> None:
    # Importing the modules registers their scorers.
    from evaluation.scorers import (  # noqa: F401
        bias,
        correctness,
        groundedness,
        latency,
        ragas_judge,
        relevance,
        trulens_judge,
    )


def get_scorer(name: str) -> Scorer:
    _load_builtin()
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown scorer {name!r}; choose from {sorted(_REGISTRY)}") from None


def list_scorers() -> list[dict]:
    _load_builtin()
    return [cls.info() for _, cls in sorted(_REGISTRY.items())]


def scorer_for_metric(metric: str) -> type[Scorer]:
    _load_builtin()
    for cls in _REGISTRY.values():
        if metric in cls.metrics:
            return cls
    raise KeyError(f"no scorer produces metric {metric!r}")
