"""Generation client failure handling, against a fault-injecting fake server
(tests/helpers/fake_openai.py); the real engine is exercised in tests/e2e."""

from __future__ import annotations

import pytest

from evaluation.candidates import Config, SamplingParams
from evaluation.dataset import Example
from evaluation.errors import EngineUnavailable
from evaluation.generation import build_request, generate
from tests.helpers.fake_openai import Behaviour, FakeOpenAI

EXAMPLES = [Example(f"e{i}", f"What is question number {i}?", (f"Context {i}.",), None) for i in range(6)]


def cfg(api="chat", temperature=0.0, top_k=-1) -> Config:
    return Config("fake", api, SamplingParams(temperature, 1.0, top_k, 16, 7), "t", "Q: {question}\n{context}\nA:")


def test_success_records_tokens_and_latency():
    with FakeOpenAI() as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES, concurrency=4, timeout_s=5, max_retries=0)
    assert [r.example_id for r in res] == [e.id for e in EXAMPLES]
    assert all(r.success and r.text == "Paris is the capital of France." for r in res)
    assert all(r.completion_tokens == 6 and r.prompt_tokens == 10 for r in res)
    assert all(0 < r.ttft_s <= r.latency_s for r in res)


def test_completions_api_is_streamed_too():
    with FakeOpenAI() as srv:
        res = generate(srv.base_url, cfg(api="completions"), EXAMPLES[:2], concurrency=2, timeout_s=5, max_retries=0)
        assert "prompt" in srv.b.bodies[0] and "messages" not in srv.b.bodies[0]
    assert all(r.success and r.text.startswith("Paris") for r in res)


def test_503_is_retried_with_backoff_then_succeeds():
    with FakeOpenAI(Behaviour(fail_first=2)) as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES[:3], concurrency=3, timeout_s=5, max_retries=3)
        assert srv.b.requests == 9  # 2 failures + 1 success per example
    assert all(r.success and r.attempts == 3 for r in res)


def test_retries_exhausted_is_a_failed_item_not_an_empty_answer():
    with FakeOpenAI(Behaviour(fail_first=10)) as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES[:2], concurrency=2, timeout_s=5, max_retries=1)
    assert all(not r.success for r in res)
    assert all("503" in r.error and r.attempts == 2 and r.latency_s is None for r in res)


def test_client_error_is_not_retried():
    with FakeOpenAI(Behaviour(status=400)) as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES[:2], concurrency=2, timeout_s=5, max_retries=3)
        assert srv.b.requests == 2
    assert all(not r.success and "400" in r.error for r in res)


def test_stalled_request_times_out_as_failed_item():
    with FakeOpenAI(Behaviour(stall_s=3)) as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES[:2], concurrency=2, timeout_s=0.5, max_retries=0)
    assert all(not r.success and "timeout" in r.error for r in res)


def test_engine_death_raises_and_keeps_finished_results():
    delivered = []
    with FakeOpenAI(Behaviour(die_after=2)) as srv:
        with pytest.raises(EngineUnavailable, match="stopped accepting connections"):
            generate(srv.base_url, cfg(), EXAMPLES, concurrency=1, timeout_s=5, max_retries=2,
                     on_result=delivered.append)  # fmt: skip
    assert [r.example_id for r in delivered if r.success] == ["e0", "e1"]


def test_request_body_carries_sampling_params():
    _, body = build_request(cfg(temperature=0.7, top_k=20), EXAMPLES[0])
    assert body["temperature"] == 0.7 and body["top_k"] == 20 and body["seed"] == 7 and body["stream"]
    _, greedy = build_request(cfg(temperature=0.0), EXAMPLES[0])
    assert "seed" not in greedy and "top_k" not in greedy
    assert "What is question number 0?" in greedy["messages"][-1]["content"]
