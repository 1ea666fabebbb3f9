"""Engine lifecycle: readiness deadlines and clear failures. The real vLLM
server is started in tests/e2e; here the readiness logic is checked against a
closed port, a process that exits at once, and the fake OpenAI server.
Ownership, locks and stopping: test_ownership.py."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from evaluation.errors import EndpointNotReady, PermanentError
from serving.engine import EndpointDeadlineExceeded, EngineManager, free_port, wait_ready
from tests.helpers.fake_openai import FakeOpenAI


def test_not_ready_after_deadline_names_endpoint_and_seconds():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    # Permanent: the deadline spans the task's retries (tests/serving/test_ownership.py).
    with pytest.raises(EndpointDeadlineExceeded, match=rf"endpoint {url} \(m\) not ready after 1 s"):
        wait_ready(url, "m", timeout_s=1, poll_s=0.2)
    assert time.monotonic() - t0 < 10


def test_server_process_exiting_fails_at_once_with_log_tail(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("RuntimeError: CPU Generator does not use offset\n")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    t0 = time.monotonic()
    with pytest.raises(EndpointNotReady, match="exited during startup") as e:
        wait_ready(f"http://127.0.0.1:{free_port()}/v1", "m", timeout_s=60, pid=proc.pid, log_file=str(log))
    assert "CPU Generator" in str(e.value)
    assert time.monotonic() - t0 < 10


def test_ready_needs_health_and_a_real_request():
    with FakeOpenAI() as srv:
        took = wait_ready(srv.base_url, "fake", timeout_s=10)
        assert srv.b.requests == 1 and srv.b.bodies[0]["max_tokens"] == 1
    assert took < 10


def test_launch_without_engine_env_is_a_clear_permanent_error(tmp_path):
    m = EngineManager(tmp_path, tmp_path / "no-such-venv" / "bin" / "python")
    with pytest.raises(PermanentError, match="make engine-env"):
        m.launch("x", tmp_path)


def test_launch_rejects_a_directory_without_a_model(tmp_path):
    m = EngineManager(tmp_path, sys.executable)
    with pytest.raises(PermanentError, match="no config.json"):
        m.launch("x", tmp_path)
