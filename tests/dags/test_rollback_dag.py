"""The DAG's `rollback` param, run by Airflow itself (`airflow dags test`)
against a real MLflow registry and ledger: champion goes back to the
ledger's previous version, no evaluation task runs, and the champion-changed
asset event is recorded in Airflow's metadata DB like a promotion's."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import mlflow
import pytest

from evaluation import registry
from evaluation.ledger import Ledger
from tests.conftest import write_suite

pytestmark = pytest.mark.slow


def test_rollback_param_moves_champion_back_through_the_ledger(tmp_path, llmops_home, monkeypatch):
    from ci_cd import cli

    llmops_home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{llmops_home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # An explicit artifact location: the default is ./mlruns in the working directory.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "rollback", artifact_location=(llmops_home / "artifacts").as_uri()))
    ledger = Ledger(str(llmops_home / "store"), "unit-model")
    versions = []
    for i in range(2):
        with mlflow.start_run() as run:
            pass
        versions.append(registry.register_version("unit-model", run.info.run_id, {"config_id": f"c{i}"}, tags={},
                                                  tracking_uri=uri))  # fmt: skip
        registry.promote("unit-model", versions[-1], versions[-2] if i else None, uri, ledger=ledger,
                         expected_head=ledger.head())  # fmt: skip
    assert registry.aliases("unit-model", uri)["champion"] == "2"

    suite = write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1")  # never contacted
    monkeypatch.setenv("LLMOPS_SUITES_PATH", str(tmp_path))  # a DAG run reads suites only under the suite roots
    env = cli.airflow_env(str(suite))
    cli.ensure_airflow_db(env)
    conf = {"suite": str(suite), "rollback": True, "rollback_reason": "canary failed"}
    out = subprocess.run([cli._bin("airflow"), "dags", "test", "llm_eval_promote", "-c", json.dumps(conf)],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]

    assert registry.aliases("unit-model", uri) == {"challenger": "2", "champion": "1", "previous-champion": "2"}
    last = ledger.last()
    assert (last.seq, last.action, last.version, last.previous_version) == (3, "rollback", "1", "2")
    assert last.reasons == ["canary failed"] and last.dag_run_id.startswith("manual__")
    assert "ROLLBACK" in log
    assert "[DAG TEST] starting task_id=rollback_champion" in log
    for skipped in ("validate_suite", "start_engines", "generate", "register_and_promote"):
        assert f"[DAG TEST] starting task_id={skipped} " not in log, skipped

    # The same asset event as a promotion, for the redeploy DAG to follow.
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        events = db.execute(
            "SELECT e.extra, e.source_task_id FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = 'llmops://registry/champion'"
        ).fetchall()
    assert [(json.loads(extra), task_id) for extra, task_id in events] == [
        ({"registered_model": "unit-model", "version": "1", "action": "rollback"}, "rollback_champion")
    ]
