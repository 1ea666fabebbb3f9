"""TruLens-backed LLM-judge scorers: answer relevance, context relevance and
groundedness, on the judge endpoint of the suite (`ctx.judge`).

They call TruLens' feedback functions on a `trulens.providers.litellm.LiteLLM`
provider (`hosted_vllm/<judge.model>` at `judge.base_url`):
`relevance_with_cot_reasons` (question vs answer),
`context_relevance_with_cot_reasons` (question vs each context; the example's
value is the mean over its contexts) and
`groundedness_measure_with_cot_reasons` (contexts vs answer, with
`GroundednessConfigs(use_sent_tokenize=False, filter_trivial_statements=False)`:
the defaults download nltk data and `eval()` judge output). TruLens asks for
a 0-3 rating and normalizes it to [0, 1] (rating / 3).

Each item is one TruLens call of its own, in a thread pool of
`judge.concurrency` workers (not TruLens' batch evaluator, where one exception
aborts the whole batch). Every judge request goes through
`_JudgeProvider._create_chat_completion`, which holds a semaphore of
`judge.concurrency` (groundedness fans out one request per statement on a
thread pool of TruLens' own), sets `max_tokens` and a per-request `timeout`
of `judge.timeout_s`, and retries connection errors, 429 and 5xx
`judge.max_retries` times (not timeouts). TruLens' own endpoint retries
(3, with 2-8 s sleeps, on any exception) and its 60 requests/minute pacing
are turned off.

Judge calls per scored row (n contexts, s statements the judge splits the
answer into): answer relevance 1, context relevance n, groundedness 1 + s.
vLLM honours TruLens' structured-output request (`response_format`), so a
verdict is normally one call; a reply that is not the expected JSON makes
TruLens ask once more ("convert to JSON") before parsing the text.

Judge errors (M = NaN, `M_judge_error` = 1, the reason in `M_rationale`): any
exception (HTTP error, timeout, a rating outside 0-3 or none at all: TruLens
raises ParseError), TruLens' unparsable sentinel -1, NaN, None. Nothing is
coerced: a context-relevance example with one failed context, or a
groundedness example with one unparsable statement, is a judge error (TruLens
itself would average the statements it could parse). An empty answer is NaN
with no judge error for answer relevance and groundedness (nothing to judge),
and so is a row without contexts for context relevance and groundedness.

Hygiene: the question, the answer and each context reach TruLens' templates
(`PROMPT: ... RESPONSE: ...`, `USER QUERY: ... SEARCH RESULT: ...`,
`SOURCE: ... STATEMENT: ...`) cleaned of invisible characters and wrapped in
`evaluation.hygiene.delimit` tags, so a fake closing tag inside the text is
defused. The statements groundedness grades are the judge's split of the
(delimited) answer, one per line of its reply: TruLens drops only bare list
numbers, so a blank line or a sentence a small judge invents is graded too.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import metadata
from typing import Any

from evaluation.hygiene import delimit, strip_invisible
from evaluation.scorers import JudgeEndpoint, ScoringContext, ScoringItem, register_scorer
from evaluation.scorers._judge import ERROR_SUFFIX, RATIONALE_SUFFIX, JudgeScorer
from evaluation.secrets import redact

log = logging.getLogger(__name__)

# litellm fetches a model price map from GitHub at import unless told not to
# (three tries, about 8 s, offline); set before anything imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

try:
    _TRULENS_VERSION = metadata.version("trulens-feedback")
except metadata.PackageNotFoundError:  # pragma: no cover
    _TRULENS_VERSION = "unknown"

# TruLens' feedback functions rate on 0-3 and normalize to [0, 1].
_MIN, _MAX = 0, 3
_UNPARSABLE = -1.0
_RETRY_BACKOFF_S = 0.5


def _clean(text: str) -> str:
    return strip_invisible(text or "")[0].strip()


def _short(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(redact(str(exc)).split())  # before it is cut (the judge's key: JudgeScorer.judge_of)
    return f"{type(exc).__name__}: {msg[:limit]}"


# --------------------------------------------------------------------------- #
# The provider: built lazily (importing TruLens takes seconds), cached per
# judge endpoint in this process.
# --------------------------------------------------------------------------- #

_PROVIDERS: dict[tuple, Any] = {}
_PROVIDERS_LOCK = threading.Lock()
_PROVIDER_CLASS: type | None = None


def _transient(exc: BaseException) -> bool:
    """Connection errors, 429 and 5xx: worth another try. Timeouts are not
    retried (a stalled judge would otherwise cost (1 + retries) x timeout)."""
    import litellm

    if isinstance(exc, litellm.Timeout):
        return False
    if isinstance(exc, litellm.APIConnectionError):
        return True
    code = getattr(exc, "status_code", None)
    return isinstance(code, int) and (code == 429 or code >= 500)


def _provider_class() -> type:
    global _PROVIDER_CLASS
    if _PROVIDER_CLASS is not None:
        return _PROVIDER_CLASS
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from pydantic import PrivateAttr
    from trulens.providers.litellm import LiteLLM

    class _JudgeProvider(LiteLLM):
        # `timeout` is no OpenAI parameter, so TruLens would filter it out of
        # the litellm call; let it through like api_base.
        _LITELLM_ROUTING_PARAMS = LiteLLM._LITELLM_ROUTING_PARAMS | {"timeout"}
        _judge: Any = PrivateAttr(default=None)  # JudgeEndpoint
        _gate: Any = PrivateAttr(default=None)  # threading.BoundedSemaphore(judge.concurrency)

        def _create_chat_completion(self, *args, **kwargs):
            # completion_kwargs must be strings (pydantic), so the numeric
            # request settings are added here, per call.
            judge: JudgeEndpoint = self._judge
            gate: threading.Semaphore = self._gate
            kwargs["max_tokens"] = judge.max_tokens
            kwargs["timeout"] = judge.timeout_s
            if judge.api_key:  # per call, so the provider (a pydantic model) never holds it
                kwargs["api_key"] = judge.api_key
            attempt = 0
            while True:
                try:
                    with gate:
                        return super()._create_chat_completion(*args, **kwargs)
                except Exception as exc:
                    if attempt >= judge.max_retries or not _transient(exc):
                        raise
                    attempt += 1
                    log.debug("judge request failed (%s); retry %d/%d", _short(exc), attempt, judge.max_retries)
                    time.sleep(_RETRY_BACKOFF_S * 2 ** (attempt - 1))

    _PROVIDER_CLASS = _JudgeProvider
    return _JudgeProvider


def provider_for(judge: JudgeEndpoint):
    """The TruLens LiteLLM provider for this judge endpoint (one per process
    and endpoint settings)."""
    key = (judge.base_url, judge.model, judge.max_tokens, judge.timeout_s, judge.max_retries, judge.concurrency,
           judge.api_key)  # fmt: skip
    with _PROVIDERS_LOCK:
        p = _PROVIDERS.get(key)
        if p is None:
            cls = _provider_class()
            p = cls(
                model_engine=f"hosted_vllm/{judge.model}",
                api_base=judge.base_url,
                rpm=1_000_000,  # TruLens paces to 60 requests/minute by default
                retries=0,  # TruLens retries any exception 3 times, sleeping 2-8 s
            )
            p._judge = judge
            p._gate = threading.BoundedSemaphore(max(1, judge.concurrency))
            _PROVIDERS[key] = p
        return p


# --------------------------------------------------------------------------- #
# Rationale text from TruLens' reasons dict
# --------------------------------------------------------------------------- #


def _reason_text(reasons: Any) -> str:
    if not reasons:
        return ""
    if isinstance(reasons, dict):
        if "reason" in reasons:
            return str(reasons["reason"]).strip()
        if "reasons" in reasons:
            parts = []
            for r in reasons["reasons"] or []:
                if isinstance(r, dict):
                    parts.append(f"[{_fmt_score(r.get('score'))}] {str(r.get('criteria', '')).strip()}"
                                 f" -- {str(r.get('supporting_evidence', '')).strip()}")  # fmt: skip
                else:
                    parts.append(str(r))
            return "\n".join(parts)
    return str(reasons).strip()


def _fmt_score(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else repr(v)


def _usable(v: Any) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v) and v != _UNPARSABLE and 0.0 <= v <= 1.0


# --------------------------------------------------------------------------- #
# Scorers
# --------------------------------------------------------------------------- #


class _TruLensScorer(JudgeScorer):
    version = "1"
    prompt_version = f"trulens-feedback {_TRULENS_VERSION}; delimited v1"

    def _judge_item(self, provider, item: ScoringItem, judge: JudgeEndpoint) -> dict:
        raise NotImplementedError

    def _setup(self) -> None:
        """Imports and settings a scorer needs, outside the per-item error
        handling (a broken install is no judge error)."""

    def _nothing(self, why: str) -> dict:
        m = self.name
        return {m: math.nan, m + ERROR_SUFFIX: 0.0, m + RATIONALE_SUFFIX: why}

    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict]:
        judge = self.judge_of(ctx)
        if not items:
            return []
        provider = provider_for(judge)
        self._setup()
        out: list[dict | None] = [None] * len(items)
        n = len(items)
        step = max(1, math.ceil(n / 4))
        t0 = time.monotonic()
        errors = 0
        with ThreadPoolExecutor(max_workers=max(1, judge.concurrency), thread_name_prefix=self.name) as pool:
            futures = {pool.submit(self._safe, provider, it, judge): i for i, it in enumerate(items)}
            for done, fut in enumerate(as_completed(futures), start=1):
                res = fut.result()  # _safe never raises
                out[futures[fut]] = res
                errors += int(res.get(self.name + ERROR_SUFFIX, 0.0) == 1.0)
                if done % step == 0 or done == n:
                    log.info("%s: %d/%d items judged (%d judge errors), %.1f s", self.name, done, n, errors,
                             time.monotonic() - t0)  # fmt: skip
        return out  # type: ignore[return-value]

    def _safe(self, provider, item: ScoringItem, judge: JudgeEndpoint) -> dict:
        try:
            return self._judge_item(provider, item, judge)
        except Exception as exc:  # noqa: BLE001 -- one item's failure never aborts the batch
            return self.failed(self.name, _short(exc))


def _call(fn: Callable, **kwargs) -> tuple[Any, Any]:
    res = fn(**kwargs)
    if not isinstance(res, tuple) or len(res) != 2:
        return res, None
    return res


@register_scorer("trulens_answer_relevance")
class TruLensAnswerRelevance(_TruLensScorer):
    metrics = ("trulens_answer_relevance",)

    def _judge_item(self, provider, item: ScoringItem, judge: JudgeEndpoint) -> dict:
        answer = _clean(item.result.text)
        if not answer:
            return self._nothing("empty answer: nothing to judge")
        value, reasons = _call(
            provider.relevance_with_cot_reasons,
            prompt=delimit("question", _clean(item.example.question)),
            response=delimit("answer", answer),
            min_score_val=_MIN, max_score_val=_MAX, temperature=judge.temperature,
        )  # fmt: skip
        return self.verdict(self.name, value, _reason_text(reasons))


@register_scorer("trulens_context_relevance")
class TruLensContextRelevance(_TruLensScorer):
    metrics = ("trulens_context_relevance",)

    def _judge_item(self, provider, item: ScoringItem, judge: JudgeEndpoint) -> dict:
        contexts = [c for c in (_clean(c) for c in item.example.contexts) if c]
        if not contexts:
            return self._nothing("no contexts: nothing to judge")
        question = delimit("question", _clean(item.example.question))
        values, notes = [], []
        for i, context in enumerate(contexts, start=1):
            try:
                value, reasons = _call(
                    provider.context_relevance_with_cot_reasons,
                    question=question, context=delimit("context", context),
                    min_score_val=_MIN, max_score_val=_MAX, temperature=judge.temperature,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 -- any failure is this item's judge error
                return self.failed(self.name, f"context {i}/{len(contexts)}: {_short(exc)}")
            if not _usable(value):
                return self.failed(self.name, f"context {i}/{len(contexts)}: unusable verdict {value!r}"
                                   + (f": {_reason_text(reasons)}" if reasons else ""))  # fmt: skip
            values.append(float(value))
            notes.append(f"[context {i}: {value:.2f}] {_reason_text(reasons)}")
        return self.verdict(self.name, sum(values) / len(values), "\n".join(notes))


@register_scorer("trulens_groundedness")
class TruLensGroundedness(_TruLensScorer):
    metrics = ("trulens_groundedness",)
    _configs: Any = None

    def _setup(self) -> None:
        from trulens.core.feedback.feedback import GroundednessConfigs

        # The defaults download nltk data (sentence splitting) and eval() the
        # judge's list of non-trivial statements.
        self._configs = GroundednessConfigs(use_sent_tokenize=False, filter_trivial_statements=False)

    def _judge_item(self, provider, item: ScoringItem, judge: JudgeEndpoint) -> dict:
        answer = _clean(item.result.text)
        if not answer:
            return self._nothing("empty answer: nothing to judge")
        contexts = [c for c in (_clean(c) for c in item.example.contexts) if c]
        if not contexts:
            return self._nothing("no contexts: nothing to judge")
        value, reasons = _call(
            provider.groundedness_measure_with_cot_reasons,
            source="\n\n".join(delimit("context", c) for c in contexts),
            statement=delimit("answer", answer),
            groundedness_configs=self._configs,
            min_score_val=_MIN, max_score_val=_MAX, temperature=judge.temperature,
        )  # fmt: skip
        text = _reason_text(reasons)
        statements = (reasons or {}).get("reasons") if isinstance(reasons, dict) else None
        if statements:
            bad = [r for r in statements if isinstance(r, dict) and not _usable(r.get("score"))]
            if bad:
                # TruLens averages only the statements it could parse; a
                # partial verdict is not coerced into a score here.
                return self.failed(self.name, f"{len(bad)} of {len(statements)} statements unparsable: {text}")
        return self.verdict(self.name, value, text)
