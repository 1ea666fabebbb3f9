"""Engine ownership through the real DAG (`llmops run` -> `airflow dags
test`, Airflow's own retries): start_engines fails on its first tries and
succeeds on a retry, and after the run no engine any try launched is left
running. Engines are fake_engine.py (see its docstring): the retries need a
model that crashes on cue."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY
from tests.serving.conftest import alive, launches

pytestmark = pytest.mark.slow


def test_engines_of_every_try_of_start_engines_are_stopped(tmp_path, fake_engines, llmops_home):
    ok = fake_engines("ok", startup_s=0.3)
    flaky = fake_engines("flaky", crash_launches=2, crash_after_s=1)  # its first two launches crash
    suite = tmp_path / "two.yaml"
    suite.write_text(f"""
name: teardown
dataset: {{path: {TINY}}}
candidates:
  - {{name: ok, source: {{path: {ok}}}}}
  - {{name: flaky, source: {{path: {flaky}}}}}
search_space:
  temperature: [0.0]
  max_tokens: [16]
  prompt_templates:
    - {{name: t, template: "Context: {{context}} Question: {{question}}"}}
gate: {{min_scored_examples: 2}}
generation: {{concurrency: 2, request_timeout_s: 10, max_retries: 1, ready_timeout_s: 180}}
registered_model: teardown-model
""")
    out = subprocess.run([str(Path(sys.executable).with_name("llmops")), "run", "--suite", str(suite)],
                         capture_output=True, text=True, env=dict(os.environ), timeout=900, cwd=REPO)  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert len(launches(flaky)) == 3, launches(flaky)  # start_engines succeeded on its third try
    running = [p for d in (ok, flaky) for p in launches(d) if alive(p)]
    assert not running, f"engines left running after the run: {running}"
    assert not list((llmops_home / "engines").glob("*.json"))
