"""Ragas judge scorers: bad judge output against the fault-injecting fake
server (no engine), and a real small judge (slow)."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from evaluation.dataset import Example, load_examples
from evaluation.generation import RequestResult
from evaluation.scorers import JudgeEndpoint, ScoringContext, ScoringItem
from evaluation.scorers._judge import ERROR_SUFFIX, RATIONALE_SUFFIX, judge_error_rate
from evaluation.scorers.ragas_judge import RagasContextPrecision, RagasFaithfulness, RagasResponseRelevancy
from tests.conftest import TINY
from tests.helpers.fake_openai import Behaviour, FakeOpenAI
from tests.helpers.scoring import UNIT_CONFIG

CONFIG = UNIT_CONFIG
SCORERS = [RagasFaithfulness(), RagasResponseRelevancy(), RagasContextPrecision()]
FRANCE = Example("t-1", "What is the capital of France?", ("Paris is the capital of France.",), "Paris.")


def _item(example: Example, text: str) -> ScoringItem:
    return ScoringItem(example=example, result=RequestResult(example_id=example.id, success=True, text=text))


def _ctx(base_url: str, **kw) -> ScoringContext:
    judge = JudgeEndpoint(base_url=base_url, model="fake", identity="fake/test", **kw)
    return ScoringContext(config=CONFIG, judge=judge)


def _assert_all_judge_errors(rows: list[dict], metric: str, n: int, why: str) -> None:
    assert len(rows) == n
    for r in rows:
        assert math.isnan(r[metric]) and r[metric + ERROR_SUFFIX] == 1.0, r
        assert why in r[metric + RATIONALE_SUFFIX], r[metric + RATIONALE_SUFFIX]


@pytest.mark.parametrize("content", ["The answer is yes.", '{"unrelated": true}', '{"statements": '])
def test_malformed_judge_output_is_a_judge_error_for_every_item(content):
    items = [_item(FRANCE, f"Paris is the capital of France ({i}).") for i in range(5)]
    with FakeOpenAI(Behaviour(answer=content)) as srv:
        ctx = _ctx(srv.base_url, timeout_s=10, max_retries=0, concurrency=2)
        for s in SCORERS:
            rows = s.score(items, ctx)
            _assert_all_judge_errors(rows, s.name, len(items), "judge error")
            assert s.aggregate(rows)[s.name + "_judge_error_rate"] == 1.0
        # one call per item each: an invalid reply is not re-asked
        assert srv.b.requests == 3 * len(items) and all(s.last_requests == len(items) for s in SCORERS)
        assert all(not b.get("stream") for b in srv.b.bodies)
        assert all(b["response_format"]["type"] == "json_schema" for b in srv.b.bodies)


def test_valid_but_meaningless_verdicts_are_not_coerced():
    # Valid JSON of the right shape, but a verdict Ragas would count: 7 is not 0/1.
    with FakeOpenAI(Behaviour(answer='{"reason": "x", "verdict": 7}')) as srv:
        rows = RagasContextPrecision().score([_item(FRANCE, "Paris.")], _ctx(srv.base_url, max_retries=0))
    _assert_all_judge_errors(rows, "ragas_context_precision", 1, "not 0 or 1")


def test_a_valid_reply_is_scored_with_a_rationale():
    with FakeOpenAI(Behaviour(answer='{"reason": "It names Paris.", "verdict": 1}')) as srv:
        rows = RagasContextPrecision().score([_item(FRANCE, "Paris.")], _ctx(srv.base_url))
    (r,) = rows
    assert r["ragas_context_precision"] == pytest.approx(1.0) and r["ragas_context_precision_judge_error"] == 0.0
    assert "It names Paris." in r["ragas_context_precision_rationale"]


def _faithfulness_replies(verdicts: list[int]):
    def answer_for(body: dict) -> str:
        if body["response_format"]["json_schema"]["name"] == "StatementGeneratorOutput":
            return json.dumps({"statements": ["Paris is the capital of France.", "Paris is in Spain."]})
        return json.dumps({"statements": [{"statement": "s", "reason": f"r{i}", "verdict": v}
                                          for i, v in enumerate(verdicts)]})  # fmt: skip

    return answer_for


def test_faithfulness_scores_statements_and_rejects_a_verdict_list_that_does_not_match():
    item = _item(FRANCE, "Paris is the capital of France. Paris is in Spain.")
    with FakeOpenAI(Behaviour(answer_for=_faithfulness_replies([1, 0]))) as srv:
        (r,) = RagasFaithfulness().score([item], _ctx(srv.base_url))
    assert r["ragas_faithfulness"] == 0.5 and r["ragas_faithfulness_judge_error"] == 0.0
    assert "[supported] Paris is the capital" in r["ragas_faithfulness_rationale"]
    assert "[unsupported] Paris is in Spain" in r["ragas_faithfulness_rationale"]
    with FakeOpenAI(Behaviour(answer_for=_faithfulness_replies([1]))) as srv:
        rows = RagasFaithfulness().score([item], _ctx(srv.base_url))
    _assert_all_judge_errors(rows, "ragas_faithfulness", 1, "1 verdicts for 2 statements")


def test_stalled_judge_times_out_within_a_bounded_time():
    items = [_item(FRANCE, "Paris.") for _ in range(4)]
    with FakeOpenAI(Behaviour(answer="{}", stall_s=6)) as srv:
        ctx = _ctx(srv.base_url, timeout_s=0.5, max_retries=1, concurrency=4)
        t0 = time.monotonic()
        rows = RagasFaithfulness().score(items, ctx)
        took = time.monotonic() - t0
    _assert_all_judge_errors(rows, "ragas_faithfulness", len(items), "judge error")
    # 2 calls x 0.5 s per item, all 4 items at once: far below one stall
    assert took < 5, took


def test_empty_answer_is_nan_without_judge_error_and_no_call():
    with FakeOpenAI() as srv:
        ctx = _ctx(srv.base_url)
        for s in SCORERS:
            (r,) = s.score([_item(FRANCE, "  \u200b ")], ctx)
            assert math.isnan(r[s.name]) and r[s.name + ERROR_SUFFIX] == 0.0
        assert srv.b.requests == 0


def test_unreachable_judge_fails_every_item_not_the_batch():
    ctx = _ctx("http://127.0.0.1:9/v1", timeout_s=2, max_retries=0)
    rows = RagasResponseRelevancy().score([_item(FRANCE, "Paris."), _item(FRANCE, "Lyon.")], ctx)
    _assert_all_judge_errors(rows, "ragas_response_relevancy", 2, "APIConnectionError")


def _success_total(base_url: str) -> float:
    import httpx

    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total{"))  # fmt: skip


# Measured on this test's 3 rows with the bundled SmolLM2-135M judge (vLLM
# CPU): 2 of 9 verdicts are judge errors (faithfulness 2/3: it repeats one
# statement until max_tokens; response relevancy and context precision 0/3).
# The bound leaves 3 verdicts of margin (faithfulness failed on 75-85% of the
# rows in the README's larger runs); a judge that breaks further fails.
MAX_JUDGE_ERROR_RATE = 5 / 9


@pytest.mark.slow
def test_real_small_judge_gives_values_or_judge_errors(judge_endpoint):
    examples = load_examples(TINY)[:3]
    answers = {"t-1": "The capital of France is Paris.", "t-2": "There are seven days in a week.",
               "t-3": "The sky is blue on a clear day."}  # fmt: skip
    items = [_item(e, answers.get(e.id, e.reference or "I don't know.")) for e in examples]
    ctx = ScoringContext(config=CONFIG, judge=judge_endpoint)
    flags = []
    for s in SCORERS:
        try:
            before = _success_total(judge_endpoint.base_url)
        except Exception:  # noqa: BLE001 - metrics are only for the printout
            before = None
        t0 = time.monotonic()
        rows = s.score(items, ctx)
        took = time.monotonic() - t0
        calls = (_success_total(judge_endpoint.base_url) - before) if before is not None else math.nan
        for r in rows:
            v, err = r[s.name], r[s.name + ERROR_SUFFIX]
            assert (0.0 <= v <= 1.0 and err == 0.0) or (math.isnan(v) and err == 1.0), r
            flags.append(err)
        rate = judge_error_rate(rows, [s.name])
        # The server's counter also sees other clients of a shared judge; last_requests is ours only.
        print(f"\n{s.name}: {took / len(items):.1f} s/row, {s.last_requests / len(items):.2f} judge requests/row "
              f"({calls / len(items):.2f} by the server's counter), judge error rate {rate:.2f}")  # fmt: skip
        for r in rows:
            print(f"  {r[s.name]!r:>8}  {r[s.name + RATIONALE_SUFFIX][:300]!r}")
    rate = sum(flags) / len(flags)
    print(f"overall judge error rate: {rate:.2f}")
    assert rate <= MAX_JUDGE_ERROR_RATE + 1e-9, f"judge error rate {rate:.2f} > bound {MAX_JUDGE_ERROR_RATE:.2f}"
