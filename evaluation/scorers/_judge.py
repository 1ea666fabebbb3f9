"""Base class of the LLM-as-judge scorers (TruLens, Ragas).

Contract (what the pipeline relies on):
- `score()` returns, per item and per metric M of the scorer:
  `M` (float in [0, 1], NaN when the judge failed), `M_judge_error`
  (1.0 when the judge failed on this item: unparsable output, TruLens' -1
  sentinel, NaN, timeout, HTTP error; 0.0 otherwise) and `M_rationale` (the
  judge's reasons as text, or the error message; may be empty).
- A judge failure is never coerced to a score, and one failing item never
  aborts the batch.
- Judge requests are bounded by `ctx.judge.concurrency`, time out after
  `ctx.judge.timeout_s` and are retried `ctx.judge.max_retries` times.
- The judge's identity (model fingerprint, engine, max_tokens, temperature)
  and the scorer's `prompt_version` are part of the score cache key, so a
  re-run with the same judge makes no judge call.
- The judge's key never reaches a rationale or a log line: `judge_of`
  protects it (evaluation.secrets.protect: redacted from every log record of
  the process) and `failed`/`verdict` redact it from the text they keep
  (servers may echo the Authorization header in an error body).
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

import numpy as np

from evaluation.errors import SuiteError
from evaluation.scorers import JudgeEndpoint, Scorer, ScoringContext
from evaluation.secrets import protect, redact

ERROR_SUFFIX = "_judge_error"
RATIONALE_SUFFIX = "_rationale"


class JudgeScorer(Scorer):
    needs_judge = True
    prompt_version: ClassVar[str] = "1"

    def judge_of(self, ctx: ScoringContext) -> JudgeEndpoint:
        if ctx.judge is None:
            raise SuiteError(f"scorer {self.name!r} needs a judge: add a `judge:` section to the suite")
        protect(ctx.judge.api_key)
        return ctx.judge

    def cache_params(self, ctx: ScoringContext) -> dict:
        return {**self.judge_of(ctx).cache_identity(), "prompt_version": self.prompt_version}

    @staticmethod
    def failed(metric: str, why: str) -> dict:
        why = redact(f"judge error: {why}")  # before it is cut: a cut key no longer matches
        return {metric: math.nan, metric + ERROR_SUFFIX: 1.0, metric + RATIONALE_SUFFIX: why[:2000]}

    @staticmethod
    def verdict(metric: str, value: float | None, rationale: str = "") -> dict:
        """A judge value in [0, 1]; anything else (None, NaN, -1, out of
        range) is a judge error, not a score."""
        if value is None or not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
            return JudgeScorer.failed(metric, f"unusable verdict {value!r}" + (f": {rationale}" if rationale else ""))
        rationale = redact(rationale or "")
        return {metric: float(value), metric + ERROR_SUFFIX: 0.0, metric + RATIONALE_SUFFIX: rationale[:2000]}

    def aggregate(self, per_item: list[dict]) -> dict[str, float]:
        out = super().aggregate(per_item)
        for m in self.metrics:
            errs = np.array([d.get(m + ERROR_SUFFIX, math.nan) for d in per_item], dtype=float)
            errs = errs[~np.isnan(errs)]
            out[m + "_judge_error_rate"] = float(errs.mean()) if errs.size else math.nan
            out[m + "_judge_errors"] = float(errs.sum())
        return out


def judge_error_rate(per_example: list[dict], metrics: list[str]) -> float:
    """Overall share of judge verdicts that failed, over every judge metric
    and scored example (NaN when no judge ran)."""
    flags = [d[m + ERROR_SUFFIX] for d in per_example for m in metrics if m + ERROR_SUFFIX in d]
    return float(np.mean(flags)) if flags else math.nan


_TRANSIENT = re.compile(
    r"timed? ?out|connect|connection|unavailable|rate.?limit|\b429\b|\b50[0234]\b|remoteprotocol|"
    r"server disconnected|reset by peer",
    re.IGNORECASE,
)


def has_transient_error(values: dict) -> bool:
    """Whether any judge error in one item's values came from the transport
    (timeout, connection, 429/5xx) rather than from the judge's reply. Such
    verdicts are reported but not cached, so the next run asks again; an
    unparsable reply is the judge's answer to that input and is cached."""
    return any(
        k.endswith(ERROR_SUFFIX) and v == 1.0
        and _TRANSIENT.search(str(values.get(k[: -len(ERROR_SUFFIX)] + RATIONALE_SUFFIX, "")))
        for k, v in values.items()
    )  # fmt: skip
