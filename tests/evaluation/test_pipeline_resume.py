"""A generation task that dies with its engine and is retried redoes only
what is missing; an unchanged re-run sends no request at all. The engine
death is injected with the fake server (the real one cannot die on demand)."""

from __future__ import annotations

import json

import pytest

from evaluation.candidates import expand_configs
from evaluation.errors import EngineUnavailable
from evaluation.stages import generate as generate_stage
from evaluation.stages import score as score_stage
from evaluation.suite import load_suite
from tests.conftest import write_suite
from tests.helpers.fake_openai import Behaviour, FakeOpenAI

ENDPOINT = {"model_fingerprint": "fake-weights", "engine": "fake-1"}


def test_killed_generation_resumes_from_cache_exactly_once(tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(die_after=2)) as dying:
        suite_path = str(write_suite(tmp_path / "s.yaml", base_url=dying.base_url))
        config = expand_configs(load_suite(suite_path))[0].to_json()
        with pytest.raises(EngineUnavailable):
            generate_stage.generate_config(suite_path, config, {**ENDPOINT, "base_url": dying.base_url}, "run-1")

    with FakeOpenAI() as fresh:  # the retry, against a restarted engine
        out = generate_stage.generate_config(suite_path, config, {**ENDPOINT, "base_url": fresh.base_url}, "run-1")
        assert fresh.b.requests == 2  # 4 rows, 2 finished before the crash
    assert (out["cached"], out["generated"], out["failed"]) == (2, 2, 0)
    rows = [json.loads(x) for x in open(out["path"])]
    assert sorted(r["example_id"] for r in rows) == ["t-1", "t-2", "t-3", "t-4"]  # each exactly once

    with FakeOpenAI() as again:  # unchanged re-run
        out = generate_stage.generate_config(suite_path, config, {**ENDPOINT, "base_url": again.base_url}, "run-2")
        assert again.b.requests == 0
    assert out["cached"] == 4


def test_failed_items_are_not_cached_and_are_retried_next_run(tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(status=500)) as broken:
        suite_path = str(write_suite(tmp_path / "s.yaml", base_url=broken.base_url))
        config = expand_configs(load_suite(suite_path))[0].to_json()
        out = generate_stage.generate_config(suite_path, config, {**ENDPOINT, "base_url": broken.base_url}, "r1")
    assert out["failed"] == 4
    scored = score_stage.score_config(suite_path, config, "r1")
    assert scored["metrics"]["failed_rate"] == 1.0
    assert scored["metrics"]["composite"] is None  # NaN (not scored), as JSON null; never 0
    with FakeOpenAI() as ok:
        out = generate_stage.generate_config(suite_path, config, {**ENDPOINT, "base_url": ok.base_url}, "r2")
        assert ok.b.requests == 4


def test_cache_key_includes_model_and_engine_identity(tmp_path, llmops_home):
    """New weights under the same name (the configuration's model identity)
    and a new engine version each miss the cache; the same ones hit it."""
    with FakeOpenAI() as srv:
        suite_path = str(write_suite(tmp_path / "s.yaml", base_url=srv.base_url))
        config = expand_configs(load_suite(suite_path))[0].to_json()
        ep = {**ENDPOINT, "base_url": srv.base_url}
        generate_stage.generate_config(suite_path, config, ep, "r1")
        generate_stage.generate_config(suite_path, config, ep, "r2")
        assert srv.b.requests == 4
        new_weights = {**config, "model_identity": "sha:new-weights"}
        generate_stage.generate_config(suite_path, new_weights, ep, "r3")
        assert srv.b.requests == 8
        generate_stage.generate_config(suite_path, config, {**ep, "engine": "fake-2"}, "r4")
        assert srv.b.requests == 12
