"""Stage `validate`: the suite and its dataset are checked before any
expensive work (tasks validate_suite and validate_dataset), and frozen.

The first task snapshots the validated suite, its dataset and its bias
probes file into the run's storage (`inputs/`, content-addressed names:
`<kind>-<sha256[:16]>.<ext>`), with the suite rewritten to point at the
copies. Every later task reads the snapshot (`task_suite_path`), so editing
the suite or the dataset while a run is going changes nothing in it, and the
digests logged are those of what was used."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from evaluation import settings
from evaluation.cache import ResultCache
from evaluation.candidates import expand_configs
from evaluation.dataset import dataset_digest
from evaluation.keys import VALIDATIONS, validation_key
from evaluation.stages.inputs import examples_for
from evaluation.errors import DatasetError
from evaluation.runstore import RunStore
from evaluation.suite import Suite, load_suite

log = logging.getLogger(__name__)


def check_suite(suite_path: str, run_id: str | None = None) -> dict:
    """Validate the suite; with `run_id`, freeze it (and its dataset and
    probes) into the run's storage and report the frozen copy."""
    from evaluation.secrets import check as check_credentials

    suite = load_suite(suite_path)
    check_credentials(suite)  # a missing key variable or file fails here, naming it (never its value)
    if run_id is not None:
        frozen = freeze_inputs(suite, run_id)
        suite = load_suite(frozen)
    configs = expand_configs(suite)
    check_resolution(suite, len(configs))
    log.info("suite %s (%s): %d candidate configurations", suite.name, suite.digest, len(configs))
    return {"name": suite.name, "digest": suite.digest, "configs": len(configs), "path": suite.source_path,
            "submitted_path": str(Path(suite_path).resolve())}  # fmt: skip


def check_resolution(suite: Suite, n_configs: int) -> None:
    """The smallest p-value the resampling tests can give is 1/(R+1), and
    Holm multiplies the smallest by the family size (every configuration of
    the sweep): with too few resamples no configuration could ever be
    promoted, whatever its improvement. Refused before any work."""
    import math

    from evaluation.errors import SuiteError

    g = suite.gate
    floor = n_configs / (g.bootstrap_resamples + 1)
    if floor >= g.alpha:
        need = math.ceil(n_configs / g.alpha)
        raise SuiteError(
            f"{suite.source_path}: gate.bootstrap_resamples: {g.bootstrap_resamples} resamples cannot resolve "
            f"{n_configs} configurations at alpha {g.alpha} (the smallest Holm-adjusted p-value would be "
            f"{floor:.3f}); raise it to at least {need} or evaluate fewer configurations"
        )


INPUTS = "inputs"
MANIFEST = f"{INPUTS}/manifest.json"


def _snapshot(store: RunStore, kind: str, data: bytes, ext: str) -> str:
    """Write `data` under a content-addressed name in the run's inputs/;
    returns the name relative to inputs/."""
    name = f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}{ext}"
    path = store.path(f"{INPUTS}/{name}")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{name}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return name


def freeze_inputs(suite: Suite, run_id: str) -> str:
    """Snapshot the validated suite, dataset and probes file; returns the
    frozen suite's path. Idempotent: a retried task finds the same files
    (and keeps the first snapshot: later edits of the originals are not
    taken in by a retry)."""
    import yaml

    store = RunStore(run_id)
    done = store.read_json(MANIFEST)
    if done is not None:
        return str(store.path(f"{INPUTS}/{done['suite']}"))
    raw = yaml.safe_load(Path(suite.source_path).read_text())
    manifest = {"submitted": suite.source_path, "dataset_source": str(suite.dataset_path)}
    data = suite.dataset_path.read_bytes()
    raw["dataset"]["path"] = manifest["dataset"] = _snapshot(store, "dataset", data, suite.dataset_path.suffix)
    if suite.bias_probes_path is not None:
        probes = suite.bias_probes_path.read_bytes()
        raw["bias"]["probes"] = manifest["probes"] = _snapshot(store, "probes", probes, suite.bias_probes_path.suffix)
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    manifest["suite"] = _snapshot(store, "suite", text.encode(), ".yaml")
    store.write_json(MANIFEST, manifest)
    log.info("froze the run's inputs into %s: %s", store.path(INPUTS), manifest)
    return str(store.path(f"{INPUTS}/{manifest['suite']}"))


def _submitted_dataset(suite: Suite) -> str | None:
    """The user's dataset file a frozen suite's snapshot was copied from."""
    manifest = Path(suite.source_path).parent / "manifest.json"
    if not manifest.is_file():
        return None
    import json

    return json.loads(manifest.read_text()).get("dataset_source")


def task_suite_path(run_id: str, submitted: str, *, require: bool = False) -> str:
    """The suite a task of run `run_id` reads: the frozen snapshot once
    validate_suite has made it, else the submitted path. With `require`
    (every task after validate_suite) a missing snapshot is an error, never
    a silent read of the live file: the run's storage is not shared with
    this worker, or it was removed."""
    from evaluation.errors import SuiteError

    store = RunStore(run_id)
    done = store.read_json(MANIFEST)
    if done:
        return str(store.path(f"{INPUTS}/{done['suite']}"))
    if require:
        raise SuiteError(f"run {run_id}: the frozen inputs ({store.path(MANIFEST)}) are missing; validate_suite "
                         "writes them and every later task reads them (is the run's storage shared with this "
                         "worker? see LLMOPS_HOME)")  # fmt: skip
    return submitted


def check_dataset(suite_path: str) -> dict:
    from evaluation.dataset import validate_dataset

    suite = load_suite(suite_path)
    ds = suite.dataset
    bounds = {"min_question_chars": ds.min_question_chars, "max_question_chars": ds.max_question_chars,
              "max_context_chars": ds.max_context_chars}  # fmt: skip
    # Structure is checked on every run (cheap); the Great Expectations run
    # (about 5 s of imports) only once per dataset content and bounds.
    cache = ResultCache(settings.cache_uri())
    try:
        key = validation_key(dataset_digest(examples_for(suite)), bounds)
        summary = cache.get(VALIDATIONS, key)
        if summary is None:
            summary = validate_dataset(suite.dataset_path, limit=ds.limit, **bounds)
            cache.put(VALIDATIONS, key, summary)
    except DatasetError as e:  # name the user's file, not the run's snapshot of it
        source = _submitted_dataset(suite)
        if source is None:
            raise
        raise type(e)(str(e).replace(str(suite.dataset_path), f"{source} (frozen as {suite.dataset_path.name})")) from None
    log.info("dataset %s: %d rows valid (digest %s)", suite.dataset_path, summary["rows"], summary["digest"])
    return summary
