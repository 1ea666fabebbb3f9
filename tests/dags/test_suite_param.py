"""The DAG's `suite` param reads suites only under the configured roots, and a
suite with a bad schedule never breaks DAG parsing (the validate task
reports it instead)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaluation.errors import SuiteError

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "llm_eval_promote.py"


@pytest.fixture
def dag_module(monkeypatch, tmp_path, llmops_home):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    spec = importlib.util.spec_from_file_location("llm_eval_promote_under_test", DAG_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _with_param(monkeypatch, mod, suite: str) -> None:
    # Airflow's task context, reduced to what _ctx reads (no DAG run here).
    ctx = {"params": {"suite": suite}, "run_id": "manual__1", "dag": SimpleNamespace(dag_id="llm_eval_promote")}
    monkeypatch.setattr(mod, "get_current_context", lambda: ctx)


def test_ctx_resolves_a_suite_under_the_roots(dag_module, monkeypatch):
    monkeypatch.delenv("LLMOPS_SUITES_PATH", raising=False)
    _with_param(monkeypatch, dag_module, "default.yaml")
    path, context = dag_module._ctx(frozen=False)  # as validate_suite reads it, before the inputs are frozen
    assert path == str((REPO / "suites" / "default.yaml").resolve())
    assert context == {"run_id": "manual__1", "dag_id": "llm_eval_promote"}


@pytest.mark.parametrize("param", ["/etc/passwd", "{tmp}/elsewhere.yaml", "../../etc/passwd"])
def test_ctx_refuses_a_suite_outside_the_roots(dag_module, monkeypatch, tmp_path, param):
    monkeypatch.delenv("LLMOPS_SUITES_PATH", raising=False)
    (tmp_path / "elsewhere.yaml").write_text("name: x\n")
    _with_param(monkeypatch, dag_module, param.format(tmp=tmp_path))
    with pytest.raises(SuiteError, match="suite roots"):
        dag_module._ctx()


def test_a_bad_schedule_does_not_break_parsing(monkeypatch, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text((REPO / "suites" / "default.yaml").read_text().replace('schedule: "@daily"', 'schedule: "@dialy"'))
    monkeypatch.setenv("LLMOPS_SUITE", str(suite))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    assert bag.dags["llm_eval_promote"].timetable.expression in ("0 0 * * *", "@daily")
