"""Which engines a DAG run owns, and how long it may wait for them.

Every engine a task of a run launches (start_engines, a retry of it, the
judge's, one that halving or a restart needed) is recorded in the run's
storage (RunStore.LAUNCHED) at the moment it is launched, with its pid and
process start time, so the teardown stops every engine the run launched,
whichever try launched it, by that record (serving.engine never signals a
process that is not the recorded engine).

The readiness deadline of an endpoint (`generation.ready_timeout_s`) is kept
in the run's storage too (RunStore.READINESS) from the first wait until the
endpoint is ready, so a retried task waits only for what is left of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict

from evaluation.runstore import RunStore
from evaluation.suite import Suite, load_suite
from serving.engine import EngineRecord, StopResult

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _updating(run_id: str, name: str, default):
    """Read-modify-write of one of the run's JSON files under a file lock
    (tasks of a run may update it in parallel); yields the value to modify."""
    store = RunStore(run_id)
    with open(store.path(f".{name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            value = store.read_json(name, default)
            yield value
            store.write_json(name, value)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_launch(run_id: str, rec: EngineRecord) -> None:
    """Remember that this run launched the engine `rec` (called right after
    the launch, before waiting for it)."""
    with _updating(run_id, RunStore.LAUNCHED, {}) as known:
        known[f"{rec.name}:{rec.pid}"] = asdict(rec)


def launched(run_id: str) -> list[EngineRecord]:
    """The engines this run launched and has not stopped yet."""
    return [EngineRecord.from_json(r) for r in RunStore(run_id).read_json(RunStore.LAUNCHED, {}).values()]


def stop_launched(run_id: str, names: Iterable[str] | None = None) -> list[StopResult]:
    """Stop every engine this run launched (or those of them named `names`),
    by its launch record, and forget them. The teardown's body."""
    from serving.endpoints import manager

    wanted = None if names is None else set(names)
    m = manager()
    results = [m.stop_record(rec) for rec in launched(run_id) if wanted is None or rec.name in wanted]
    with _updating(run_id, RunStore.LAUNCHED, {}) as known:
        for r in results:
            known.pop(f"{r.name}:{r.pid}", None)
    for r in results:
        log.info("teardown: %s", r.note)
    return results


def readiness_deadlines(run_id: str, names: Iterable[str], timeout_s: float) -> dict[str, float]:
    """name -> the time.time() by which its endpoint must be ready: set by
    the first wait of this run for it, kept until it is ready."""
    now = time.time()
    with _updating(run_id, RunStore.READINESS, {}) as open_waits:
        for n in names:
            open_waits.setdefault(n, now + timeout_s)
        return {n: open_waits[n] for n in names}


def readiness_reached(run_id: str, names: Iterable[str]) -> None:
    """The endpoints are ready: a later wait (an engine that died and is
    restarted) gets a deadline of its own."""
    with _updating(run_id, RunStore.READINESS, {}) as open_waits:
        for n in names:
            open_waits.pop(n, None)


def live_endpoint(suite_path: str, model: str, spec: dict, endpoint: dict, run_id: str) -> dict:
    """A ready endpoint for `model` (restarting a managed engine that died, or
    starting one that start_engines did not need), keeping whether
    start_engines launched it; a new launch is recorded for the teardown."""
    ep = ensure_recorded(load_suite(suite_path), model, spec, run_id)
    ep["launched_now"] = endpoint.get("launched_now", False) or ep["launched_now"]
    return ep


def ensure_recorded(suite: Suite, name: str, spec: dict, run_id: str) -> dict:
    """ensure_endpoint for a task of run `run_id`: launches are recorded for
    the teardown, and the readiness deadline spans the task's retries."""
    from serving.endpoints import ensure_endpoint

    return ensure_endpoint(name, spec["source"], max_model_len=spec["max_model_len"],
                           ready_timeout_s=suite.generation.ready_timeout_s, run_id=run_id,
                           served_name=spec.get("served_name")).to_json()  # fmt: skip
