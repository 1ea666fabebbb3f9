"""Stage `latency`: the latency probe (task measure_latency). Latency is a
serving property, so it is measured at a controlled load (GuideLLM and
vLLM's serving benchmark do the same): a seeded sample of `latency.sample`
dataset rows per configuration, sent at `latency.concurrency` requests in
flight (default 1), after every generation sweep of the run has finished and
one engine at a time (nothing else runs on the engines meanwhile),
configurations interleaved row by row so that a drift of the machine
affects them alike. A request that fails or times out scores 0 on
`latency` (it is the worst a user can see), and a session with a failed
request is not cached.

Every configuration of a run is measured in the same session, the champion's
baseline included, so the gate never pairs a cached latency with a fresh one
taken under another load: the plan stage (`mark_probes`) reuses cached
probe records only when every configuration has one from one and the same
earlier session; otherwise all of them are measured again in this run.
Records go to the run's storage (`latency-<config>.jsonl`), where the
`latency` scorer reads them.
"""

from __future__ import annotations

import logging

from evaluation import settings
from evaluation.cache import ResultCache
from evaluation.candidates import Config
from evaluation.dataset import Example
from evaluation.keys import LATENCY, latency_key
from evaluation.runstore import RunStore
from evaluation.stages.inputs import examples_for
from evaluation.suite import Suite, load_suite

log = logging.getLogger(__name__)


def enabled(suite: Suite) -> bool:
    return "latency" in suite.scoring.scorers


def probe_rows(suite: Suite) -> list[Example]:
    """The seeded sample of dataset rows the probe sends."""
    from evaluation.halving import order

    examples = examples_for(suite)
    by_id = {ex.id: ex for ex in examples}
    return [by_id[i] for i in order(list(by_id), suite.gate.seed)[: suite.latency.sample]]


def _load(suite: Suite) -> dict:
    return {"concurrency": suite.latency.concurrency, "rows": [ex.digest for ex in probe_rows(suite)]}


def _key(suite: Suite, config: Config, endpoint: dict) -> str:
    return latency_key(config, endpoint, _load(suite))


def mark_probes(suite_path: str, configs: list[dict], identities: dict[str, dict],
                run_id: str | None = None) -> str | None:
    """Set `probe` on every configuration: True when this run must measure
    it. Cached records are reused only when every configuration has them
    from one earlier session (returned); otherwise every configuration is
    measured in this run (None)."""
    suite = load_suite(suite_path)
    if not enabled(suite):
        for c in configs:
            c["probe"] = False
        return None
    cache = ResultCache(settings.cache_uri())
    hits = [cache.get(LATENCY, _key(suite, Config.from_json(c), identities[c["engine_key"]])) for c in configs]
    sessions = {hit["session"] if hit else None for hit in hits}
    reuse = len(sessions) == 1 and None not in sessions
    for c in configs:
        c["probe"] = not reuse
    session = next(iter(sessions)) if reuse else None
    if reuse and run_id is not None:  # copied now: nothing later depends on the cache entry still being there
        store = RunStore(run_id)
        for c, hit in zip(configs, hits):
            store.write_jsonl(store.latency_name(c["config_id"]), hit["records"])
    log.info("latency probe: %s", f"reusing session {session} for every configuration" if reuse
             else f"measuring all {len(configs)} configurations in this run")  # fmt: skip
    return session


def probe_batch(suite_path: str, configs_json: list[dict], endpoint: dict, run_id: str) -> dict[str, int]:
    """Measure (or copy from the cache, see mark_probes) the latency of one
    engine's configurations; writes latency-<config>.jsonl. Returns
    {config id: probe requests}."""
    from evaluation.generation import generate_jobs
    from evaluation.secrets import api_key

    suite = load_suite(suite_path)
    if not enabled(suite):
        return {}
    store = RunStore(run_id)
    cache = ResultCache(settings.cache_uri())
    configs = [Config.from_json(c) for c in configs_json]
    todo = [cfg for cfg, c in zip(configs, configs_json) if c.get("probe", True)]
    out: dict[str, int] = {}
    if not todo:  # reused as a whole session: mark_probes copied the records
        return out
    if not endpoint.get("base_url"):
        raise RuntimeError(f"no endpoint for {configs[0].model} but {len(todo)} latency probes are to be measured")
    rows = probe_rows(suite)
    jobs = [(cfg, ex) for ex in rows for cfg in todo]
    g = suite.generation
    log.info("latency probe: %d configurations x %d rows at concurrency %d", len(todo), len(rows),
             suite.latency.concurrency)  # fmt: skip
    results = generate_jobs(endpoint["base_url"], jobs, concurrency=suite.latency.concurrency,
                            timeout_s=g.request_timeout_s, max_retries=0, label=f"latency {configs[0].model}",
                            api_key=api_key(todo[0].source, todo[0].model))  # fmt: skip
    by_cfg: dict[str, list[dict]] = {cfg.config_id: [] for cfg in todo}
    for (cfg, _), r in zip(jobs, results):
        rec = r.to_json()
        rec.pop("text", None)
        by_cfg[cfg.config_id].append(rec)
    for cfg in todo:
        records = by_cfg[cfg.config_id]
        store.write_jsonl(store.latency_name(cfg.config_id), records)
        out[cfg.config_id] = len(records)
    if all(r["success"] for cfg in todo for r in by_cfg[cfg.config_id]):
        for cfg in todo:
            cache.put(LATENCY, _key(suite, cfg, endpoint),
                      {"session": run_id, "load": _load(suite), "records": by_cfg[cfg.config_id]})  # fmt: skip
    else:
        log.warning("latency probe: some requests failed; this session is not cached")
    return out


def probe_all(suite_path: str, batches: list[dict], endpoints: dict, run_id: str) -> dict[str, int]:
    """Task measure_latency: every engine's probe in turn, after all the
    sweeps. An engine that died or was never started (everything cached
    but the latency) is (re)started and recorded for the teardown."""
    from evaluation.stages.plan import models_of
    from serving.ownership import live_endpoint

    out: dict[str, int] = {}
    for batch in batches:
        key, configs = batch["model"], batch["configs"]
        if not any(c.get("probe", True) for c in configs):
            continue
        ep = live_endpoint(suite_path, key, models_of(configs)[key], endpoints[key], run_id)
        out.update(probe_batch(suite_path, configs, ep, run_id))
    return out


def records(run_id: str, config_id: str) -> list[dict]:
    store = RunStore(run_id)
    name = store.latency_name(config_id)
    return store.read_jsonl(name) if store.path(name).exists() else []
