"""Ragas-backed LLM-judge scorers: faithfulness, response relevancy and
context precision, on the judge endpoint of the suite (`ctx.judge`).

They use Ragas 0.4's collections metrics (`ragas.metrics.collections`:
`Faithfulness`, `AnswerRelevancy`, `ContextPrecisionWithoutReference`) with a
Ragas `InstructorLLM` over `openai.AsyncOpenAI`; each reply is validated
against the metric's pydantic output model. `llm_factory(..., client=...)`
hard-codes Instructor's JSON mode for OpenAI clients (`response_format`
json_object plus the schema in a system message): SmolLM2-135M then mostly
echoes the schema (every verdict a judge error in our runs). We build the
same `InstructorLLM` with Instructor's JSON_SCHEMA mode instead, so vLLM
constrains decoding to the schema (`STRUCTURED_OUTPUT`; "json" goes back to
`llm_factory`). A reply can still be truncated, or valid but out of range:
judge errors. Each metric's `ascore` is awaited per item, inside
an `asyncio.Semaphore(judge.concurrency)` (Ragas' own batch call has no
limit) and an `asyncio.wait_for` of `judge.timeout_s` per judge call the
metric makes; a metric makes its calls one after the other, so at most
`concurrency` judge requests are in flight per scorer.

Judge calls per scored row (with a row's contexts counted as n):
faithfulness 2 (statements, then one NLI verdict call for all of them),
response relevancy 1 (3 when the judge samples with temperature > 0: Ragas
generates `strictness` questions, identical at temperature 0), context
precision n (one verdict per context). HTTP retries (connection errors,
429, 5xx, timeouts) are the openai client's (`judge.max_retries`); a reply
that does not validate is not re-asked (`PARSE_RETRIES`): it is a judge error.

Judge errors (M = NaN, `M_judge_error` = 1, the reason in `M_rationale`):
any exception (HTTP error, timeout, a reply that is not JSON or does not
match the schema, a truncated reply), a NaN from Ragas, and outputs Ragas
would silently turn into a number: a verdict other than 0/1, an NLI verdict
list that does not match the statements, no statement extracted from a
non-empty answer, no question generated (Ragas scores that 0). Nothing is
coerced. The only clipping is response relevancy's cosine similarity to
[0, 1] (as `relevance` does): an embedding value, not a judge verdict. An
empty answer (or a row without contexts, for the context metrics) is NaN
with no judge error: there is nothing to judge.

Context precision is the reference-free variant, always: it asks whether each
context was useful for the *answer being scored*. With the reference instead,
the value would depend only on the dataset row (question, contexts,
reference), be identical for every candidate configuration, and say nothing
about them.

Hygiene: Ragas puts the untrusted text into its prompt as a pydantic model
serialized to JSON (`input: {"question": "...", "answer": "..."}`), so quotes,
newlines and braces in it are escaped and it stays a JSON string value: it
cannot end its field or add instructions after the `Output:` marker. We
therefore only strip invisible characters (`hygiene.strip_invisible`) from
question, answer and contexts; `hygiene.delimit`'s tags would just be more
text inside a JSON string.

Response relevancy embeds with the bundled all-MiniLM-L6-v2
(`_embeddings.embed`, offline, shared with the `relevance` scorer) through a
small `BaseRagasEmbedding` subclass. Ragas' usage analytics are switched off
(`RAGAS_DO_NOT_TRACK=true`) before Ragas is imported.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from functools import lru_cache
from importlib.metadata import version as _dist_version
from typing import Any, ClassVar

from evaluation.hygiene import strip_invisible
from evaluation.scorers import JudgeEndpoint, ScoringContext, ScoringItem, register_scorer
from evaluation.scorers._judge import ERROR_SUFFIX, RATIONALE_SUFFIX, JudgeScorer
from evaluation.secrets import redact

log = logging.getLogger(__name__)

RAGAS_VERSION = _dist_version("ragas")
PARSE_RETRIES = 0  # Instructor re-asks on a reply that does not validate: don't
# "json_schema": vLLM constrains decoding to the reply's JSON schema
# (response_format json_schema); "json": llm_factory's default for OpenAI
# clients (response_format json_object plus the schema in a system message).
STRUCTURED_OUTPUT = "json_schema"
RELEVANCY_STRICTNESS = 3  # questions generated when the judge samples (temperature > 0)
_MAX_TEXT = 240  # per statement / reason in a rationale
_PYDANTIC_URL = re.compile(r"\s*For further information visit \S+")


class JudgeOutputError(Exception):
    """The judge answered, but with something that cannot be scored."""


def _ragas_env() -> None:
    os.environ["RAGAS_DO_NOT_TRACK"] = "true"  # read once, at first use, by ragas._analytics
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _clean(text: str) -> str:
    return strip_invisible(text)[0].strip()


def _short(text: Any, n: int = _MAX_TEXT) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


@lru_cache(maxsize=1)
def _embeddings():
    """The bundled MiniLM model as a Ragas (modern) embedding."""
    _ragas_env()
    from ragas.embeddings.base import BaseRagasEmbedding

    from evaluation.scorers._embeddings import embed

    class MiniLMEmbeddings(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return embed([text])[text].tolist()

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_text(text)

        def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            vecs = embed(texts)
            return [vecs[t].tolist() for t in texts]

        async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return self.embed_texts(texts)

    return MiniLMEmbeddings()


def _recorder(inner):
    """An LLM that delegates to `inner` and keeps every structured output, so
    the rationale and the sanity checks can see what the judge said."""
    from ragas.llms.base import InstructorBaseRagasLLM

    class Recorder(InstructorBaseRagasLLM):
        def __init__(self):
            self.outputs: list = []

        def generate(self, prompt, response_model):  # the metrics here only use agenerate
            raise NotImplementedError("async only")

        async def agenerate(self, prompt, response_model):
            out = await inner.agenerate(prompt, response_model)
            self.outputs.append(out)
            return out

    return Recorder()


def _describe(e: BaseException) -> str:
    """A judge error's reason: Instructor wraps every failure (HTTP errors
    included) in InstructorRetryException; name the cause and quote the reply,
    the judge's key redacted before either is cut (JudgeScorer.judge_of)."""
    cause = e.__cause__ if type(e).__name__ == "InstructorRetryException" and e.__cause__ else e
    why = f"{type(cause).__name__}: {_short(redact(_PYDANTIC_URL.sub('', str(cause))), 400)}"
    completion = getattr(e, "last_completion", None)
    try:
        reply = completion.choices[0].message.content if completion is not None else None
    except (AttributeError, IndexError):
        reply = None
    return why + (f"; reply: {_short(redact(str(reply)), 300)}" if reply else "")


def _binary(v: Any, what: str) -> int:
    if isinstance(v, bool) or v not in (0, 1):
        raise JudgeOutputError(f"{what} {v!r} is not 0 or 1")
    return int(v)


def _judge_llm(client, judge: JudgeEndpoint):
    """The Ragas LLM on `client`. Extra model args go to every
    chat.completions.create call; `max_retries` there is Instructor's
    re-ask-on-validation-error count, not the HTTP retries (the client's)."""
    args = {"max_tokens": judge.max_tokens, "temperature": judge.temperature, "max_retries": PARSE_RETRIES}
    if STRUCTURED_OUTPUT == "json":  # what llm_factory does for provider "openai"
        from ragas.llms import llm_factory

        return llm_factory(judge.model, provider="openai", client=client, **args)
    import instructor
    from ragas.llms.base import InstructorLLM, InstructorModelArgs

    # llm_factory's InstructorAdapter with another Instructor mode.
    return InstructorLLM(client=instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA),
                         model=judge.model, provider="openai", model_args=InstructorModelArgs(), **args)  # fmt: skip


class _RagasJudge(JudgeScorer):
    version = "1"
    # Ragas' prompts change with its version; the output mode changes the replies.
    prompt_version = f"ragas-{RAGAS_VERSION}/{STRUCTURED_OUTPUT}/1"
    last_requests: int = 0  # HTTP requests to the judge in the last score() call
    needs_contexts: ClassVar[bool] = True

    # -- per metric ------------------------------------------------------
    def calls(self, n_contexts: int, judge: JudgeEndpoint) -> int:
        """Judge calls one item takes (bounds its time)."""
        raise NotImplementedError

    def build(self, llm, judge: JudgeEndpoint):
        """The Ragas metric on `llm`."""
        raise NotImplementedError

    async def run(self, metric, question: str, answer: str, contexts: list[str]) -> float:
        raise NotImplementedError

    def check(self, outputs: list, value: float) -> tuple[float, str]:
        """Validate the judge's recorded outputs; (value, rationale)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------
    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict[str, float]]:
        judge = self.judge_of(ctx)
        if not items:
            return []
        return asyncio.run(self._score_all(items, judge))

    async def _score_all(self, items: list[ScoringItem], judge: JudgeEndpoint) -> list[dict]:
        _ragas_env()
        import openai

        m = self.metrics[0]
        requests = 0

        async def count(_request) -> None:
            nonlocal requests
            requests += 1

        client = openai.AsyncOpenAI(base_url=judge.base_url, api_key=judge.api_key or "x", timeout=judge.timeout_s,
                                    max_retries=judge.max_retries,
                                    http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [count]}))  # fmt: skip
        llm = _judge_llm(client, judge)
        sem = asyncio.Semaphore(max(1, judge.concurrency))
        done = 0
        marks = {math.ceil(len(items) * q / 4) for q in (1, 2, 3, 4)}
        t0 = time.monotonic()

        async def one(it: ScoringItem) -> dict:
            nonlocal done
            async with sem:
                row = await self._score_one(it, llm, judge)
            done += 1
            if done in marks:
                log.info("%s: %d/%d items judged (%.0f s)", self.name, done, len(items), time.monotonic() - t0)
            return row

        try:
            out = await asyncio.gather(*(one(it) for it in items))
        finally:
            await client.close()
        errors = sum(d.get(m + ERROR_SUFFIX, 0.0) for d in out)
        self.last_requests = requests
        log.info("%s: %d items, %d judge errors, %d judge requests, %.1f s",
                 self.name, len(items), errors, requests, time.monotonic() - t0)  # fmt: skip
        return out

    async def _score_one(self, it: ScoringItem, llm, judge: JudgeEndpoint) -> dict:
        m = self.metrics[0]
        answer = _clean(it.result.text)
        question = _clean(it.example.question)
        contexts = [c for c in (_clean(c) for c in it.example.contexts) if c]
        if not answer:
            return {m: math.nan, m + ERROR_SUFFIX: 0.0, m + RATIONALE_SUFFIX: "empty answer: nothing to judge"}
        if self.needs_contexts and not contexts:
            return {m: math.nan, m + ERROR_SUFFIX: 0.0, m + RATIONALE_SUFFIX: "no contexts: nothing to judge"}
        rec = _recorder(llm)
        budget = judge.timeout_s * max(1, self.calls(len(contexts), judge))
        try:
            metric = self.build(rec, judge)
            value = await asyncio.wait_for(self.run(metric, question, answer, contexts), timeout=budget)
            value, rationale = self.check(rec.outputs, value)
        except TimeoutError:  # asyncio.wait_for (an alias of TimeoutError since 3.11)
            return self.failed(m, f"timed out after {budget:.0f} s ({len(rec.outputs)} judge replies so far)")
        except Exception as e:  # noqa: BLE001 - every failure is this item's judge error
            return self.failed(m, _describe(e))
        return self.verdict(m, value, rationale)


@register_scorer("ragas_faithfulness")
class RagasFaithfulness(_RagasJudge):
    """Share of the answer's statements the judge finds supported by the contexts."""

    def calls(self, n_contexts, judge):
        return 2

    def build(self, llm, judge):
        from ragas.metrics.collections import Faithfulness

        return Faithfulness(llm=llm)

    async def run(self, metric, question, answer, contexts):
        return (await metric.ascore(user_input=question, response=answer, retrieved_contexts=contexts)).value

    def check(self, outputs, value):
        if not outputs or not outputs[0].statements:
            raise JudgeOutputError("no statement extracted from the answer")
        statements = outputs[0].statements
        if len(outputs) < 2:
            raise JudgeOutputError("no NLI verdicts")
        verdicts = outputs[1].statements
        if len(verdicts) != len(statements):
            raise JudgeOutputError(f"{len(verdicts)} verdicts for {len(statements)} statements")
        lines = []
        for i, (s, v) in enumerate(zip(statements, verdicts), start=1):
            _binary(v.verdict, f"verdict of statement {i}")
            lines.append(f"{i}. [{'supported' if v.verdict else 'unsupported'}] {_short(s)} ({_short(v.reason)})")
        return value, "\n".join(lines)


@register_scorer("ragas_response_relevancy")
class RagasResponseRelevancy(_RagasJudge):
    """Mean cosine similarity (all-MiniLM-L6-v2) of the question and the
    question(s) the judge reconstructs from the answer; 0 when the judge
    calls the answer noncommittal."""

    needs_contexts = False

    def strictness(self, judge: JudgeEndpoint) -> int:
        return RELEVANCY_STRICTNESS if judge.temperature > 0 else 1

    def calls(self, n_contexts, judge):
        return self.strictness(judge)

    def cache_params(self, ctx):
        from evaluation.scorers._embeddings import embedding_identity

        return {**super().cache_params(ctx), "embeddings": embedding_identity()}

    def build(self, llm, judge):
        from ragas.metrics.collections import AnswerRelevancy

        return AnswerRelevancy(llm=llm, embeddings=_embeddings(), strictness=self.strictness(judge))

    async def run(self, metric, question, answer, contexts):
        return (await metric.ascore(user_input=question, response=answer)).value

    def check(self, outputs, value):
        if not outputs:
            raise JudgeOutputError("no judge reply")
        lines = []
        for o in outputs:
            nc = _binary(o.noncommittal, "noncommittal flag")
            if not o.question.strip():
                raise JudgeOutputError("the judge generated an empty question")
            lines.append(f"generated question: {_short(o.question)}" + (" (noncommittal)" if nc else ""))
        if value is None or math.isnan(value):
            raise JudgeOutputError(f"Ragas returned {value!r}")
        return min(1.0, max(0.0, float(value))), "\n".join(lines)


@register_scorer("ragas_context_precision")
class RagasContextPrecision(_RagasJudge):
    """Average precision of the contexts the judge finds useful for the
    answer (reference-free: LLMContextPrecisionWithoutReference)."""

    def calls(self, n_contexts, judge):
        return n_contexts

    def build(self, llm, judge):
        from ragas.metrics.collections import ContextPrecisionWithoutReference

        return ContextPrecisionWithoutReference(llm=llm)

    async def run(self, metric, question, answer, contexts):
        return (await metric.ascore(user_input=question, response=answer, retrieved_contexts=contexts)).value

    def check(self, outputs, value):
        if not outputs:
            raise JudgeOutputError("no judge reply")
        lines = []
        for i, o in enumerate(outputs, start=1):
            v = _binary(o.verdict, f"verdict of context {i}")
            lines.append(f"context {i}: {'useful' if v else 'not useful'} ({_short(o.reason)})")
        return value, "\n".join(lines)
