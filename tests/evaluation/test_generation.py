"""Generation client failure handling, against a fault-injecting fake server
(tests/helpers/fake_openai.py): the real vLLM engine cannot stall, drop a
connection, refuse connections for a while or echo credentials on demand.
The real engine is exercised in tests/e2e."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from evaluation.candidates import Config, SamplingParams
from evaluation.dataset import Example
from evaluation.errors import EngineUnavailable
from evaluation.generation import build_request, generate, generate_jobs
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
                     on_result=delivered.append, engine_dead_after_s=0.5)  # fmt: skip
    assert [r.example_id for r in delivered if r.success] == ["e0", "e1"]


def _free_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens there once closed


def test_endpoint_refusing_every_connection_is_engine_unavailable_quickly():
    t0 = time.monotonic()
    with pytest.raises(EngineUnavailable, match="stopped accepting connections"):
        generate(_free_port_url(), cfg(), EXAMPLES, concurrency=2, timeout_s=5, max_retries=1,
                 engine_dead_after_s=0.5)  # fmt: skip
    assert time.monotonic() - t0 < 3


def _prompt_of(body: dict) -> str:
    return json.dumps(body.get("messages") or body.get("prompt"))


@pytest.mark.parametrize("fault", [{"stall_s": 1.5}, {"status": 503}], ids=["stall", "503"])
def test_request_timeout_bounds_the_request_including_retries_and_backoff(fault):
    # Before: every attempt had its own timeout and the backoff sleeps came on
    # top (stall: >= 2.25 s, 503: >= 1.75 s for a 0.5 s / 1 s budget).
    timeout_s = 0.5 if "stall_s" in fault else 1.0
    with FakeOpenAI(Behaviour(**fault)) as srv:
        t0 = time.monotonic()
        res = generate(srv.base_url, cfg(), EXAMPLES[:2], concurrency=2, timeout_s=timeout_s, max_retries=3)
        elapsed = time.monotonic() - t0
    assert elapsed < timeout_s + 0.5, elapsed
    assert all(not r.success and r.latency_s is None for r in res)
    assert all(("timeout" in r.error) if "stall_s" in fault else ("503" in r.error) for r in res)


def test_no_concurrency_slot_is_held_during_a_backoff_sleep():
    # One slot; each prompt gets one 503 first. While e0 sleeps before its
    # retry, e1 must be able to use the slot.
    with FakeOpenAI(Behaviour(fail_first=1)) as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES[:2], concurrency=1, timeout_s=5, max_retries=2)
        order = [_prompt_of(b) for b in srv.b.bodies]
    assert len(order) == 4 and len(set(order[:2])) == 2  # e1 went first while e0 slept (before: e0, e0, e1, e1)
    assert all(r.success and r.attempts == 2 for r in res)


def test_request_dropped_on_every_attempt_is_a_failed_item_not_an_abort():
    # The server accepts connections but drops this one request mid-stream
    # every time: that request fails, the engine is alive, the batch goes on.
    with FakeOpenAI(Behaviour(drop_for=lambda body: "number 0?" in _prompt_of(body))) as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES[:4], concurrency=2, timeout_s=5, max_retries=1)
    assert not res[0].success and res[0].attempts == 2 and res[0].error and res[0].latency_s is None
    assert all(r.success for r in res[1:])


def test_brief_refusal_is_not_engine_death():
    # Nothing listens for the first 0.3 s, so e0 (no retries) is refused; the
    # engine answers well before engine_dead_after_s, so e0 is a failed item
    # and the rest succeed.
    srv = FakeOpenAI()
    starter = threading.Timer(0.3, srv.__enter__)
    starter.start()
    try:
        res = generate(srv.base_url, cfg(), EXAMPLES[:1], concurrency=1, timeout_s=5, max_retries=0,
                       engine_dead_after_s=1)  # fmt: skip
        res += generate(srv.base_url, cfg(), EXAMPLES[1:3], concurrency=1, timeout_s=5, max_retries=0,
                        engine_dead_after_s=1)  # fmt: skip
    finally:
        starter.join()
        srv.__exit__()
    assert not res[0].success and "ConnectError" in res[0].error
    assert all(r.success for r in res[1:])


def test_cache_writes_run_off_the_event_loop_and_finish_before_return():
    # on_result stands for a slow cache write (GCS): the first one blocks until
    # the server has seen all three requests, which can only happen if the
    # event loop keeps sending while the write runs.
    delivered, unblocked = [], []

    with FakeOpenAI() as srv:
        def slow_write(_config, r):
            if not delivered:
                deadline = time.monotonic() + 3
                while srv.b.requests < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                unblocked.append(srv.b.requests >= 3)
            time.sleep(0.05)
            delivered.append(r.example_id)

        c = cfg()
        res = generate_jobs(srv.base_url, [(c, ex) for ex in EXAMPLES[:3]], concurrency=1, timeout_s=5,
                            max_retries=0, on_result=slow_write)  # fmt: skip
        assert sorted(delivered) == ["e0", "e1", "e2"]  # every write finished before generate_jobs returned
    assert unblocked == [True]
    assert all(r.success for r in res)


def test_api_key_is_sent_as_bearer_token():
    with FakeOpenAI(Behaviour(api_key="sk-test-123")) as srv:
        ok = generate(srv.base_url, cfg(), EXAMPLES[:2], concurrency=2, timeout_s=5, max_retries=0,
                      api_key="sk-test-123")  # fmt: skip
        assert srv.b.auth == ["Bearer sk-test-123"] * 2
        refused = generate(srv.base_url, cfg(), EXAMPLES[:1], concurrency=1, timeout_s=5, max_retries=3)
        assert srv.b.requests == 3  # 401 is not retried
    assert all(r.success for r in ok)
    assert not refused[0].success and "401" in refused[0].error


def test_api_key_never_reaches_results_errors_or_logs(caplog):
    # A leaky server echoes the Authorization header in its error bodies.
    secret = "sk-very-secret-0123456789"
    caplog.set_level(logging.DEBUG)
    delivered = []
    with FakeOpenAI(Behaviour(api_key=secret, status=500, leak_auth=True)) as srv:
        res = generate(srv.base_url, cfg(), EXAMPLES[:2], concurrency=2, timeout_s=5, max_retries=1,
                       api_key=secret, on_result=delivered.append)  # fmt: skip
        assert srv.b.auth[0] == f"Bearer {secret}" and "you sent" in res[0].error  # the leak was exercised
    assert all(not r.success and "500" in r.error for r in res)
    assert secret not in json.dumps([r.to_json() for r in res + delivered])
    assert secret not in caplog.text


def test_request_body_carries_sampling_params():
    _, body = build_request(cfg(temperature=0.7, top_k=20), EXAMPLES[0])
    assert body["temperature"] == 0.7 and body["top_k"] == 20 and body["seed"] == 7 and body["stream"]
    _, greedy = build_request(cfg(temperature=0.0), EXAMPLES[0])
    assert "seed" not in greedy and "top_k" not in greedy
    assert "What is question number 0?" in greedy["messages"][-1]["content"]
