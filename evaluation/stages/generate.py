"""Stage `generate`: every (configuration, example) of one model as one
interleaved request stream against its engine, reusing the cache (task
generate, mapped per model)."""

from __future__ import annotations

import logging
import time

from evaluation import settings
from evaluation.cache import ResultCache
from evaluation.candidates import Config
from evaluation.dataset import Example
from evaluation.generation import RequestResult, generate_jobs
from evaluation.keys import GENERATIONS, generation_key
from evaluation.runstore import RunStore
from evaluation.stages.inputs import examples_for, probe_examples
from evaluation.suite import Suite, load_suite

log = logging.getLogger(__name__)


def cached_generations(config: Config, examples: list[Example], endpoint: dict) -> tuple[dict[str, dict], dict]:
    """({example id: cached result}, {example id: cache key}) for one configuration."""
    cache = ResultCache(settings.cache_uri())
    keys = {ex.id: generation_key(config, ex, endpoint) for ex in examples}
    hits = {}
    for ex in examples:
        hit = cache.get(GENERATIONS, keys[ex.id])
        if hit is not None:
            hits[ex.id] = {**hit, "cached": True, "cache_key": keys[ex.id]}
    return hits, keys


def generate_items(suite: Suite, configs: list[Config], examples: list[Example], endpoint: dict
                   ) -> tuple[dict[str, dict[str, dict]], list[tuple[str, RequestResult]], float]:
    """Generate every missing (configuration, example) of one model as a
    single interleaved request stream, reusing cached results. Successful
    results are cached as they arrive, so a retry after a crash only sends
    what is missing; failed requests are not cached.
    Returns ({config id: {example id: result}}, [(config id, fresh result)], seconds)."""
    cache = ResultCache(settings.cache_uri())
    done: dict[str, dict[str, dict]] = {}
    keys: dict[str, dict[str, str]] = {}
    jobs = []
    for cfg in configs:
        done[cfg.config_id], keys[cfg.config_id] = cached_generations(cfg, examples, endpoint)
        jobs += [(cfg, ex) for ex in examples if ex.id not in done[cfg.config_id]]
        log.info("[%s] %s: %d cached, %d to generate", cfg.config_id, cfg.label, len(done[cfg.config_id]),
                 len(examples) - len(done[cfg.config_id]))  # fmt: skip
    by_example = {ex.id: i for i, ex in enumerate(examples)}
    jobs.sort(key=lambda j: by_example[j[1].id])  # interleave configurations, example by example

    def on_result(cfg: Config, r: RequestResult) -> None:
        # Runs in generate_jobs' writer thread (off the event loop: a GCS write
        # does not stall the requests); all writes finish before it returns.
        if r.success:
            cache.put(GENERATIONS, keys[cfg.config_id][r.example_id], r.to_json())

    t0 = time.monotonic()
    fresh: list[RequestResult] = []
    if jobs:
        if not endpoint.get("base_url"):
            raise RuntimeError(f"no endpoint for {configs[0].model} but {len(jobs)} generations are missing")
        g = suite.generation
        from evaluation.secrets import api_key

        fresh = generate_jobs(
            endpoint["base_url"], jobs, concurrency=g.concurrency, timeout_s=g.request_timeout_s,
            max_retries=g.max_retries, on_result=on_result, label=configs[0].model,
            api_key=api_key(configs[0].source, configs[0].model),  # read now, kept nowhere
        )  # fmt: skip
    for (cfg, _), r in zip(jobs, fresh):
        done[cfg.config_id][r.example_id] = {**r.to_json(), "cached": False,
                                             "cache_key": keys[cfg.config_id][r.example_id]}  # fmt: skip
    return done, [(cfg.config_id, r) for (cfg, _), r in zip(jobs, fresh)], round(time.monotonic() - t0, 2)


def generate_model(suite_path: str, configs_json: list[dict], endpoint: dict, run_id: str) -> list[dict]:
    """All of one model's configurations on every dataset row and bias probe
    (see generate_items). Writes generations-<config>.jsonl (dataset rows)
    and probes-<config>.jsonl (bias probes) and returns one summary per
    configuration."""
    suite = load_suite(suite_path)
    configs = [Config.from_json(c) for c in configs_json]
    examples, probes = examples_for(suite), probe_examples(suite)
    done, fresh, seconds = generate_items(suite, configs, examples + probes, endpoint)
    timing = {"model": configs[0].model, "requests": len(fresh), "seconds": seconds,
              "completion_tokens": sum(r.completion_tokens or 0 for _, r in fresh)}  # fmt: skip
    store = RunStore(run_id)
    engine = configs_json[0].get("engine_key", configs[0].model)  # the champion's own copy times apart
    store.write_json(store.generation_timing_name(engine), timing)
    fresh_ids = {(cid, r.example_id) for cid, r in fresh}
    summaries = []
    for cfg in configs:
        rows = done[cfg.config_id]
        out = store.write_generations(cfg.config_id, [rows[ex.id] for ex in examples])
        if probes:
            store.write_generations(cfg.config_id, [rows[p.id] for p in probes], kind="probes")
        mine = [rows[ex.id] for ex in examples + probes if (cfg.config_id, ex.id) in fresh_ids]
        summary = {
            "config_id": cfg.config_id,
            "examples": len(examples),
            "probes": len(probes),
            "cached": len(examples) + len(probes) - len(mine),
            "generated": len(mine),
            "failed": sum(1 for ex in examples if not rows[ex.id]["success"]),
            "completion_tokens": sum(r.get("completion_tokens") or 0 for r in mine),
            "seconds": seconds,
            "path": str(out),
        }
        log.info("[%s] generation done: %s", cfg.config_id, summary)
        summaries.append(summary)
    return summaries


def generate_config(suite_path: str, config_json: dict, endpoint: dict, run_id: str) -> dict:
    """One configuration (see generate_model)."""
    return generate_model(suite_path, [config_json], endpoint, run_id)[0]
