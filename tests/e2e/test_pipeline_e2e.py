"""End to end, no mock engine: a real vLLM CPU server with the bundled
SmolLM2 model, the real `llm_eval_promote` DAG run in-process by Airflow
(`llmops run` -> `airflow dags test`), and a real MLflow tracking + registry
store. Slow (about 3 minutes on 2 cores); runs in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from evaluation import settings
from serving.engine import EngineManager
from serving.models import materialize
from tests.conftest import REPO, write_suite

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"
METRICS = {"relevance", "groundedness", "latency_ttft_p95_s", "latency_e2e_p95_s", "failed_rate", "composite"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    models = Path(os.environ.get("LLMOPS_MODELS_DIR") or REPO / ".llmops" / "models")
    model_dir = materialize(MODEL, models, settings.engine_python())
    home = tmp_path_factory.mktemp("engine-home")
    mgr = EngineManager(home, settings.engine_python())
    rec = mgr.launch(MODEL, model_dir, max_model_len=2048)
    try:
        mgr.wait(rec, timeout_s=600)
        yield rec
    finally:
        mgr.stop(MODEL)


def real_engine_suite(path: Path, **kw) -> Path:
    """write_suite's 5 s request deadline fits the fake server; a real CPU
    engine under a loaded CI machine needs minutes for a whole request."""
    suite = write_suite(path, **kw)
    suite.write_text(suite.read_text().replace("request_timeout_s: 5,", "request_timeout_s: 300,"))
    return suite


def llmops_run(suite: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMOPS_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    out = subprocess.run([str(Path(sys.executable).with_name("llmops")), "run", "--suite", str(suite)],
                         capture_output=True, text=True, env=env, timeout=900, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-4000:]
    return out


def test_sweep_registers_promotes_and_a_worse_config_does_not_move_champion(engine, tmp_path):
    home = tmp_path / "home"
    uri = f"sqlite:///{home / 'mlflow.db'}"
    good = real_engine_suite(tmp_path / "good.yaml", base_url=engine.base_url, model=MODEL, max_tokens="[48, 3]", name="e2e")

    # Run 1: two configurations; the 48-token one wins and becomes champion.
    out = llmops_run(good, home)
    assert "Decision: PROMOTE" in out.stdout and "champion=v1" in out.stdout
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("llmops/e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.tags["llmops.decision"] == "PROMOTE"
    assert parent.data.tags["llmops.airflow_run_id"].startswith("manual__")
    assert parent.data.tags["mlflow.source.git.commit"]
    assert parent.data.tags["llmops.suite_digest"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert METRICS <= set(child.data.metrics), set(child.data.metrics)
        assert child.data.metrics["failed_rate"] == 0.0
        assert {"model", "temperature", "top_p", "max_tokens", "prompt_template_hash"} <= set(child.data.params)
        assert "per_example.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
        assert child.inputs.dataset_inputs[0].dataset.digest == parent.data.tags["llmops.dataset_digest"]
    by_tokens = {c.data.params["max_tokens"]: c for c in children}
    assert by_tokens["48"].data.metrics["composite"] > by_tokens["3"].data.metrics["composite"]

    model = client.get_registered_model("unit-model")
    assert {k: str(v) for k, v in model.aliases.items()} == {"challenger": "1", "champion": "1"}
    v1 = client.get_model_version("unit-model", "1")
    assert v1.tags["llmops.decision"] == "PROMOTE" and v1.tags["llmops.decision_reasons"] == "no current champion"
    assert v1.run_id == by_tokens["48"].info.run_id
    from evaluation.registry import load_config

    served = load_config("models:/unit-model@champion", uri)
    assert served["model"] == MODEL and served["sampling"]["max_tokens"] == 48

    # Run 2: only the worse configuration; the champion is re-evaluated on the
    # same rows as a baseline, and champion does not move.
    worse = real_engine_suite(tmp_path / "worse.yaml", base_url=engine.base_url, model=MODEL, max_tokens="[3]", name="e2e")
    out = llmops_run(worse, home)
    assert "Decision: REJECT" in out.stdout
    aliases = {k: str(v) for k, v in client.get_registered_model("unit-model").aliases.items()}
    assert aliases == {"challenger": "2", "champion": "1"}
    v2 = client.get_model_version("unit-model", "2")
    assert v2.tags["llmops.decision"] == "REJECT" and "champion v1" in v2.tags["llmops.decision_reasons"]
    runs = client.search_runs([exp.experiment_id])
    roles = sorted(r.data.tags.get("llmops.role", "parent") for r in runs)
    assert roles == ["candidate", "candidate", "candidate", "champion", "parent", "parent"]
    report = json.loads((home / "last_report.json").read_text())
    assert report["decision"]["outcome"] == "REJECT" and report["aliases"]["champion"] == "1"
    # The paired comparison with the champion, in the report and on the parent run.
    comp = {c["metric"]: c for c in report["comparison"]}
    assert set(comp) == {"relevance", "groundedness", "composite"}  # latency: configuration-level, inside the composite
    assert comp["composite"]["n"] == 4 and comp["composite"]["diff"] < 0 and comp["composite"]["ci_high"] < 0.01
    assert "Paired comparison with the champion" in out.stdout
    parent2 = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.info.run_id != parent.info.run_id)
    artifacts = {a.path for a in client.list_artifacts(parent2.info.run_id)}
    assert {"promotion_report.json", "promotion_report.png", "leaderboard.json"} <= artifacts
    # Exactly one ledger entry: run 1's promotion.
    from evaluation.ledger import Ledger

    entries = Ledger(str(home / "store"), "unit-model").entries()
    assert [(e.seq, e.action, e.version, e.previous_version) for e in entries] == [(1, "promote", "1", None)]
    assert entries[0].dag_run_id == parent.data.tags["llmops.airflow_run_id"]
