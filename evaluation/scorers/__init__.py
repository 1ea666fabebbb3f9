"""Scorers: the registry and the built-in scorers, one per module.

A scorer is a class registered under a unique name with its version, whether
it needs an LLM judge, and a declaration of each metric it produces
(direction, value range, aggregation). It scores successful generations only
(failed requests are counted in failed_rate, never scored) and returns NaN,
never 0, where a value cannot be computed. New scorers register here, or in
another distribution through the `llmops.scorers` entry point group, and need
no DAG change.

Base types live in `evaluation.scorers.base`, the registry in
`evaluation.scorers.registry`; both are re-exported here. Importing this
package imports neither the built-in scorers nor the suite and candidates
modules: the registry loads the scorers on first lookup.
"""

from evaluation.scorers.base import (
    AGGREGATIONS,
    ConfigInputs,
    ConfigScore,
    JudgeEndpoint,
    Metric,
    Scorer,
    ScoringContext,
    ScoringItem,
)
from evaluation.scorers.registry import (
    ENTRY_POINT_GROUP,
    get_scorer,
    list_scorers,
    metric_info,
    register_scorer,
    scorer_for_metric,
)

__all__ = [
    "AGGREGATIONS",
    "ConfigInputs",
    "ConfigScore",
    "ENTRY_POINT_GROUP",
    "JudgeEndpoint",
    "Metric",
    "Scorer",
    "ScoringContext",
    "ScoringItem",
    "get_scorer",
    "list_scorers",
    "metric_info",
    "register_scorer",
    "scorer_for_metric",
]
