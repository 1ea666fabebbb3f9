"""plugins/llmops_mlflow_links.py: Airflow's plugins manager loads it from
the plugins folder, and its links, called the way the API server calls them
(on the serialized DAG's tasks, with a task instance key), point at the right
MLflow pages. Reading an XCom needs the Airflow metadata DB: only that one
function (`read_xcom`) is replaced, by a table of XCom values."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "llmops_mlflow_links.py"

SWEEP = {"experiment_id": "7", "parent_run_id": "p123", "child_run_ids": {"cfgA": "c1", "cfgB": "c2"}}
DECISION = {"registered_model": "llm config/x", "version": "3", "outcome": "PROMOTE"}

PROBE = r"""
import json, sys
from airflow import plugins_manager
from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstancekey import TaskInstanceKey
from airflow.serialization.serialized_objects import DagSerialization

info = [{k: p[k] for k in ("name", "global_operator_extra_links", "external_views", "source")}
        for p in plugins_manager.get_plugin_info()]
errors = plugins_manager.get_import_errors()
# What the API server holds: the DAG as serialized by the DAG processor.
dag = DagBag(dag_folder="dags/llm_eval_promote.py").dags["llm_eval_promote"]
sdag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
xcoms = {("log_to_mlflow", -1): SWEEP, ("score", 1): {"config": {"config_id": "cfgB"}, "metrics": {}},
         ("register_and_promote", -1): DECISION}
sys.modules["llmops_mlflow_links"].read_xcom = lambda key, task_id, map_index=-1: xcoms.get((task_id, map_index))

class TI:  # what get_extra_links reads of a task instance
    def __init__(self, task_id, map_index=-1):
        self.key = TaskInstanceKey("llm_eval_promote", task_id, "manual__1", 1, map_index)

links = {}
for task_id, map_index in [("validate_suite", -1), ("score", 1), ("register_and_promote", -1)]:
    task = sdag.get_task(task_id)
    links[f"{task_id}[{map_index}]"] = {n: task.get_extra_links(TI(task_id, map_index), n) for n in task.extra_links}
print(json.dumps({"info": info, "errors": errors, "links": links}, default=str))
"""


def test_airflow_loads_the_plugin_and_its_links_resolve_on_the_serialized_dag(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO),
           "LLMOPS_MLFLOW_UI_URL": "http://mlflow.test:5055/"}  # fmt: skip
    code = f"SWEEP = {SWEEP!r}\nDECISION = {DECISION!r}\n" + PROBE
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == {}
    (plugin,) = [p for p in out["info"] if p["name"] == "llmops_mlflow_links"]
    assert plugin["source"] == "$PLUGINS_FOLDER/llmops_mlflow_links.py"
    assert len(plugin["global_operator_extra_links"]) == 2
    assert plugin["external_views"] == [{"name": "MLflow", "href": "http://mlflow.test:5055", "destination": "nav"}]
    base = "http://mlflow.test:5055/#"
    assert out["links"] == {
        "validate_suite[-1]": {"MLflow run": f"{base}/experiments/7/runs/p123", "MLflow model version": ""},
        "score[1]": {"MLflow run": f"{base}/experiments/7/runs/c2", "MLflow model version": ""},
        "register_and_promote[-1]": {"MLflow run": f"{base}/experiments/7/runs/p123",
                                     "MLflow model version": f"{base}/models/llm%20config%2Fx/versions/3"},
    }  # fmt: skip


@pytest.fixture
def plugin(monkeypatch, tmp_path):
    """The plugin module, imported from its file as the plugins manager does,
    with `read_xcom` reading a dict {(task_id, map_index): value}."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))  # importing airflow would create ~/airflow
    spec = importlib.util.spec_from_file_location("llmops_mlflow_links_under_test", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.XCOMS = {}
    monkeypatch.setattr(mod, "read_xcom", lambda key, task_id, map_index=-1: mod.XCOMS.get((task_id, map_index)))
    monkeypatch.delenv("LLMOPS_MLFLOW_UI_URL", raising=False)
    return mod


def _key(task_id: str, map_index: int = -1, dag_id: str = "llm_eval_promote"):
    from airflow.models.taskinstancekey import TaskInstanceKey

    return TaskInstanceKey(dag_id, task_id, "scheduled__2026-01-01", 1, map_index)


def test_links_default_to_the_local_mlflow_ui(plugin):
    plugin.XCOMS[("log_to_mlflow", -1)] = SWEEP
    plugin.XCOMS[("register_and_promote", -1)] = DECISION
    run, version = plugin.MLflowRunLink(), plugin.MLflowModelVersionLink()
    assert run.get_link(None, ti_key=_key("generate", 0)) == "http://127.0.0.1:5000/#/experiments/7/runs/p123"
    url = version.get_link(None, ti_key=_key("register_and_promote"))
    assert url == "http://127.0.0.1:5000/#/models/llm%20config%2Fx/versions/3"


def test_no_link_before_the_ids_exist_or_outside_llm_eval_promote(plugin):
    run, version = plugin.MLflowRunLink(), plugin.MLflowModelVersionLink()
    # log_to_mlflow has not run yet: nothing to link to.
    assert run.get_link(None, ti_key=_key("validate_suite")) == ""
    assert version.get_link(None, ti_key=_key("register_and_promote")) == ""
    plugin.XCOMS[("log_to_mlflow", -1)] = SWEEP
    # No version registered (no eligible winner).
    plugin.XCOMS[("register_and_promote", -1)] = {"registered_model": "m", "version": None, "outcome": "NO_CANDIDATE"}
    assert version.get_link(None, ti_key=_key("register_and_promote")) == ""
    # The version link belongs to register_and_promote only; other DAGs get no links.
    plugin.XCOMS[("register_and_promote", -1)] = DECISION
    assert version.get_link(None, ti_key=_key("report")) == ""
    assert run.get_link(None, ti_key=_key("log_to_mlflow", dag_id="llm_redeploy")) == ""


def test_score_task_without_a_child_run_links_to_the_parent(plugin):
    plugin.XCOMS[("log_to_mlflow", -1)] = SWEEP
    plugin.XCOMS[("score", 4)] = {"config": {"config_id": "dropped-by-halving"}}
    assert plugin.MLflowRunLink().get_link(None, ti_key=_key("score", 4)).endswith("/runs/p123")
    assert plugin.MLflowRunLink().get_link(None, ti_key=_key("score", 9)).endswith("/runs/p123")  # not scored yet


def test_llmops_ui_points_airflow_at_the_plugins_folder_and_the_links_at_its_mlflow(monkeypatch, llmops_home):
    """`llmops ui --airflow`: Airflow loads plugins/ and the links go to the
    MLflow UI it starts. The servers are not started (recorded instead)."""
    import signal

    from ci_cd import cli

    calls = []

    def popen(argv, env=None, **kw):
        calls.append((list(argv), dict(env or {})))
        return type("P", (), {"pid": 999999, "poll": lambda s: 0, "wait": lambda s, timeout=None: 0})()

    monkeypatch.delenv("LLMOPS_MLFLOW_UI_URL", raising=False)
    monkeypatch.setattr(cli.subprocess, "Popen", popen)
    monkeypatch.setattr(cli, "ensure_airflow_db", lambda env: None)
    monkeypatch.setattr(os, "killpg", lambda pid, sig: None)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    assert cli.main(["ui", "--airflow", "--port", "5077", "--airflow-port", "8099"]) == 0
    (_, _), (airflow_argv, airflow_env) = calls
    assert airflow_argv[1:] == ["standalone"]
    assert airflow_env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(REPO / "plugins")
    assert airflow_env["LLMOPS_MLFLOW_UI_URL"] == "http://127.0.0.1:5077"
