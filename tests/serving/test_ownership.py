"""Engine ownership: who launched an engine, who may stop it, and how long a
run may wait for one.

The engine program here is tests/serving/fake_engine.py, started through the
real EngineManager (wrapper at LLMOPS_ENGINE_PYTHON) instead of vLLM: vLLM
takes about a minute to start, and these tests start engines a dozen times,
make them crash on cue or never become ready. Its command line carries the
vLLM entrypoint and served name, as a real server's does. Parallel tasks are
real OS processes. The managed path with the real vLLM server is
tests/e2e/test_managed_engine.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation.errors import EndpointNotReady, PermanentError
from tests.helpers.fake_openai import Behaviour, FakeOpenAI
from tests.serving.conftest import alive, launches, models_spec


# ---- item 2: parallel tasks never launch the same engine twice


def _ensure_in_process(barrier, queue, model_dir: str) -> None:
    from serving.endpoints import ensure_endpoint

    barrier.wait()  # all processes call ensure at the same moment
    ep = ensure_endpoint("judge", {"path": model_dir}, ready_timeout_s=60)
    queue.put(ep.base_url)


def test_parallel_tasks_launch_one_engine_per_name(fake_engines):
    judge = fake_engines("judge", startup_s=2)
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_process, args=(barrier, queue, str(judge))) for _ in range(4)]
    for p in procs:
        p.start()
    urls = [queue.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(launches(judge)) == 1, f"the judge was launched {len(launches(judge))} times"
    assert len(set(urls)) == 1
    from serving.endpoints import manager

    assert manager().stop("judge").signalled
    assert not alive(launches(judge)[0])


# ---- item 1: the teardown stops every engine the run launched, whichever try launched it


def _first_try(models: dict, run_id: str) -> None:
    from serving.endpoints import endpoints_for

    endpoints_for(models, set(models), ready_timeout_s=60, run_id=run_id)


def test_teardown_stops_an_engine_launched_by_a_try_that_was_killed(fake_engines):
    from serving import ownership
    from serving.endpoints import endpoints_for, manager

    a = fake_engines("a", startup_s=3)
    models = models_spec(a)
    # Try 1 launches the engine, then its worker dies (SIGKILL: no cleanup runs).
    first = multiprocessing.get_context("fork").Process(target=_first_try, args=(models, "run-1"))
    first.start()
    deadline = time.monotonic() + 30
    while not launches(a) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.join()
    (pid,) = launches(a)
    # Try 2 finds it starting and waits for it: it did not launch it.
    eps = endpoints_for(models, set(models), ready_timeout_s=60, run_id="run-1")
    assert eps["a"]["launched_now"] is False and launches(a) == [pid]
    stopped = ownership.stop_launched("run-1")
    assert [s.name for s in stopped if s.signalled] == ["a"]
    assert not alive(pid) and manager().get("a") is None


# ---- item 4: a start that fails stops what it launched


def test_a_failed_start_stops_the_engines_it_launched(fake_engines):
    from serving.endpoints import endpoints_for, manager

    ok = fake_engines("ok", startup_s=0.3)
    bad = fake_engines("bad", crash_launches=99, crash_after_s=1)
    with pytest.raises(EndpointNotReady, match="exited during startup"):
        endpoints_for(models_spec(ok, bad), {"ok", "bad"}, ready_timeout_s=30)
    assert launches(ok) and not any(alive(p) for p in launches(ok)), "the healthy engine was left running"
    assert manager().list() == []


# ---- item 3: stop never signals a process that is not the recorded engine


def _record(home: Path, name: str, pid: int, **extra) -> None:
    rec = {"name": name, "pid": pid, "port": 1, "base_url": "http://127.0.0.1:1/v1", "model_dir": "/m",
           "log_file": "/dev/null", "started_at": 0, **extra}  # fmt: skip
    (home / "engines").mkdir(parents=True, exist_ok=True)
    (home / "engines" / f"{name}.json").write_text(json.dumps(rec))


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_stop_leaves_a_recycled_pid_alone_and_drops_the_stale_record(fake_engines, llmops_home, capsys):
    from ci_cd.cli import main
    from serving.endpoints import manager

    # A process that now has the recorded pid: it looks like an engine (its
    # command line has the vLLM entrypoint and the served name) but started
    # later than the one recorded.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "-m",
                              "vllm.entrypoints.openai.api_server", "--served-model-name", "x"],
                             start_new_session=True)  # fmt: skip
    # And a legacy record (no start time) whose pid is some unrelated process.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        time.sleep(0.2)
        _record(llmops_home, "x", other.pid, pid_start=_start_time(other.pid) - 100)
        _record(llmops_home, "y", stranger.pid)
        assert main(["engines", "stop"]) == 0
        out = capsys.readouterr().out
        time.sleep(0.5)
        assert other.poll() is None and stranger.poll() is None, "a process that is not the engine was signalled"
        assert "left alone" in out and str(other.pid) in out and str(stranger.pid) in out
        assert manager().list() == []
    finally:
        for p in (other, stranger):
            p.kill()
            p.wait()


def test_stop_stops_the_recorded_engine_and_its_whole_process_group(fake_engines):
    from serving.engine import EngineManager
    from serving.endpoints import manager

    d = fake_engines("m", startup_s=0.2, child="ignore_term")
    m: EngineManager = manager()
    rec, launched = m.ensure("m", d, timeout_s=30)
    assert launched and rec.pid_start == _start_time(rec.pid)
    group = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _pgrp(int(p.name)) == rec.pid]
    assert len(group) == 2  # the server and a child that ignores SIGTERM
    res = m.stop("m", grace_s=1)
    assert res.signalled and "stopped" in res.note
    deadline = time.monotonic() + 10
    while any(alive(p) for p in group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in group)
    assert m.get("m") is None and m.stop("m") is None


def _pgrp(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


# ---- item 5: ready_timeout_s bounds the whole wait, retries included


def test_probe_timeouts_never_exceed_the_deadline():
    from serving.engine import wait_ready

    with FakeOpenAI(Behaviour(stall_s=6)) as srv:  # /health answers, the real request hangs
        t0 = time.monotonic()
        with pytest.raises(PermanentError, match="not ready after 2 s"):
            wait_ready(srv.base_url, "fake", timeout_s=2, poll_s=0.2)
        took = time.monotonic() - t0
    assert took < 3.5, f"a 2 s readiness deadline took {took:.1f} s"


def test_the_readiness_deadline_spans_the_tasks_retries(fake_engines):
    from serving.endpoints import endpoints_for

    # First launch crashes after 2 s (a transient fault: Airflow retries the
    # task); later launches never become ready.
    d = fake_engines("slow", crash_launches=1, crash_after_s=2, never_ready=True)
    models = models_spec(d)
    t0 = time.monotonic()
    with pytest.raises(EndpointNotReady, match="exited during startup") as first:
        endpoints_for(models, {"slow"}, ready_timeout_s=6, run_id="run-5")
    assert not isinstance(first.value, PermanentError)
    # The retry only gets what is left of the 6 s, and its failure is final.
    with pytest.raises(PermanentError, match="not ready after 6 s"):
        endpoints_for(models, {"slow"}, ready_timeout_s=6, run_id="run-5")
    took = time.monotonic() - t0
    assert took < 7.5, f"a 6 s readiness deadline took {took:.1f} s over two tries"
    # A further try fails at once, without launching anything.
    t1 = time.monotonic()
    with pytest.raises(PermanentError, match="not ready after 6 s"):
        endpoints_for(models, {"slow"}, ready_timeout_s=6, run_id="run-5")
    assert time.monotonic() - t1 < 1 and len(launches(d)) == 2
    assert not any(alive(p) for p in launches(d))


def test_a_champions_own_copy_of_a_model_gets_its_own_engine_under_the_same_served_name(fake_engines):
    """The champion baseline of new weights under an old name runs the
    champion's recorded model: an engine of its own (engine key NAME@id),
    answering requests for the served name NAME like the suite's engine."""
    from serving.engine import probe
    from serving.endpoints import ensure_endpoints, manager

    new, old = fake_engines("new-weights"), fake_engines("old-weights")
    eps = ensure_endpoints({
        "m": {"source": {"path": str(new)}, "max_model_len": 2048, "served_name": "m"},
        "m@0123abcd": {"source": {"path": str(old)}, "max_model_len": 2048, "served_name": "m"},
    }, ready_timeout_s=30)  # fmt: skip
    assert eps["m"]["base_url"] != eps["m@0123abcd"]["base_url"]
    for ep in eps.values():
        probe(ep["base_url"], "m", timeout=5)  # both serve the name requests use
    recs = {r.name: r for r in manager().list()}
    assert recs["m@0123abcd"].model == "m" and recs["m@0123abcd"].model_dir == str(old.resolve())
    assert [n for _, n in (line.split() for line in (old / "launches.log").read_text().splitlines())] == ["m"]
    # A second call reuses both engines (the record's served name is checked, not its key).
    again = ensure_endpoints({
        "m@0123abcd": {"source": {"path": str(old)}, "max_model_len": 2048, "served_name": "m"},
    }, ready_timeout_s=30)  # fmt: skip
    assert again["m@0123abcd"]["launched_now"] is False
    for name in ("m", "m@0123abcd"):
        manager().stop(name)


# ---- a running engine is reused only for the model identity it was launched with


def test_an_engine_is_relaunched_when_its_weights_change_in_place(fake_engines):
    """Same path, new weight content (same size): the old process must not
    answer under the new fingerprint, or its answers would be cached under it."""
    from serving.endpoints import ensure_endpoints, manager
    from serving.models import model_fingerprint

    d = fake_engines("m", startup_s=0.2)
    first = ensure_endpoints(models_spec(d), ready_timeout_s=30)["m"]
    again = ensure_endpoints(models_spec(d), ready_timeout_s=30)["m"]
    assert again["launched_now"] is False and len(launches(d)) == 1  # nothing changed: reused
    (d / "model.safetensors").write_bytes(b"n")  # was b"m": same size, same path
    ep = ensure_endpoints(models_spec(d), ready_timeout_s=30)["m"]
    assert len(launches(d)) == 2, "the engine of the old weights was reused"
    old_pid, new_pid = launches(d)
    assert ep["launched_now"] and not alive(old_pid) and alive(new_pid)
    assert ep["model_fingerprint"] == model_fingerprint(d, max_model_len=2048) != first["model_fingerprint"]
    assert manager().get("m").identity == ep["model_fingerprint"]
    manager().stop("m")


def test_an_engine_is_relaunched_for_a_different_max_model_len(fake_engines):
    from serving.endpoints import ensure_endpoints, manager

    d = fake_engines("m", startup_s=0.2)
    ensure_endpoints({"m": {"source": {"path": str(d)}, "max_model_len": 2048}}, ready_timeout_s=30)
    ep = ensure_endpoints({"m": {"source": {"path": str(d)}, "max_model_len": 1024}}, ready_timeout_s=30)["m"]
    assert len(launches(d)) == 2, "the engine launched with --max-model-len 2048 was reused"
    old_pid, new_pid = launches(d)
    assert ep["launched_now"] and not alive(old_pid)
    cmd = Path(f"/proc/{new_pid}/cmdline").read_bytes().split(b"\0")
    assert cmd[cmd.index(b"--max-model-len") + 1] == b"1024"
    assert manager().get("m").max_model_len == 1024
    manager().stop("m")


def test_an_engine_recorded_without_an_identity_is_relaunched(fake_engines, llmops_home):
    """A record written before identities were recorded still loads; since
    what it serves cannot be told, its engine is replaced."""
    from serving.endpoints import ensure_endpoints, manager

    d = fake_engines("m", startup_s=0.2)
    ensure_endpoints(models_spec(d), ready_timeout_s=30)
    path = llmops_home / "engines" / "m.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("identity", "max_model_len")}
    path.write_text(json.dumps(old))
    assert manager().get("m").pid == launches(d)[0]  # the old record loads
    assert ensure_endpoints(models_spec(d), ready_timeout_s=30)["m"]["launched_now"]
    assert len(launches(d)) == 2 and not alive(launches(d)[0])
    manager().stop("m")
