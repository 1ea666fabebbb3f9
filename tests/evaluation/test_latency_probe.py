"""Latency is measured as serving latency (issue item 3): a latency probe
at the suite's serving concurrency, not the throughput sweep's queueing;
every configuration of a run in the same session.

The endpoint is a fake that serves one request at a time (a stand-in for an
engine whose requests queue: the real CPU engine cannot be made to queue
deterministically), so a request's latency is its service time plus the
time it waited behind the others in flight."""

from __future__ import annotations

import numpy as np

from evaluation.runstore import RunStore
from tests.conftest import write_suite
from tests.helpers.fake_openai import Behaviour, FakeOpenAI
from tests.helpers.pipeline import run_stages

SERVICE_S = 0.3


def _suite(tmp_path, url, max_tokens="[16, 8]"):
    extra = """
scoring: {scorers: [relevance, latency], weights: {relevance: 0.5, latency: 0.5}, latency_budget_s: 2.0}
latency: {sample: 4, concurrency: 1}
"""
    path = write_suite(tmp_path / "s.yaml", base_url=url, max_tokens=max_tokens, extra=extra)
    # The sweep keeps 8 requests in flight: as a throughput run does.
    path.write_text(path.read_text().replace("concurrency: 2,", "concurrency: 8,"))
    return str(path)


def test_latency_is_measured_at_the_serving_load_not_off_the_sweep(tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(serial_s=SERVICE_S)) as srv:
        out = run_stages(_suite(tmp_path, srv.base_url), "run-1")
    for s in out["scored"]:
        cid = s["config"]["config_id"]
        m = s["metrics"]
        sweep = [g["latency_s"] for g in RunStore("run-1").generations(cid).values()]
        assert np.median(sweep) > 3 * SERVICE_S, "the sweep queued (the fault this test is about)"
        assert m["latency_probe_requests"] == 4 and m["latency_probe_failed"] == 0
        assert m["latency_e2e_p95_s"] < SERVICE_S + 0.25, m  # one at a time: service time (+ overhead) only
        assert m["latency_ttft_p50_s"] <= m["latency_e2e_p50_s"]
        assert m["latency"] > 1 - (SERVICE_S + 0.25) / 2.0
        assert m["sweep_throughput_tok_s"] > 0  # the sweep stays reported, as throughput


def _chat_requests(srv) -> int:  # not the readiness probe's one-token completion
    return sum("messages" in body for body in srv.b.bodies)


def test_every_configuration_is_measured_in_one_session(tmp_path, llmops_home):
    with FakeOpenAI() as srv:
        path = _suite(tmp_path, srv.base_url)
        run_stages(path, "run-1")
        after_first = _chat_requests(srv)
        assert after_first == 2 * 4 + 2 * 4  # the sweep and the probe of both configurations
        second = run_stages(path, "run-2")  # unchanged: the whole session is reused from the cache
        assert _chat_requests(srv) == after_first
        assert all(s["metrics"]["latency_probe_requests"] == 4 for s in second["scored"])

        # A new configuration joins: it cannot be paired with latencies of an
        # earlier session, so every configuration is measured again now.
        path = _suite(tmp_path, srv.base_url, max_tokens="[16, 8, 4]")
        third = run_stages(path, "run-3")
        assert all(c["probe"] for c in third["configs"])
        fresh_generations = 4  # the new configuration's dataset rows
        assert _chat_requests(srv) == after_first + fresh_generations + 3 * 4


def test_a_session_with_a_failed_probe_request_is_scored_zero_and_not_cached(tmp_path, llmops_home):
    def first_row(body: dict) -> bool:
        return "messages" in body and "capital of France" in body["messages"][-1]["content"]

    with FakeOpenAI(Behaviour(drop_for=first_row)) as flaky:
        path = _suite(tmp_path, flaky.base_url)
        out = run_stages(path, "run-1")
    for s in out["scored"]:
        assert s["metrics"]["latency_probe_failed"] == 1 and s["metrics"]["latency_probe_requests"] == 4
        assert s["metrics"]["latency"] <= 0.75  # the failed request counts 0 of 1
    with FakeOpenAI() as ok:
        path = _suite(tmp_path, ok.base_url)
        second = run_stages(path, "run-2")
    assert all(c["probe"] for c in second["configs"]), "a session with a failure must be measured again"
    assert all(s["metrics"]["latency_probe_failed"] == 0 for s in second["scored"])

