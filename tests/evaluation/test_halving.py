"""Successive halving: the schedule, the selection, and a sweep through the
pipeline against a fake endpoint whose answer quality depends on the
configuration (max_tokens), so the right survivors are known."""

from __future__ import annotations

import json
import math
import re

import pytest

from evaluation import halving
from evaluation.candidates import Config
from evaluation.errors import SuiteError
from evaluation.runstore import RunStore
from evaluation.stages import generate as generate_stage
from evaluation.stages import inputs
from evaluation.stages import plan as plan_stage
from evaluation.stages import score as score_stage
from evaluation.stages import select as select_stage
from evaluation.suite import load_suite
from tests.conftest import write_suite
from tests.helpers.fake_openai import Behaviour, FakeOpenAI

ENDPOINT = {"model_fingerprint": "fake-weights", "engine": "fake-1"}


def test_schedule_halves_configs_and_grows_examples():
    assert halving.schedule(8, 48, eta=2, min_examples=6, min_survivors=2) == [(8, 6), (4, 12)]
    assert halving.schedule(8, 48, eta=2, min_examples=6, min_survivors=1) == [(8, 6), (4, 12), (2, 24)]
    assert halving.schedule(9, 100, eta=3, min_examples=5, min_survivors=1) == [(9, 5), (3, 15)]
    assert halving.schedule(2, 48, eta=2, min_examples=6, min_survivors=2) == []  # nothing to halve
    assert halving.schedule(8, 6, eta=2, min_examples=6, min_survivors=2) == []  # subset = dataset


def test_keep_top_is_deterministic_and_puts_nan_last():
    comp = {"a": 0.5, "b": math.nan, "c": 0.7, "d": 0.5}
    assert halving.keep_top(comp, 3) == ["c", "a", "d"]
    assert halving.order(["1", "2", "3", "4"], 0) == halving.order(["1", "2", "3", "4"], 0)


def test_halving_needs_a_cheap_weighted_metric(tmp_path):
    path = write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1", extra="""
search: {strategy: successive_halving}
scoring: {scorers: [relevance, latency], weights: {relevance: 0.5, latency: 0.5}}
""")
    load_suite(path)  # relevance is cheap, per example and weighted: fine
    # latency is configuration-level (measured by the latency probe): it cannot rank halving rounds.
    path.write_text(path.read_text().replace("weights: {relevance: 0.5, latency: 0.5}", "weights: {latency: 1.0}"))
    with pytest.raises(SuiteError, match=r"successive_halving.*weight at least one of \['relevance'\]"):
        load_suite(path)


def _context_answer(body: dict) -> str:
    """Good configurations (max_tokens 16) answer with the first context
    sentence; the others with an irrelevant sentence whose relevance falls
    with max_tokens."""
    content = body["messages"][-1]["content"]
    first = re.search(r"\[1\] ([^.]*\.)", content).group(1)
    return {16: first, 8: "The weather was mild today.", 4: "Bananas.", 2: "Hmm."}[body["max_tokens"]]


def test_successive_halving_keeps_the_best_and_spends_fewer_tokens(tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(answer_for=_context_answer)) as srv:
        suite_path = str(write_suite(tmp_path / "s.yaml", base_url=srv.base_url, max_tokens="[16, 8, 4, 2]", extra="""
search: {strategy: successive_halving, halving: {eta: 2, min_examples: 2, min_survivors: 1}}
scoring: {scorers: [relevance, groundedness, latency], weights: {relevance: 0.5, groundedness: 0.5}}
"""))  # fmt: skip
        configs = plan_stage.plan(suite_path)
        endpoints = {"fake": {**ENDPOINT, "base_url": srv.base_url}}
        kept = select_stage.select_configs(suite_path, configs, endpoints, "run-h")
        by_tokens = {c["config_id"]: c["sampling"]["max_tokens"] for c in configs}
        # One round: 4 configurations on 2 of the 4 examples, keep 2.
        assert sorted(by_tokens[c["config_id"]] for c in kept) == [8, 16]
        assert srv.b.requests == 8
        rec = json.loads((RunStore("run-h").dir / "halving.json").read_text())
        assert [r["examples"] for r in rec["rounds"]] == [2]
        assert sorted(by_tokens[c] for c in rec["eliminated"]) == [2, 4]

        # Full evaluation of the survivors reuses the round's generations.
        for batch in plan_stage.batches_by_model(kept):
            generate_stage.generate_model(suite_path, batch["configs"], endpoints["fake"], "run-h")
        assert srv.b.requests == 8 + 2 * 2
        scored = [score_stage.score_config(suite_path, c, "run-h") for c in kept]
        summary = select_stage.halving_summary("run-h", scored)
        assert summary["tokens_spent"] < summary["tokens_full_grid_estimate"]
        assert 0 < summary["token_share"] < 1
        rows = select_stage.eliminated_rows(summary)
        assert {r["config_id"] for r in rows} == set(rec["eliminated"])
        assert all(r["rank"] is None and "round 1" in r["note"] for r in rows)


def test_grid_strategy_selects_everything(tmp_path, llmops_home):
    with FakeOpenAI() as srv:  # planning reads the endpoint's model identity
        suite_path = str(write_suite(tmp_path / "s.yaml", base_url=srv.base_url, max_tokens="[16, 8]"))
        configs = plan_stage.plan(suite_path)
    assert select_stage.select_configs(suite_path, configs, {}, "run-g") == configs
    assert not (RunStore("run-g").dir / "halving.json").exists()


def test_cached_dataset_rows_need_no_engine_under_halving_even_with_probes_missing(tmp_path, llmops_home):
    """Under successive halving, bias probes are generated for survivors only,
    so an unchanged re-run whose dataset rows are cached starts no engine up
    front; under grid the missing probes of every configuration do need it."""
    with FakeOpenAI(Behaviour(answer_for=_context_answer)) as srv:
        extra = """
bias: {categories: [age]}
scoring: {scorers: [relevance, bias], weights: {relevance: 0.9, bias: 0.1}}
search: {strategy: successive_halving, halving: {eta: 2, min_examples: 2, min_survivors: 1}}
"""
        path = write_suite(tmp_path / "s.yaml", base_url=srv.base_url, max_tokens="[16, 8]", extra=extra)
        suite = load_suite(path)
        configs = plan_stage.plan(str(path))
        cfgs = [Config.from_json(c) for c in configs]
        generate_stage.generate_items(suite, cfgs, inputs.examples_for(suite), {**ENDPOINT, "base_url": srv.base_url})
        plan_stage.annotate_missing(str(path), configs, {"fake": ENDPOINT})
        assert all(c["missing_dataset"] == 0 and c["missing"] > 0 for c in configs)
        assert plan_stage.engines_needed(str(path), configs) == set()
        path.write_text(path.read_text().replace("successive_halving", "grid"))
        assert plan_stage.engines_needed(str(path), configs) == {"fake"}
