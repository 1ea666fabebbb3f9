"""Engine lifecycle: readiness deadlines and clear failures. The real vLLM
server is started in tests/e2e; here the readiness logic is checked against a
closed port, a process that exits at once, and the fake OpenAI server."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from evaluation.errors import EndpointNotReady, PermanentError
from serving.engine import EngineManager, free_port, wait_ready
from tests.helpers.fake_openai import FakeOpenAI


def test_not_ready_after_deadline_names_endpoint_and_seconds():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(EndpointNotReady, match=rf"endpoint {url} \(m\) not ready after 1 s"):
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


def test_stop_kills_the_process_group_and_forgets_the_record(tmp_path):
    m = EngineManager(tmp_path, sys.executable)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    (tmp_path / "engines" / "x.json").write_text(
        f'{{"name": "x", "pid": {proc.pid}, "port": 1, "base_url": "http://127.0.0.1:1/v1", '
        f'"model_dir": "/m", "log_file": "/dev/null", "started_at": 0}}'
    )
    assert m.stop("x", grace_s=5)
    assert proc.wait(timeout=5) is not None
    assert m.get("x") is None and not m.stop("x")
