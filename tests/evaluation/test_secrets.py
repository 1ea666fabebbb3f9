"""Endpoint credentials: a suite names where a key is (`api_key_env`,
`api_key_file`), evaluation.secrets reads it at use time, and it reaches
the endpoints (readiness probe, generation, both judges) and nothing else:
not the suite digest, XComs, MLflow params or tags, the report or the logs.
The endpoints are fake OpenAI-compatible servers that refuse a request
without the key (tests/helpers/fake_openai.py, `api_key`): vLLM's own
--api-key check cannot be combined with a scripted judge."""

from __future__ import annotations

import json
import logging
import uuid

import mlflow
import pytest

from evaluation import settings
from evaluation.errors import SuiteError
from evaluation.stages import validate as validate_stage
from evaluation.suite import load_suite
from tests.conftest import TINY
from tests.helpers.fake_openai import Behaviour, FakeOpenAI
from tests.helpers.pipeline import run_stages

VERDICT = '{"criteria": "c", "supporting_evidence": "e", "score": 3}'


def _suite(path, cand_url: str, judge_url: str, cand_key: str, judge_key: str) -> str:
    path.write_text(f"""
name: secrets
dataset: {{path: {TINY}}}
candidates:
  - name: fake
    source: {{base_url: "{cand_url}", {cand_key}}}
search_space:
  temperature: [0.0]
  max_tokens: [16]
  prompt_templates:
    - name: grounded
      template: "Context:\\n{{context}}\\n\\nQuestion: {{question}}\\nAnswer:"
judge: {{name: fake-judge, source: {{base_url: "{judge_url}", {judge_key}}}, request_timeout_s: 5, max_retries: 0}}
scoring:
  scorers: [relevance, trulens_answer_relevance, ragas_faithfulness]
  weights: {{relevance: 1.0}}
gate: {{min_scored_examples: 2}}
generation: {{concurrency: 2, request_timeout_s: 5, max_retries: 1, ready_timeout_s: 10}}
registered_model: secrets-model
""")
    return str(path)


def test_missing_key_variable_or_file_fails_validation_naming_it(tmp_path, llmops_home, monkeypatch):
    monkeypatch.delenv("LLMOPS_TEST_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("LLMOPS_TEST_JUDGE_KEY", "sk-judge-value")
    path = _suite(tmp_path / "s.yaml", "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1",
                  "api_key_env: LLMOPS_TEST_NO_SUCH_KEY", "api_key_env: LLMOPS_TEST_JUDGE_KEY")  # fmt: skip
    load_suite(path)  # the suite itself is valid: keys are looked up at validate and use time
    with pytest.raises(SuiteError) as exc:
        validate_stage.check_suite(path)
    msg = str(exc.value)
    assert path in msg and "candidates.0 (fake)" in msg and "LLMOPS_TEST_NO_SUCH_KEY" in msg

    missing = tmp_path / "no-such-key-file"
    monkeypatch.setenv("LLMOPS_TEST_CAND_KEY", "sk-cand-value")
    path = _suite(tmp_path / "s2.yaml", "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1",
                  "api_key_env: LLMOPS_TEST_CAND_KEY", f"api_key_file: {missing}")  # fmt: skip
    with pytest.raises(SuiteError) as exc:
        validate_stage.check_suite(path)
    msg = str(exc.value)
    assert "judge (fake-judge)" in msg and str(missing) in msg
    assert "sk-cand-value" not in msg and "sk-judge-value" not in msg


def test_keys_reach_the_endpoints_and_nothing_else(tmp_path, llmops_home, monkeypatch, caplog):
    cand_key, judge_key = f"sk-cand-{uuid.uuid4().hex}", f"sk-judge-{uuid.uuid4().hex}"
    monkeypatch.setenv("LLMOPS_TEST_CAND_KEY", cand_key)
    key_file = tmp_path / "judge.key"
    key_file.write_text(judge_key + "\n")
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI(Behaviour(api_key=cand_key, models=("fake",))) as cand, \
            FakeOpenAI(Behaviour(api_key=judge_key, answer=VERDICT, models=("fake-judge",))) as judge:  # fmt: skip
        path = _suite(tmp_path / "s.yaml", cand.base_url, judge.base_url,
                      "api_key_env: LLMOPS_TEST_CAND_KEY", f"api_key_file: {key_file}")  # fmt: skip
        out = run_stages(path, "keyed-1")

    # Sent: every request to each endpoint carried its own key, and was served.
    assert cand.b.requests >= 5 and set(cand.b.auth) == {f"Bearer {cand_key}"}  # readiness probe + 4 rows
    assert judge.b.requests >= 8 and set(judge.b.auth) == {f"Bearer {judge_key}"}  # TruLens and Ragas
    assert out["generated"][0][0]["failed"] == 0
    metrics = out["scored"][0]["metrics"]
    assert metrics["trulens_answer_relevance"] == 1.0  # the judge answered (no 401 judge errors)

    # Kept nowhere: stage outputs (XComs), the suite digest, MLflow, the report, the run's files, the logs.
    secrets = (cand_key, judge_key)
    xcoms = json.dumps(out, default=str)
    client = mlflow.MlflowClient(settings.tracking_uri())
    runs = client.search_runs([out["sweep"]["experiment_id"]])
    tracked = json.dumps([{"params": r.data.params, "tags": r.data.tags} for r in runs])
    versions = json.dumps([dict(v.tags) for v in client.search_model_versions("name = 'secrets-model'")])
    files = "".join(p.read_text(errors="replace") for p in llmops_home.rglob("*.json*") if p.is_file())
    files += "".join(p.read_text(errors="replace") for p in (llmops_home / "mlartifacts").rglob("*") if p.is_file())
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert runs and "api_key_env" in xcoms  # the variable's name is fine to keep
    for where, text in {"xcoms": xcoms, "mlflow": tracked, "registry": versions, "files": files, "logs": logs,
                        "digest": load_suite(path).model_dump_json()}.items():  # fmt: skip
        for s in secrets:
            assert s not in text, f"a key leaked into {where}"


# A leaky judge: its error bodies echo the Authorization header back (the
# fault is injected with the fake server: no real server is known to do it on
# demand). 500 is retried once, so the retry paths log the error too.
LEAK_SCORERS = ("trulens_answer_relevance", "trulens_context_relevance", "ragas_faithfulness")
CHATTY_LOGGERS = ("LiteLLM", "litellm", "openai", "httpx", "httpcore", "instructor", "ragas", "trulens", "evaluation")


@pytest.mark.parametrize("name", LEAK_SCORERS)
def test_judge_key_echoed_in_an_error_reaches_no_rationale_nor_log(name, caplog, capfd):
    from evaluation.dataset import Example
    from evaluation.generation import RequestResult
    from evaluation.scorers import JudgeEndpoint, ScoringContext, ScoringItem, get_scorer
    from tests.helpers.scoring import UNIT_CONFIG

    key = f"sk-SECRET-{uuid.uuid4().hex}"
    for logger in CHATTY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=logger)
    caplog.set_level(logging.DEBUG)
    ex = Example(id="e1", question="What is the capital of France?", contexts=("Paris is the capital of France.",),
                 reference="Paris")  # fmt: skip
    item = ScoringItem(ex, RequestResult(example_id="e1", success=True, text="Paris.", attempts=1))
    with FakeOpenAI(Behaviour(api_key=key, leak_auth=True, status=500)) as srv:
        judge = JudgeEndpoint(base_url=srv.base_url, model="fake-judge", identity="fake", timeout_s=5.0,
                              max_retries=1, api_key=key)  # fmt: skip
        rows = get_scorer(name).score([item], ScoringContext(config=UNIT_CONFIG, judge=judge))

    assert srv.b.requests >= 2 and f"Bearer {key}" in srv.b.auth  # the key was sent, and the reply echoed it
    assert rows[0][name + "_judge_error"] == 1.0 and "***" in rows[0][name + "_rationale"]  # quoted, redacted
    assert key not in json.dumps(rows), "the key leaked into the score rows"
    logged = "\n".join(r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
                       + (r.exc_text or "") for r in caplog.records)  # fmt: skip
    assert key not in logged, "the key leaked into the logs"
    printed = capfd.readouterr()  # litellm's own stderr handler, and its prints (Airflow keeps task output)
    assert key not in printed.out + printed.err, "the key leaked into stdout/stderr"
