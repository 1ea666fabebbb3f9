"""Airflow plugin: links from `llm_eval_promote` runs to the MLflow UI.

Owns only the links (global operator extra links, computed by the Airflow API
server when the UI shows a task instance) and an "MLflow" entry in the
Airflow UI's navigation:

- "MLflow run" on every task of an `llm_eval_promote` run: the sweep's parent
  run, from the XCom of `log_to_mlflow` (`experiment_id`, `parent_run_id`);
  a mapped `score` task links to its configuration's child run
  (`child_run_ids[config_id]`, the config id from that task's own XCom).
- "MLflow model version" on `register_and_promote`: the version it
  registered, from its XCom (`registered_model`, `version`).

A link whose XCom does not exist yet (the task has not run, or registered
nothing) is empty, which the UI shows as a disabled button. The MLflow UI's
base URL comes from LLMOPS_MLFLOW_UI_URL (default http://127.0.0.1:5000, what
`llmops ui` serves). Nothing here imports the evaluation library.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

DAG_ID = "llm_eval_promote"
TRACK_TASK = "log_to_mlflow"
REGISTER_TASK = "register_and_promote"
SCORE_TASK = "score"
DEFAULT_UI_URL = "http://127.0.0.1:5000"


def mlflow_ui_url() -> str:
    return (os.environ.get("LLMOPS_MLFLOW_UI_URL") or DEFAULT_UI_URL).rstrip("/")


def read_xcom(ti_key, task_id: str, map_index: int = -1):
    """The return value of `task_id` (at `map_index`) in the run of
    `ti_key`, from the Airflow metadata DB; None when there is none. Runs in
    the API server, which has the DB (as Airflow's own XComOperatorLink)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(key="return_value", run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
                               task_ids=task_id, map_indexes=map_index).with_only_columns(XComModel.value)
        ).first()  # fmt: skip
    return None if row is None else XComModel.deserialize_value(row)


def run_url(experiment_id, run_id) -> str:
    return f"{mlflow_ui_url()}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{quote(str(run_id), safe='')}"


def model_version_url(name: str, version) -> str:
    return f"{mlflow_ui_url()}/#/models/{quote(str(name), safe='')}/versions/{quote(str(version), safe='')}"


class MLflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != DAG_ID:
            return ""
        sweep = read_xcom(ti_key, TRACK_TASK)
        if not isinstance(sweep, dict) or not sweep.get("parent_run_id"):
            return ""
        run_id = sweep["parent_run_id"]
        if ti_key.task_id == SCORE_TASK and ti_key.map_index >= 0:
            scored = read_xcom(ti_key, SCORE_TASK, ti_key.map_index)
            config_id = ((scored or {}).get("config") or {}).get("config_id") if isinstance(scored, dict) else None
            run_id = (sweep.get("child_run_ids") or {}).get(config_id, run_id)
        return run_url(sweep["experiment_id"], run_id)


class MLflowModelVersionLink(BaseOperatorLink):
    name = "MLflow model version"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != DAG_ID or ti_key.task_id != REGISTER_TASK:
            return ""
        decision = read_xcom(ti_key, REGISTER_TASK)
        if not isinstance(decision, dict) or not decision.get("registered_model") or not decision.get("version"):
            return ""
        return model_version_url(decision["registered_model"], decision["version"])


class LLMOpsMLflowPlugin(AirflowPlugin):
    name = "llmops_mlflow_links"
    global_operator_extra_links = [MLflowRunLink(), MLflowModelVersionLink()]
    external_views = [{"name": "MLflow", "href": mlflow_ui_url(), "destination": "nav"}]
