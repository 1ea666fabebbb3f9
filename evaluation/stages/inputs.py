"""What every stage reads of a suite: its dataset rows, its bias probes,
and the digest and directions that make composites comparable."""

from __future__ import annotations

import logging

from evaluation.dataset import Example, load_examples
from evaluation.hashing import sha256_json
from evaluation.suite import Suite

log = logging.getLogger(__name__)


def examples_for(suite: Suite) -> list[Example]:
    return load_examples(suite.dataset_path, suite.dataset.limit)


def bias_enabled(suite: Suite) -> bool:
    return suite.bias is not None and "bias" in suite.scoring.scorers


def probe_prompts(suite: Suite) -> list:
    """The suite's counterfactual bias probes, one per probe template x group
    (`evaluation.bias.ProbePrompt`); empty when `bias` is off."""
    if not bias_enabled(suite):
        return []
    from evaluation.bias import expand_probes, load_groups, load_probes

    return expand_probes(load_probes(suite.bias_probes_path), load_groups(), suite.bias.categories)


def probe_examples(suite: Suite) -> list[Example]:
    """The probes as generation inputs (no context)."""
    return [Example(id=p.id, question=p.prompt, contexts=()) for p in probe_prompts(suite)]


def scoring_digest(suite: Suite) -> str:
    """Composites are comparable only under the same scorers and weights."""
    from evaluation.scorers import get_scorer as _get

    versions = {n: _get(n).version for n in suite.scoring.scorers}
    return sha256_json(
        {"weights": suite.scoring.weights, "versions": versions, "budget": suite.scoring.latency_budget_s}
    )[:12]


def lower_is_better(weights: dict[str, float]) -> frozenset[str]:
    from evaluation.scorers import metric_info

    return frozenset(m for m in weights if not metric_info(m).higher_is_better)
