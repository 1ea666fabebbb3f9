"""What `llmops ui` and `llmops run` hand to the servers they start: UIs bound
to loopback, and a suite outside the suite roots made readable for that run
only. The server processes themselves are replaced by recorders (starting
Airflow and MLflow takes about a minute and is not what is tested here)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from ci_cd import cli
from evaluation import settings
from tests.conftest import write_suite


class _Recorder:
    """Stands in for subprocess.Popen/run: records argv and env, and looks
    like a process that exited at once."""

    def __init__(self):
        self.calls: list[tuple[list[str], dict]] = []

    def popen(self, argv, env=None, **kw):
        self.calls.append((list(argv), dict(env or {})))
        return type("P", (), {"pid": 999999, "poll": lambda s: 0, "wait": lambda s, timeout=None: 0})()

    def run(self, argv, env=None, **kw):
        self.calls.append((list(argv), dict(env or {})))
        return subprocess.CompletedProcess(argv, 1)


@pytest.fixture
def recorder(monkeypatch, llmops_home):
    rec = _Recorder()
    monkeypatch.setattr(cli.subprocess, "Popen", rec.popen)
    monkeypatch.setattr(cli.subprocess, "run", rec.run)
    monkeypatch.setattr(cli, "ensure_airflow_db", lambda env: None)
    monkeypatch.setattr(os, "killpg", lambda pid, sig: None)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own handlers
    return rec


def test_ui_binds_mlflow_and_airflow_to_loopback(recorder):
    assert cli.main(["ui", "--airflow", "--port", "5055", "--airflow-port", "8088"]) == 0
    (mlflow_argv, mlflow_env), (airflow_argv, airflow_env) = recorder.calls
    assert Path(mlflow_argv[0]).name == "mlflow" and mlflow_argv[1] == "server"
    assert mlflow_argv[mlflow_argv.index("--host") + 1] == "127.0.0.1"
    assert mlflow_argv[mlflow_argv.index("--port") + 1] == "5055"
    # MLflow's server hangs at start-up offline unless litellm uses its local price map.
    assert mlflow_env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert airflow_argv[1:] == ["standalone"]
    # Airflow 3.3's api.host defaults to 0.0.0.0, and every local user is an admin.
    assert airflow_env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert airflow_env["AIRFLOW__API__PORT"] == "8088"


def test_run_adds_an_outside_suites_directory_to_the_roots_for_that_run(recorder, tmp_path, monkeypatch):
    monkeypatch.delenv("LLMOPS_SUITES_PATH", raising=False)
    suite = write_suite(tmp_path / "mine.yaml", base_url="http://127.0.0.1:9/v1")
    assert cli.main(["run", "--suite", str(suite)]) == 1  # the recorded `airflow dags test` "failed"
    (argv, env), = recorder.calls
    assert argv[1:4] == ["dags", "test", "llm_eval_promote"]
    assert str(tmp_path.resolve()) in env["LLMOPS_SUITES_PATH"].split(os.pathsep)
    assert "LLMOPS_SUITES_PATH" not in os.environ  # only that run's environment
    # The DAG resolves the run's suite param under those roots.
    monkeypatch.setenv("LLMOPS_SUITES_PATH", env["LLMOPS_SUITES_PATH"])
    assert settings.resolve_suite(str(suite)) == str(suite.resolve())


def test_run_keeps_configured_roots_and_adds_nothing_for_a_suite_under_them(recorder, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_SUITES_PATH", "/srv/suites")
    assert cli.main(["run", "--suite", str(settings.BUNDLED_SUITE)]) == 1
    (_, env), = recorder.calls
    assert env["LLMOPS_SUITES_PATH"] == "/srv/suites"
