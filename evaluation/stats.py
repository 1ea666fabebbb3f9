"""Paired statistics for challenger-vs-champion comparisons.

Both configurations are scored on the same examples, keyed by example id, so
every comparison is on per-example differences d_i = challenger_i -
champion_i (sign-flipped for lower-is-better metrics, so that a positive
difference always means "challenger better"):

- mean difference with a paired bootstrap percentile interval (resampling
  examples, seeded, >= 1000 resamples);
- a one-sided sign-flip permutation test (scipy.stats.permutation_test with
  paired samples) of "challenger better", and its two-sided counterpart;
- Cohen's d_z (mean difference / standard deviation of differences);
- Holm's step-down adjustment when one sweep compares several candidates
  with the champion (family-wise error control).

Configuration-level metrics (bias, latency) enter every example's composite
as one constant per configuration. A point estimate is not noise-free, so
`ConfigTerm`s carry bootstrap replicates of each side's constant (over its
own units: bias probes, latency probe requests); the paired bootstrap then
redraws examples and, independently, one replicate per side, and the
one-sided p-value is the bootstrap's share of non-positive improvements
(the sign-flip permutation test cannot see that uncertainty).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class PairedResult:
    metric: str
    n: int
    challenger_mean: float
    champion_mean: float
    diff: float  # improvement (challenger better > 0)
    ci_low: float
    ci_high: float
    p_value: float  # one-sided: challenger better
    p_two_sided: float
    effect_size: float  # Cohen's d_z
    higher_is_better: bool = True
    p_adjusted: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ConfigTerm:
    """A configuration-level metric's share of the composite, per side:
    `challenger` / `champion` are bootstrap replicates of (replicate - point
    value) * weight share, oriented so that positive is better; `*_in` are
    the example ids whose composite includes the term (scored examples)."""

    challenger: np.ndarray
    champion: np.ndarray
    challenger_in: frozenset
    champion_in: frozenset


def _nan_result(metric: str, n: int, higher_is_better: bool) -> PairedResult:
    nan = math.nan
    return PairedResult(metric, n, nan, nan, nan, nan, nan, nan, nan, nan, higher_is_better)


def paired_compare(
    challenger: dict[str, float],
    champion: dict[str, float],
    *,
    metric: str,
    higher_is_better: bool = True,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    config_terms: list[ConfigTerm] = (),
) -> PairedResult:
    """Compare two {example_id: value} maps on the ids where both are finite.
    With `config_terms` the interval and the p-value also carry the
    uncertainty of the configuration-level metrics (see module docstring)."""
    from scipy.stats import permutation_test

    ids = sorted(k for k in challenger.keys() & champion.keys()
                 if np.isfinite(challenger[k]) and np.isfinite(champion[k]))  # fmt: skip
    n = len(ids)
    if n < 2:
        return _nan_result(metric, n, higher_is_better)
    a = np.array([challenger[k] for k in ids], dtype=float)
    b = np.array([champion[k] for k in ids], dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    d = sign * (a - b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    per_draw = d[idx]
    # A side without replicates keeps its point value (no spread), never
    # takes the other side's uncertainty away.
    terms = [t for t in config_terms if len(t.challenger) or len(t.champion)]
    for t in terms:
        in_a = np.array([k in t.challenger_in for k in ids], dtype=float)[idx]
        in_b = np.array([k in t.champion_in for k in ids], dtype=float)[idx]
        sa = np.asarray(t.challenger, dtype=float) if len(t.challenger) else np.zeros(1)
        sb = np.asarray(t.champion, dtype=float) if len(t.champion) else np.zeros(1)
        ra = sa[rng.integers(0, len(sa), size=resamples)]
        rb = sb[rng.integers(0, len(sb), size=resamples)]
        per_draw = per_draw + in_a * ra[:, None] - in_b * rb[:, None]
    boot = per_draw.mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    if terms:
        p_one = float((1 + np.sum(boot <= 0)) / (resamples + 1))
        p_two = float(min(1.0, 2 * min(p_one, (1 + np.sum(boot >= 0)) / (resamples + 1))))
    elif np.allclose(d, 0):
        p_one, p_two = 1.0, 1.0
    else:
        def stat(x, axis=-1):
            return np.mean(x, axis=axis)

        kw = dict(permutation_type="samples", n_resamples=resamples, vectorized=True)
        p_one = permutation_test((d,), stat, alternative="greater", rng=np.random.default_rng(seed), **kw).pvalue
        p_two = permutation_test((d,), stat, alternative="two-sided", rng=np.random.default_rng(seed), **kw).pvalue
    sd = d.std(ddof=1)
    dz = float(d.mean() / sd) if sd > 0 else (0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean()))
    return PairedResult(
        metric=metric, n=n, challenger_mean=float(a.mean()), champion_mean=float(b.mean()),
        diff=float(d.mean()), ci_low=float(lo), ci_high=float(hi), p_value=float(p_one),
        p_two_sided=float(p_two), effect_size=dz, higher_is_better=higher_is_better,
    )  # fmt: skip


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (family-wise error control)."""
    items = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(items)
    out: dict[str, float] = {}
    running = 0.0
    for i, (key, p) in enumerate(items):
        adj = min(1.0, (m - i) * p)
        running = max(running, adj)
        out[key] = running
    return out
