"""Configuration identity covers the model itself (issue item 1), through
the stages as the DAG runs them, against fake OpenAI-compatible endpoints
whose /v1/models reports the weights behind a served name (a fake: a real
remote endpoint cannot be made to swap its weights on demand).

- new weights under the champion's served name are a new configuration,
  compared with the champion's *recorded* model and promoted when better;
- the baseline runs the champion's recorded model, never the suite's;
- when the recorded model is gone, or changed under the same URL, the gate
  is INCONCLUSIVE and says why, and nothing moves.
"""

from __future__ import annotations

import re

from evaluation import registry, settings
from tests.conftest import REPO, write_suite
from tests.helpers.fake_openai import Behaviour, FakeOpenAI
from tests.helpers.pipeline import run_stages

DATASET = REPO / "suites" / "data" / "world_facts_rag.jsonl"
EXTRA = """
scoring: {scorers: [relevance, groundedness], weights: {relevance: 0.5, groundedness: 0.5}}
"""


def _good(body: dict) -> str:
    if "messages" not in body:  # the readiness probe
        return "Hello."
    return re.search(r"\[1\] ([^.]*\.)", body["messages"][-1]["content"]).group(1)


def _suite(tmp_path, url):
    return str(write_suite(tmp_path / "s.yaml", base_url=url, dataset=DATASET, extra=EXTRA))


def test_new_weights_under_the_champions_name_are_compared_with_the_recorded_model_and_promoted(
        tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(answer="Bananas are yellow.", root="weights-v1")) as old, \
            FakeOpenAI(Behaviour(answer_for=_good, root="weights-v2")) as new:  # fmt: skip
        first = run_stages(_suite(tmp_path, old.base_url), "run-1")
        assert first["decision"]["decision"]["outcome"] == "PROMOTE"
        v1 = first["decision"]["version"]
        old_requests = old.b.requests

        # Same served name `fake`, better weights elsewhere.
        second = run_stages(_suite(tmp_path, new.base_url), "run-2")
        ids = {c["config_id"] for c in second["configs"]}
        assert len(ids) == 2, "the new model must not share the champion's configuration id"
        baseline = [c for c in second["configs"] if c["role"] == "champion"]
        assert len(baseline) == 1 and baseline[0]["source"] == {"base_url": old.base_url}
        assert old.b.requests == old_requests, "an unchanged champion baseline is served from the cache"
        d = second["decision"]["decision"]
        assert d["outcome"] == "PROMOTE", d["reasons"]
        assert d["champion_version"] == v1
        assert registry.aliases("unit-model", settings.tracking_uri())["champion"] == second["decision"]["version"]


def test_baseline_unavailable_or_changed_is_inconclusive_with_the_reason(tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(answer="Bananas are yellow.", root="weights-v1")) as old:
        run_stages(_suite(tmp_path, old.base_url), "run-1")
        old.b.root = "weights-swapped"  # the same URL now serves other weights under the same name
        with FakeOpenAI(Behaviour(answer_for=_good, root="weights-v2")) as new:
            out = run_stages(_suite(tmp_path, new.base_url), "run-2")
    d = out["decision"]["decision"]
    assert d["outcome"] == "INCONCLUSIVE"
    assert any("has changed since v1 was registered" in r for r in d["reasons"]), d["reasons"]
    assert registry.aliases("unit-model", settings.tracking_uri())["champion"] == "1"

    # The recorded endpoint is gone altogether.
    with FakeOpenAI(Behaviour(answer_for=_good, root="weights-v3")) as newer:
        out = run_stages(_suite(tmp_path, newer.base_url), "run-3")
    d = out["decision"]["decision"]
    assert d["outcome"] == "INCONCLUSIVE"
    assert any("did not answer after 3 tries" in r for r in d["reasons"]), d["reasons"]
    assert registry.aliases("unit-model", settings.tracking_uri())["champion"] == "1"


def test_a_champion_registered_before_model_identities_is_still_recognised(tmp_path, llmops_home):
    """Versions registered before this change carry no model identity and an
    id computed without it: the sweep still finds the champion (KEEP), never
    an endless INCONCLUSIVE."""
    import json

    from mlflow import MlflowClient

    from evaluation.stages.plan import legacy_config_id

    with FakeOpenAI(Behaviour(answer_for=_good, root="weights-v1")) as srv:
        first = run_stages(_suite(tmp_path, srv.base_url), "run-1")
        version = first["decision"]["version"]
        # Rewrite v1 as the old code registered it: no identity, the old id.
        uri = settings.tracking_uri()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mv = client.get_model_version("unit-model", version)
        cfg = registry.load_config(f"models:/unit-model/{version}", uri)
        cfg.pop("model_identity")
        cfg["config_id"] = legacy_config_id(cfg)
        path = tmp_path / "legacy" / "config.json"
        path.parent.mkdir()
        path.write_text(json.dumps(cfg))
        client.log_artifact(mv.run_id, str(path), artifact_path=registry.CONFIG_ARTIFACT)
        client.set_model_version_tag("unit-model", version, "llmops.config_id", cfg["config_id"])

        second = run_stages(_suite(tmp_path, srv.base_url), "run-2")
    assert [c["is_champion"] for c in second["configs"]] == [True]
    assert second["decision"]["decision"]["outcome"] == "KEEP", second["decision"]["decision"]
