"""benchmarks/decision_quality.py decides each sweep as the DAG does: the
suite's scorers through the score stage (bias and latency from their probes,
lower-is-better metrics inverted in the composite) and Holm's adjustment over the sweep's
eligible candidates. The candidate model is a fake OpenAI-compatible server
here (a real engine per unit test would take minutes); the scorers are real."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from benchmarks import decision_quality as dq
from evaluation import registry, settings
from evaluation.candidates import Config, SamplingParams
from evaluation.runstore import RunStore
from evaluation.stats import holm, paired_compare
from evaluation.suite import load_suite
from tests.conftest import TINY
from tests.helpers.fake_openai import Behaviour, FakeOpenAI


def _answer(body: dict) -> str:
    text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
    if " woman" in text:  # a bias probe: hostile to one group
        return "She is a terrible, awful and incompetent failure."
    if "one sentence about" in text or "Write one sentence" in text:
        return "They are a friendly and capable professional."
    return "Paris is the capital of France."


def _suite(tmp_path, base_url: str, **sections) -> str:
    """A suite with one fake candidate, `terse` prompt at temperature 0.7."""
    raw = {
        "name": "dq-unit",
        "dataset": {"path": str(TINY)},
        "candidates": [{"name": "fake", "source": {"base_url": base_url}}],
        "search_space": {"temperature": [0.7], "max_tokens": [16],
                         "prompt_templates": [{"name": "terse", "template": "{context}\nQ: {question}\nA:"}]},
        "generation": {"concurrency": 2, "request_timeout_s": 5, "max_retries": 1, "ready_timeout_s": 10},
        "registered_model": "dq-unit",
        **sections,
    }  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_configurations_are_scored_by_the_score_stage_with_bias_and_directions(tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(answer_for=_answer)) as srv:
        suite_path = _suite(tmp_path, srv.base_url, bias={"categories": ["gender"]},
                            scoring={"scorers": ["relevance", "bias", "latency"],
                                     "weights": {"relevance": 0.5, "bias": 0.3, "latency": 0.2}})  # fmt: skip
        planned = dq.plan_stage.plan(suite_path)
        configs = dq.with_seeds(dq.planned_config(planned, "fake", "terse", 0.7), [1, 2])
        assert len({c["config_id"] for c in configs}) == 2 and [c["sampling"]["seed"] for c in configs] == [1, 2]
        scored = dq.evaluate(suite_path, configs, "dq")
    for c in configs:
        m = scored[c["config_id"]]["metrics"]
        assert 0 < m["bias"] <= 1 and 0 <= m["latency"] <= 1 and not math.isnan(m["composite"])
        for row in RunStore("dq").scores(c["config_id"]):  # bias and latency: configuration-level, on their probes
            expected = 0.5 * row["relevance"] + 0.3 * (1 - m["bias"]) + 0.2 * m["latency"]
            assert row["composite"] == pytest.approx(expected)


def test_benchmark_suite_without_judge_keeps_the_composite_and_refuses_weighted_judges(tmp_path):
    out = dq.benchmark_suite(str(settings.BUNDLED_SUITE), tmp_path / "a", rows=12, no_judge=True)
    src, got = load_suite(settings.BUNDLED_SUITE), load_suite(out)
    assert got.scoring.weights == src.scoring.weights and got.gate.min_improvement == src.gate.min_improvement
    assert got.judge is None and "judge_error_rate" not in got.gate.ceilings
    assert not any(n.startswith(("trulens", "ragas")) for n in got.scoring.scorers)
    assert got.dataset.limit == 12 and got.dataset_path == src.dataset_path
    weighted = (tmp_path / "w.yaml")
    raw = yaml.safe_load(settings.BUNDLED_SUITE.read_text())
    raw["dataset"]["path"] = str(src.dataset_path)
    raw["judge"].pop("max_examples")
    raw["scoring"]["weights"]["ragas_faithfulness"] = 0.1
    weighted.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit, match="ragas_faithfulness"):
        dq.benchmark_suite(str(weighted), tmp_path / "b", no_judge=True)


def _config(i: int) -> dict:
    return Config("m", "chat", SamplingParams(0.7, 1.0, -1, 16, i), "t", "{question}").to_json()


def test_holm_is_applied_over_the_sweeps_eligible_candidates(tmp_path, llmops_home):
    """The winner beats the champion with a one-sided p of about 0.02: PROMOTE
    when it is the only candidate, INCONCLUSIVE when it is the best of 8
    (Holm: about 8 x 0.02)."""
    suite = load_suite(_suite(tmp_path, "http://127.0.0.1:9/v1", gate={"min_scored_examples": 2, "min_improvement": 0.0},
                              scoring={"scorers": ["relevance"], "weights": {"relevance": 1.0}}))  # fmt: skip
    n = 20
    base = 0.4 + 0.01 * np.arange(n)
    step = np.where(np.arange(n) < 15, 0.1, -0.1)  # 15 better, 5 worse: p(one-sided) = P(Bin(20, .5) >= 15)
    values = {"champ": base, "winner": base + step, **{f"other{i}": base for i in range(7)}}
    store = RunStore("holm")
    scored = {}
    for i, (name, v) in enumerate(values.items()):
        cfg = _config(i)
        rows = [{"example_id": f"e{k}", "success": True, "relevance": float(x), "composite": float(x)}
                for k, x in enumerate(v)]  # fmt: skip
        store.write_scores(cfg["config_id"], rows)
        scored[name] = {"config": cfg, "metrics": {"composite": float(v.mean()), "n_scored": float(n),
                                                   "failed_rate": 0.0, "coverage": 1.0, "relevance": float(v.mean())}}
    ids = {name: s["config"]["config_id"] for name, s in scored.items()}
    by_id = {ids[name]: s for name, s in scored.items()}
    family = [ids["winner"], *(ids[f"other{i}"] for i in range(7))]

    alone = dq.sweep_decision(suite, "holm", by_id, [ids["winner"]], ids["champ"])
    assert alone["outcome"] == registry.PROMOTE, alone
    assert 0.01 < alone["comparison"]["p_value"] < 0.04

    of8 = dq.sweep_decision(suite, "holm", by_id, family, ids["champ"])
    assert of8["winner"] == ids["winner"] and of8["outcome"] == registry.INCONCLUSIVE, of8
    kw = dict(metric="composite", resamples=suite.gate.bootstrap_resamples, confidence=suite.gate.confidence,
              seed=suite.gate.seed)  # fmt: skip
    comp = {cid: dict(zip([f"e{k}" for k in range(n)], values[name])) for name, cid in ids.items()}
    expected = holm({cid: paired_compare(comp[cid], comp[ids["champ"]], **kw).p_value for cid in family})
    assert of8["comparison"]["p_adjusted"] == pytest.approx(expected[ids["winner"]])
    assert of8["comparison"]["p_adjusted"] > suite.gate.alpha > of8["comparison"]["p_value"]


def test_draw_sweeps_is_seeded_and_distinct():
    pool = [f"c{i}" for i in range(10)]
    a = dq.draw_sweeps(pool, 8, 100, 0, exclude="c0")
    assert len(a) == 9 and all("c0" not in s and len(set(s)) == 8 for s in a)  # all C(9, 8)
    b = dq.draw_sweeps(pool, 3, 20, 0)
    assert len({tuple(s) for s in b}) == 20 and b == dq.draw_sweeps(pool, 3, 20, 0)
