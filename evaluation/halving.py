"""Successive halving over a sweep's configurations.

Every configuration is evaluated on a small subset of the examples; the top
1/eta by composite are kept and the subset grows eta-fold, until
`min_survivors` configurations remain or the subset would be the whole
dataset. The survivors then go through the normal full evaluation. Subsets are
nested prefixes of one seeded shuffle of the dataset, so each round reuses the
generations of the rounds before it (the content-addressed cache), and the
final full evaluation reuses all of them.

Rounds rank with the suite's cheap, example-level scorers only (no judge, no
bias probes): the judge and the probes are spent on survivors.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field


@dataclass
class Round:
    index: int
    examples: int
    configs: list[str]
    composite: dict[str, float] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    completion_tokens: int = 0  # over every generation this round used (cached or not)

    def to_json(self) -> dict:
        return asdict(self)


def schedule(n_configs: int, n_examples: int, *, eta: int, min_examples: int, min_survivors: int
             ) -> list[tuple[int, int]]:
    """[(configurations, examples)] per round before the full evaluation.
    Empty when there is nothing to halve."""
    rounds = []
    k, size = n_configs, min(min_examples, n_examples)
    while k > min_survivors and size < n_examples:
        rounds.append((k, size))
        k = max(min_survivors, math.ceil(k / eta))
        size = min(n_examples, size * eta)
    return rounds


def order(example_ids: list[str], seed: int) -> list[str]:
    """The seeded shuffle whose prefixes are the rounds' subsets."""
    ids = list(example_ids)
    random.Random(seed).shuffle(ids)
    return ids


def keep_top(composites: dict[str, float], k: int) -> list[str]:
    """The k best configuration ids by composite (NaN last; ties by id, so
    the choice is deterministic)."""
    def key(cid: str):
        v = composites[cid]
        return (math.isnan(v), -v if not math.isnan(v) else 0.0, cid)

    return sorted(composites, key=key)[:k]
