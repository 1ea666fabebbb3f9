"""DAG integrity, the way Airflow tests its example DAGs: every file in dags/
imports without errors; parsing makes no network, DB or Variable calls and
imports no heavy library; parsing is far below Airflow's 30 s import limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ["mlflow", "great_expectations", "torch", "pandas", "sentence_transformers", "numpy", "vllm"]

# Runs in a fresh interpreter so that nothing imported by other tests hides a
# parse-time import. Network, DB and Variable access raise during the import.
PROBE = r"""
import importlib.util, json, socket, sys, time
import airflow.sdk  # the framework's own import cost is not the DAG's
import sqlalchemy.engine

calls = []
def _deny(kind):
    def f(*a, **k):
        calls.append(kind)
        raise RuntimeError(f"{kind} at DAG parse time")
    return f
socket.socket.connect = _deny("network")
socket.create_connection = _deny("network")
sqlalchemy.engine.Engine.connect = _deny("db")
from airflow.sdk import Variable
Variable.get = staticmethod(_deny("variable"))

path = sys.argv[1]
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
took = time.perf_counter() - t0
from airflow.sdk import DAG
dags = [v.dag_id for v in vars(mod).values() if isinstance(v, DAG)]
print(json.dumps({"seconds": took, "calls": calls, "dags": dags,
                  "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def _probe(path: Path) -> dict:
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO)}
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_parses_cleanly(path):
    res = _probe(path)
    assert res["calls"] == [], f"parse-time access: {res['calls']}"
    assert res["heavy"] == [], f"heavy modules imported at parse time: {res['heavy']}"
    assert res["seconds"] < 30, f"parse took {res['seconds']:.1f} s (Airflow's import timeout is 30 s)"
    print(f"{path.name}: parsed in {res['seconds']:.2f} s")


def test_dagbag_has_no_import_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert "llm_eval_promote" in bag.dag_ids


def test_llm_eval_promote_shape(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "llm_eval_promote.py")).dags["llm_eval_promote"]
    assert dag.doc_md and "llm_eval_promote" in dag.doc_md
    assert set(dag.params.keys()) >= {"suite", "keep_engines", "rollback", "rollback_reason"}
    assert dag.params["suite"].endswith("suites/default.yaml")
    tasks = set(dag.task_ids)
    assert tasks >= {"choose_action", "rollback_champion", "validate_suite", "validate_dataset", "plan_configs",
                     "group_by_model", "start_engines", "generate", "score",
                     "log_to_mlflow", "register_and_promote", "report", "announce_champion", "stop_engines"}
    assert dag.get_task("stop_engines").is_teardown
    # Config and data validation never retry; generation does, with backoff.
    assert dag.get_task("validate_dataset").retries == 0
    gen = dag.get_task("generate")
    assert gen.retries >= 1 and gen.retry_exponential_backoff
    # A rollback run skips the evaluation entirely.
    assert dag.get_task("choose_action").downstream_task_ids == {"validate_suite", "rollback_champion"}
    # Generation is mapped per model (its configurations share one stream); scoring per configuration,
    # after all generation.
    assert "group_by_model" in gen.upstream_task_ids
    # Latency is measured after every sweep, one engine at a time, before scoring.
    probe = dag.get_task("measure_latency")
    assert "generate" in probe.upstream_task_ids and "score" in probe.downstream_task_ids
    assert "generate" in dag.get_task("score").get_flat_relative_ids(upstream=True)
    # Validation runs before any engine is started.
    assert "validate_dataset" in dag.get_task("start_engines").get_flat_relative_ids(upstream=True)


def test_schedule_comes_from_the_suite(monkeypatch, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text((REPO / "suites" / "default.yaml").read_text().replace('schedule: "@daily"', 'schedule: "@hourly"'))
    monkeypatch.setenv("LLMOPS_SUITE", str(suite))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "llm_eval_promote.py")).dags["llm_eval_promote"]
    assert dag.timetable.expression in ("0 * * * *", "@hourly")
