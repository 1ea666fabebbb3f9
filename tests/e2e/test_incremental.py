"""Incremental re-runs through the real DAG (`llmops run` -> `airflow dags
test`) and real MLflow. The endpoint is the fake OpenAI server so that every
request the engine receives can be counted exactly (the real engine is
covered by test_pipeline_e2e.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, write_suite
from tests.helpers.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow


def llmops_run(suite: Path, home: Path) -> str:
    env = {**os.environ, "LLMOPS_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    out = subprocess.run([str(Path(sys.executable).with_name("llmops")), "run", "--suite", str(suite)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_unchanged_rerun_sends_no_request_and_a_new_config_only_its_own(tmp_path):
    home = tmp_path / "home"
    with FakeOpenAI() as srv:
        suite = write_suite(tmp_path / "s.yaml", base_url=srv.base_url, max_tokens="[16, 24]")
        llmops_run(suite, home)
        first = srv.b.requests
        generations = [b for b in srv.b.bodies if b["max_tokens"] != 1]  # not the 1-token readiness probes
        # 2 configurations x 4 rows in the sweep, then the latency probe's 4 rows each.
        assert len(generations) == 2 * 4 + 2 * 4

        log = llmops_run(suite, home)  # unchanged: everything is cached
        assert srv.b.requests == first, "an unchanged re-run must not contact the engine"
        assert "0 generations missing from the cache" in log

        grown = write_suite(tmp_path / "s2.yaml", base_url=srv.base_url, max_tokens="[16, 24, 32]")
        llmops_run(grown, home)
        new = [b for b in srv.b.bodies[first:] if b["max_tokens"] != 1]  # minus the readiness probe
        # The sweep generates only the new configuration's rows; the latency
        # probe measures all three again, in one session.
        swept = new[: len(new) - 3 * 4]
        assert len(swept) == 4 and {b["max_tokens"] for b in swept} == {32}
        assert sorted(b["max_tokens"] for b in new[len(swept):]) == [16] * 4 + [24] * 4 + [32] * 4


def test_requests_of_one_models_configurations_are_interleaved(tmp_path):
    home = tmp_path / "home"
    with FakeOpenAI() as srv:
        suite = write_suite(tmp_path / "s.yaml", base_url=srv.base_url, max_tokens="[16, 24]")
        llmops_run(suite, home)
        order = [b["max_tokens"] for b in srv.b.bodies if b["max_tokens"] != 1]
    # Concurrency is 2 in the test suite: the first two requests already mix both configurations.
    assert set(order[:2]) == {16, 24}
