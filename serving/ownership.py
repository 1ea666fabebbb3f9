"""Which engines a DAG run owns: engines launched outside start_engines
(the judge's, a retry's, a halving round's) are recorded in the run's
storage so the teardown stops every engine the run launched."""

from __future__ import annotations

import logging

from evaluation.runstore import RunStore
from evaluation.suite import Suite, load_suite

log = logging.getLogger(__name__)


def record_launch(run_id: str, ep: dict) -> None:
    """Remember an engine that a task of this run launched outside
    start_engines (the judge's; a model whose engine halving or a retry
    needed), so the teardown stops it too."""
    if not ep.get("launched_now"):
        return
    store = RunStore(run_id)
    known = store.read_json(RunStore.LAUNCHED, {})
    known[ep["name"]] = ep
    store.write_json(RunStore.LAUNCHED, known)


def launched_endpoints(run_id: str) -> dict[str, dict]:
    """{name: endpoint} of the engines recorded by record_launch."""
    return RunStore(run_id).read_json(RunStore.LAUNCHED, {})


def live_endpoint(suite_path: str, model: str, spec: dict, endpoint: dict, run_id: str) -> dict:
    """A ready endpoint for `model` (restarting a managed engine that died, or
    starting one that start_engines did not need), keeping whether
    start_engines launched it; a new launch is recorded for the teardown."""
    ep = ensure_recorded(load_suite(suite_path), model, spec, run_id)
    ep["launched_now"] = endpoint.get("launched_now", False) or ep["launched_now"]
    return ep


def ensure_recorded(suite: Suite, name: str, spec: dict, run_id: str) -> dict:
    from serving.endpoints import ensure_endpoint

    ep = ensure_endpoint(name, spec["source"], max_model_len=spec["max_model_len"],
                         ready_timeout_s=suite.generation.ready_timeout_s).to_json()  # fmt: skip
    record_launch(run_id, ep)
    return ep
