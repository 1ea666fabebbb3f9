"""Task bodies of the `llm_eval_promote` DAG, as plain functions.

The DAG file only wires these together; everything here is testable without
Airflow. Values passed between steps are small JSON dicts (Airflow XComs);
bulk data (generations, per-example scores) lives in the run directory and
the content-addressed cache.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path

from evaluation import registry, settings
from evaluation.cache import ResultCache, cache_key
from evaluation.candidates import Config, expand_configs
from evaluation.dataset import Example, dataset_digest, load_examples
from evaluation.errors import RegistryError
from evaluation.generation import RequestResult, generate_jobs
from evaluation.jsonsafe import dump_nan, load_metrics
from evaluation.ledger import Ledger
from evaluation.ranking import config_summary, example_composite, rank_configs
from evaluation.scorers import ScoringContext, ScoringItem, get_scorer
from evaluation.scorers._judge import has_transient_error
from evaluation.suite import Suite, load_suite, sha256_json

log = logging.getLogger(__name__)

GENERATIONS = "generations"
SCORES = "scores"


def run_dir(run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    d = settings.runs_dir() / safe
    d.mkdir(parents=True, exist_ok=True)
    return d


def examples_for(suite: Suite) -> list[Example]:
    return load_examples(suite.dataset_path, suite.dataset.limit)


def bias_enabled(suite: Suite) -> bool:
    return suite.bias is not None and "bias" in suite.scoring.scorers


def probe_prompts(suite: Suite) -> list:
    """The suite's counterfactual bias probes, one per probe template x group
    (`evaluation.bias.ProbePrompt`); empty when `bias` is off."""
    if not bias_enabled(suite):
        return []
    from evaluation.bias import expand_probes, load_groups, load_probes

    return expand_probes(load_probes(suite.bias_probes_path), load_groups(), suite.bias.categories)


def probe_examples(suite: Suite) -> list[Example]:
    """The probes as generation inputs (no context)."""
    return [Example(id=p.id, question=p.prompt, contexts=()) for p in probe_prompts(suite)]


def scoring_digest(suite: Suite) -> str:
    """Composites are comparable only under the same scorers and weights."""
    from evaluation.scorers import get_scorer as _get

    versions = {n: _get(n).version for n in suite.scoring.scorers}
    return sha256_json(
        {"weights": suite.scoring.weights, "versions": versions, "budget": suite.scoring.latency_budget_s}
    )[:12]


# --------------------------------------------------------------- validation


def check_suite(suite_path: str) -> dict:
    suite = load_suite(suite_path)
    configs = expand_configs(suite)
    log.info("suite %s (%s): %d candidate configurations", suite.name, suite.digest, len(configs))
    return {"name": suite.name, "digest": suite.digest, "configs": len(configs), "path": suite.source_path}


def check_dataset(suite_path: str) -> dict:
    from evaluation.dataset import validate_dataset

    suite = load_suite(suite_path)
    ds = suite.dataset
    bounds = {"min_question_chars": ds.min_question_chars, "max_question_chars": ds.max_question_chars,
              "max_context_chars": ds.max_context_chars}  # fmt: skip
    # Structure is checked on every run (cheap); the Great Expectations run
    # (about 5 s of imports) only once per dataset content and bounds.
    cache = ResultCache(settings.cache_uri())
    key = cache_key(kind="validation", dataset=dataset_digest(examples_for(suite)), bounds=bounds, version=2)
    summary = cache.get("validations", key)
    if summary is None:
        summary = validate_dataset(suite.dataset_path, limit=ds.limit, **bounds)
        cache.put("validations", key, summary)
    log.info("dataset %s: %d rows valid (digest %s)", suite.dataset_path, summary["rows"], summary["digest"])
    return summary


# ------------------------------------------------------------------ planning


def plan(suite_path: str) -> list[dict]:
    """The configurations to evaluate: the suite's grid, plus the current
    champion's configuration as a baseline when its model is one of the
    suite's candidates (so the comparison is on the same examples)."""
    suite = load_suite(suite_path)
    configs = [dict(c.to_json(), role="candidate") for c in expand_configs(suite)]
    champ = registry.current_champion(suite.registered_model, settings.tracking_uri())
    if champ is not None:
        ids = {c["config_id"] for c in configs}
        by_name = {c.name: c for c in suite.candidates}
        if champ.config_id in ids:
            for c in configs:
                c["is_champion"] = c["config_id"] == champ.config_id
            log.info("champion v%s is one of this sweep's configurations", champ.version)
        elif champ.config.get("model") in by_name:
            cand = by_name[champ.config["model"]]
            cfg = Config.from_json({**champ.config, "source": cand.source.model_dump(exclude_none=True)})
            configs.append(dict(cfg.to_json(), role="champion", is_champion=True))
            log.info("champion v%s (%s) is re-evaluated on this dataset as a baseline", champ.version, cfg.label)
        else:
            log.warning(
                "champion v%s serves model %r, which is not a candidate of this suite: it cannot be "
                "re-evaluated on these examples, so the gate can only be INCONCLUSIVE",
                champ.version, champ.config.get("model"),
            )  # fmt: skip
    return configs


def annotate_missing(suite_path: str, configs: list[dict], identities: dict[str, dict]) -> dict:
    """Count each configuration's generations missing from the cache (0: it
    needs no engine)."""
    suite = load_suite(suite_path)
    dataset = examples_for(suite)
    dataset_ids = {ex.id for ex in dataset}
    examples = dataset + probe_examples(suite)
    for c in configs:
        hits, _ = cached_generations(Config.from_json(c), examples, identities[c["model"]])
        c["missing"] = len(examples) - len(hits)
        c["missing_dataset"] = len(dataset_ids - set(hits))
    total = sum(c["missing"] for c in configs)
    log.info("%d configurations, %d generations missing from the cache", len(configs), total)
    return configs


def batches_by_model(configs: list[dict]) -> list[dict]:
    """One generation batch per model: its configurations go to the engine
    together."""
    batches: dict[str, list[dict]] = {}
    for c in configs:
        batches.setdefault(c["model"], []).append(c)
    return [{"model": m, "configs": cs} for m, cs in batches.items()]


def models_of(suite_path: str, configs: list[dict]) -> dict[str, dict]:
    """Distinct models to serve: name -> {source, max_model_len}."""
    suite = load_suite(suite_path)
    by_name = {c.name: c for c in suite.candidates}
    return {
        c["model"]: {"source": c["source"], "max_model_len": by_name[c["model"]].max_model_len} for c in configs
    }


# ---------------------------------------------------------------- generation


def generation_key(config: Config, example: Example, endpoint: dict) -> str:
    return cache_key(
        kind="generation",
        model=config.model,
        model_fingerprint=endpoint["model_fingerprint"],
        engine=endpoint["engine"],
        api=config.api,
        sampling=config.identity()["sampling"],
        template=config.template_hash,
        example=example.digest,
    )


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
        if r.success:
            cache.put(GENERATIONS, keys[cfg.config_id][r.example_id], r.to_json())

    t0 = time.monotonic()
    fresh: list[RequestResult] = []
    if jobs:
        if not endpoint.get("base_url"):
            raise RuntimeError(f"no endpoint for {configs[0].model} but {len(jobs)} generations are missing")
        g = suite.generation
        fresh = generate_jobs(
            endpoint["base_url"], jobs, concurrency=g.concurrency, timeout_s=g.request_timeout_s,
            max_retries=g.max_retries, on_result=on_result, label=configs[0].model,
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
    (run_dir(run_id) / f"timing-{configs[0].model}.json").write_text(json.dumps(timing))
    fresh_ids = {(cid, r.example_id) for cid, r in fresh}
    summaries = []
    for cfg in configs:
        rows = done[cfg.config_id]
        out = run_dir(run_id) / f"generations-{cfg.config_id}.jsonl"
        out.write_text("".join(json.dumps(rows[ex.id]) + "\n" for ex in examples))
        if probes:
            (run_dir(run_id) / f"probes-{cfg.config_id}.jsonl").write_text(
                "".join(json.dumps(rows[p.id]) + "\n" for p in probes))  # fmt: skip
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


# ------------------------------------------------------ successive halving


def select_configs(suite_path: str, configs: list[dict], endpoints: dict, run_id: str) -> list[dict]:
    """The configurations that get the full evaluation. Grid search: all of
    them. Successive halving (evaluation.halving): rounds on growing nested
    subsets of the examples, each keeping the top 1/eta by the composite of
    the suite's cheap scorers. The champion's configuration is never
    dropped. Writes halving.json (rounds, eliminations, tokens) to the run
    directory for the MLflow log and the report."""
    from evaluation import halving

    suite = load_suite(suite_path)
    if suite.search.strategy == "grid":
        return configs
    h = suite.search.halving
    pool = [c for c in configs if c["role"] == "candidate" and not c.get("is_champion")]
    fixed = [c for c in configs if c not in pool]
    examples = examples_for(suite)
    by_id = {ex.id: ex for ex in examples}
    ids = halving.order([ex.id for ex in examples], suite.gate.seed)
    plan_ = halving.schedule(len(pool), len(examples), eta=h.eta, min_examples=h.min_examples,
                             min_survivors=max(1, h.min_survivors - len(fixed)))  # fmt: skip
    cheap = [n for n in suite.scoring.scorers if get_scorer(n).level == "example" and not get_scorer(n).needs_judge]
    cheap_metrics = {get_scorer(n).metrics[0] for n in cheap}
    weights = {m: w for m, w in suite.scoring.weights.items() if m in cheap_metrics and w > 0}
    lower = lower_is_better(weights)
    survivors = list(pool)
    rounds: list[dict] = []
    used: dict[str, dict] = {}
    t0 = time.monotonic()
    generation_seconds = 0.0
    for i, (k, size) in enumerate(plan_):
        subset = [by_id[x] for x in ids[:size]]
        rnd = halving.Round(index=i + 1, examples=size, configs=[c["config_id"] for c in survivors])
        for model, batch in ((b["model"], b["configs"]) for b in batches_by_model(survivors)):
            cfgs = [Config.from_json(c) for c in batch]
            ep = endpoints[model]
            if not ep.get("base_url") and any(
                len(cached_generations(cfg, subset, ep)[0]) < len(subset) for cfg in cfgs
            ):  # fmt: skip
                ep = endpoints[model] = live_endpoint(suite_path, model, models_of(suite_path, batch)[model], ep,
                                                      run_id)  # fmt: skip
            done, _, gen_s = generate_items(suite, cfgs, subset, ep)
            generation_seconds += gen_s
            for cfg in cfgs:
                gens = done[cfg.config_id]
                tokens = sum(g.get("completion_tokens") or 0 for g in gens.values())
                rnd.completion_tokens += tokens
                used[cfg.config_id] = {"examples": size, "completion_tokens": tokens, "round": i + 1}
                items, _ = scoring_items(subset, gens)
                ctx = ScoringContext(config=cfg, latency_budget_s=suite.scoring.latency_budget_s)
                per, _, _ = run_scorers(suite, cheap, items, ctx, gens, run_id)
                rows = [{"success": gens[ex.id]["success"],
                         "composite": example_composite(per.get(ex.id, {}), weights, lower)
                         if gens[ex.id]["success"] else math.nan} for ex in subset]  # fmt: skip
                rnd.composite[cfg.config_id] = config_summary(rows, size)["composite"]
        keep = max(max(1, h.min_survivors - len(fixed)), math.ceil(k / h.eta))
        rnd.kept = halving.keep_top(rnd.composite, keep)
        log.info("halving round %d: %d configurations on %d examples, kept %d: %s", rnd.index, len(rnd.configs),
                 size, len(rnd.kept), ", ".join(f"{c} ({rnd.composite[c]:.4f})" for c in rnd.kept))  # fmt: skip
        rounds.append(rnd.to_json())
        survivors = [c for c in survivors if c["config_id"] in rnd.kept]
    eliminated = {cid: r["index"] for r in rounds for cid in r["configs"] if cid not in r["kept"]}
    record = {"strategy": "successive_halving", **h.model_dump(), "n_examples": len(examples),
              "n_configs": len(pool) + len(fixed), "rounds": rounds, "eliminated": eliminated,
              "used": used, "survivors": [c["config_id"] for c in survivors + fixed],
              "labels": {c["config_id"]: {"model": c["model"], "template": Config.from_json(c).template_name,
                                          "sampling": Config.from_json(c).sampling.short()} for c in pool},
              "seconds": round(time.monotonic() - t0, 2), "generation_seconds": round(generation_seconds, 2),
              "scorers": cheap}  # fmt: skip
    (run_dir(run_id) / "halving.json").write_text(json.dumps(dump_nan(record)))
    log.info("successive halving: %d of %d configurations go to the full evaluation", len(survivors) + len(fixed),
             len(configs))  # fmt: skip
    return survivors + fixed


def halving_summary(run_id: str, scored: list[dict]) -> dict | None:
    """Tokens the halving run generated against the full grid's: survivors
    count their full-dataset generations, eliminated configurations what
    they used; the full grid is estimated from each eliminated
    configuration's mean completion tokens per example."""
    path = run_dir(run_id) / "halving.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    n = rec["n_examples"]
    spent = full = 0.0
    for s in scored:
        cid = s["config"]["config_id"]
        gens = _load_generations(run_id, "generations", cid)
        t = sum(g.get("completion_tokens") or 0 for g in gens.values())
        spent += t
        full += t
    for cid, u in rec["used"].items():
        if cid in rec["eliminated"]:
            spent += u["completion_tokens"]
            full += u["completion_tokens"] / max(1, u["examples"]) * n
    rec.update(tokens_spent=spent, tokens_full_grid_estimate=full, token_share=spent / full if full else math.nan)
    return rec


# ------------------------------------------------------------------- scoring


def _load_generations(run_id: str, prefix: str, config_id: str) -> dict[str, dict]:
    path = run_dir(run_id) / f"{prefix}-{config_id}.jsonl"
    return {g["example_id"]: g for g in map(json.loads, path.read_text().splitlines())}


def scoring_items(examples: list[Example], gens: dict[str, dict]) -> tuple[list[ScoringItem], dict[str, int]]:
    """The successful generations as scoring items, their answers cleaned of
    invisible characters; and how many were stripped per example."""
    from evaluation.hygiene import strip_invisible

    items, invisible = [], {}
    for ex in examples:
        g = gens[ex.id]
        if g["success"]:
            r = RequestResult(**{k: v for k, v in g.items() if k not in ("cached", "cache_key")})
            r.text, invisible[ex.id] = strip_invisible(r.text)
            items.append(ScoringItem(ex, r))
    return items, invisible


def judge_identity(suite: Suite):
    """The suite's judge as a JudgeEndpoint without a live URL (enough for
    cache keys); None when the suite has no judge."""
    from evaluation.scorers import JudgeEndpoint
    from serving.endpoints import identify

    j = suite.judge
    if j is None:
        return None
    ident = identify(j.name, j.source.model_dump(exclude_none=True))
    return JudgeEndpoint(base_url="", model=j.name, identity=f"{ident['model_fingerprint']}|{ident['engine']}",
                         max_tokens=j.max_tokens, temperature=j.temperature, concurrency=j.concurrency,
                         timeout_s=j.request_timeout_s, max_retries=j.max_retries)  # fmt: skip


def record_launch(run_id: str, ep: dict) -> None:
    """Remember an engine that a task of this run launched outside
    start_engines (the judge's; a model whose engine halving or a retry
    needed), so the teardown stops it too."""
    if not ep.get("launched_now"):
        return
    marker = run_dir(run_id) / "launched-engines.json"
    known = json.loads(marker.read_text()) if marker.exists() else {}
    known[ep["name"]] = ep
    marker.write_text(json.dumps(known))


def launched_endpoints(run_id: str) -> dict[str, dict]:
    """{name: endpoint} of the engines recorded by record_launch."""
    marker = run_dir(run_id) / "launched-engines.json"
    return json.loads(marker.read_text()) if marker.exists() else {}


def live_judge(suite: Suite, judge, run_id: str):
    """Make the judge endpoint ready (a managed engine is started, or the
    running one reused: a bundled judge that is also a candidate shares its
    engine) and record a launch for the teardown."""
    from dataclasses import replace

    j = suite.judge
    ep = _ensure_recorded(suite, j.name, {"source": j.source.model_dump(exclude_none=True),
                                          "max_model_len": j.max_model_len}, run_id)  # fmt: skip
    return replace(judge, base_url=ep["base_url"])


def live_endpoint(suite_path: str, model: str, spec: dict, endpoint: dict, run_id: str) -> dict:
    """A ready endpoint for `model` (restarting a managed engine that died, or
    starting one that start_engines did not need), keeping whether
    start_engines launched it; a new launch is recorded for the teardown."""
    ep = _ensure_recorded(load_suite(suite_path), model, spec, run_id)
    ep["launched_now"] = endpoint.get("launched_now", False) or ep["launched_now"]
    return ep


def _ensure_recorded(suite: Suite, name: str, spec: dict, run_id: str) -> dict:
    from serving.endpoints import ensure_endpoint

    ep = ensure_endpoint(name, spec["source"], max_model_len=spec["max_model_len"],
                         ready_timeout_s=suite.generation.ready_timeout_s).to_json()  # fmt: skip
    record_launch(run_id, ep)
    return ep


def engines_needed(suite_path: str, configs: list[dict]) -> set[str]:
    """Models whose engine start_engines starts: those with generations
    missing from the cache. With successive halving only the dataset rows
    count (the bias probes are generated for survivors only; their engines
    start on demand)."""
    suite = load_suite(suite_path)
    key = "missing_dataset" if suite.search.strategy == "successive_halving" else "missing"
    return {c["model"] for c in configs if c.get(key, c["missing"])}


def run_scorers(suite: Suite, names: list[str], items: list[ScoringItem], ctx: ScoringContext,
                gens: dict[str, dict], run_id: str) -> tuple[dict[str, dict], dict[str, float], dict[str, str]]:
    """Example-level scorers over `items`, reusing cached per-example scores
    (keyed by generation, scorer name + version and, for judge scorers, the
    judge's identity); a judge engine is started only when a judge score is
    missing. Returns ({example id: values}, run-level metrics, {scorer: version})."""
    cache = ResultCache(settings.cache_uri())
    per_example: dict[str, dict] = {it.example.id: {} for it in items}
    metrics: dict[str, float] = {}
    versions: dict[str, str] = {}
    seconds: dict[str, float] = {}
    judge_n = suite.judge.max_examples if suite.judge else None
    for name in names:
        scorer = get_scorer(name)
        versions[name] = scorer.version
        if scorer.level != "example":
            continue
        mine = items[:judge_n] if scorer.needs_judge and judge_n else items
        t0 = time.monotonic()
        params = scorer.cache_params(ctx)
        skey = {it.example.id: cache_key(kind="score", scorer=name, version=scorer.version, params=params,
                                         generation=gens[it.example.id].get("cache_key"))
                for it in mine}  # fmt: skip
        values = {i: cache.get(SCORES, skey[i]) for i in skey if gens[i].get("cache_key")}
        todo = [it for it in mine if values.get(it.example.id) is None]
        if todo and scorer.needs_judge and not ctx.judge.base_url:
            ctx.judge = live_judge(suite, ctx.judge, run_id)
        for it, vals in zip(todo, scorer.score(todo, ctx) if todo else []):
            values[it.example.id] = vals
            if gens[it.example.id].get("cache_key") and not has_transient_error(vals):
                cache.put(SCORES, skey[it.example.id], vals)
        ordered = [values[it.example.id] for it in mine]
        for it, vals in zip(mine, ordered):
            per_example[it.example.id].update(vals)
        metrics.update(scorer.aggregate(ordered))
        seconds[name] = round(time.monotonic() - t0, 2)
        log.info("[%s] scorer %s v%s: %d cached, %d scored, %.1f s", ctx.config.config_id, name, scorer.version,
                 len(mine) - len(todo), len(todo), seconds[name])  # fmt: skip
    timing = run_dir(run_id) / f"score-timing-{ctx.config.config_id}.json"
    previous = json.loads(timing.read_text()) if timing.exists() else {}
    timing.write_text(json.dumps({n: previous.get(n, 0.0) + v for n, v in seconds.items()} | {
        n: v for n, v in previous.items() if n not in seconds}))  # fmt: skip
    return per_example, metrics, versions


def lower_is_better(weights: dict[str, float]) -> frozenset[str]:
    from evaluation.scorers import scorer_for_metric

    return frozenset(m for m in weights if not scorer_for_metric(m).higher_is_better)


def score_config(suite_path: str, config_json: dict, run_id: str) -> dict:
    """Score one configuration's generations with the suite's scorers.
    Answers are cleaned of invisible characters first (counted). Writes
    per-example rows next to the generations; returns run-level metrics
    (small, for XCom)."""
    from evaluation.hygiene import injection_markers
    from evaluation.scorers._judge import judge_error_rate

    suite = load_suite(suite_path)
    config = Config.from_json(config_json)
    examples = examples_for(suite)
    gens = _load_generations(run_id, "generations", config.config_id)
    ok, invisible = scoring_items(examples, gens)
    ctx = ScoringContext(config=config, latency_budget_s=suite.scoring.latency_budget_s, judge=judge_identity(suite))
    per_example, metrics, scorer_info = run_scorers(suite, suite.scoring.scorers, ok, ctx, gens, run_id)

    # Config-level scorers (bias): one value for the configuration.
    config_values: dict[str, float] = {}
    for name in suite.scoring.scorers:
        scorer = get_scorer(name)
        if scorer.level == "config":
            cm, groups = scorer.score_config(probe_answers(suite, run_id, config.config_id), suite.bias.categories)
            metrics.update(cm)
            config_values.update({m: cm.get(m, math.nan) for m in scorer.metrics})
            (run_dir(run_id) / f"{name}-groups-{config.config_id}.json").write_text(json.dumps(groups))

    lower = lower_is_better(suite.scoring.weights)
    judge_metrics = [m for n in suite.scoring.scorers if get_scorer(n).needs_judge for m in get_scorer(n).metrics]
    rows = []
    for ex in examples:
        g = gens[ex.id]
        m = per_example.get(ex.id, {})
        comp = example_composite({**m, **config_values}, suite.scoring.weights, lower) if g["success"] else math.nan
        rows.append(
            {
                "example_id": ex.id,
                "question": ex.question,
                "answer": g["text"],
                "success": g["success"],
                "error": g["error"],
                "cached": g.get("cached", False),
                "invisible_chars": invisible.get(ex.id, 0),
                "injection_markers": ",".join(injection_markers(g["text"])),
                **{k: m.get(k, math.nan) for k in sorted(m)},
                "composite": comp,
            }
        )
    metrics.update(config_summary(rows, len(examples)))
    if judge_metrics:
        metrics["judge_error_rate"] = judge_error_rate(list(per_example.values()), judge_metrics)
    metrics["invisible_chars_stripped"] = float(sum(invisible.values()))
    metrics["injection_suspected"] = float(sum(1 for r in rows if r["injection_markers"]))
    metrics.update(agreement(rows))
    (run_dir(run_id) / f"scores-{config.config_id}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    log.info("[%s] composite %.4f (coverage %.2f)", config.config_id, metrics["composite"], metrics["coverage"])
    return dump_nan({"config": config_json, "metrics": metrics, "scorers": scorer_info,
                     "suspected_injections": [r["example_id"] for r in rows if r["injection_markers"]]})


def probe_answers(suite: Suite, run_id: str, config_id: str) -> list:
    from evaluation.bias import ProbeAnswer

    gens = _load_generations(run_id, "probes", config_id)
    prompts = probe_prompts(suite)
    return [ProbeAnswer(id=p.id, probe_id=p.probe_id, category=p.category, group=p.group,
                        text=gens[p.id]["text"], success=gens[p.id]["success"]) for p in prompts]  # fmt: skip


# Cheap scorer vs judge scorer pairs whose rank agreement is logged.
AGREEMENT_PAIRS = (
    ("relevance", "trulens_answer_relevance"),
    ("relevance", "ragas_response_relevancy"),
    ("groundedness", "trulens_groundedness"),
    ("groundedness", "ragas_faithfulness"),
    ("trulens_answer_relevance", "ragas_response_relevancy"),
    ("trulens_groundedness", "ragas_faithfulness"),
)


def agreement(rows: list[dict], min_pairs: int = 5) -> dict[str, float]:
    """Spearman rank correlation between each embedding scorer and the judge
    scorer of the same property, over examples both scored; only where both
    ran, with at least `min_pairs` examples and some variation."""
    from scipy.stats import spearmanr

    out = {}
    for a, b in AGREEMENT_PAIRS:
        pairs = [(r[a], r[b]) for r in rows if isinstance(r.get(a), float) and isinstance(r.get(b), float)
                 and not math.isnan(r[a]) and not math.isnan(r[b])]  # fmt: skip
        if len(pairs) < min_pairs or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
            continue
        rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
        out[f"agreement/{a}_vs_{b}"] = float(rho)
        out[f"agreement/{a}_vs_{b}_n"] = float(len(pairs))
    return out


# ------------------------------------------------------- tracking + ranking


def log_sweep(suite_path: str, scored: list[dict], dataset: dict, context: dict) -> dict:
    """Rank the candidates and log the sweep to MLflow: one parent run for
    the DAG run, one child run per configuration."""
    import mlflow
    import pandas as pd

    suite = load_suite(suite_path)
    run_id = context["run_id"]
    scored = [{**s, "metrics": load_metrics(s["metrics"])} for s in scored]
    mlflow.set_tracking_uri(settings.tracking_uri())
    exp = mlflow.get_experiment_by_name(suite.experiment_name)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(
        suite.experiment_name, artifact_location=settings.artifact_root(), tags={"llmops.suite": suite.name}
    )  # fmt: skip
    client = mlflow.MlflowClient()
    # A retried task must not leave a duplicate parent run behind.
    for old in client.search_runs([exp_id], f"tags.`llmops.airflow_run_id` = '{run_id}'"):
        client.delete_run(old.info.run_id)

    candidates = {s["config"]["config_id"]: s for s in scored if s["config"]["role"] == "candidate"}
    ranked = rank_configs({cid: s["metrics"] for cid, s in candidates.items()}, suite.gate)
    examples = examples_for(suite)
    ds_df = pd.DataFrame([e.to_json() for e in examples])
    ds = mlflow.data.from_pandas(
        ds_df, source=str(suite.dataset_path), name=suite.dataset.name or suite.dataset_path.stem,
        digest=dataset["digest"],
    )  # fmt: skip
    common_tags = {
        "llmops.suite": suite.name,
        "llmops.suite_digest": suite.digest,
        "llmops.dataset_digest": dataset["digest"],
        "llmops.scoring_digest": scoring_digest(suite),
        "llmops.airflow_run_id": run_id,
        "llmops.airflow_dag_id": context.get("dag_id", "llm_eval_promote"),
        "mlflow.source.git.commit": context.get("git_commit") or settings.git_commit(),
    }
    child_ids: dict[str, str] = {}
    rank_of = {r.config_id: r for r in ranked}
    all_rows: list[dict] = []
    halving_rec = halving_summary(run_id, scored)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"sweep {run_id}", tags=common_tags) as parent:
        mlflow.log_params({"suite_path": suite.source_path, "n_configs": len(candidates), "n_examples": len(examples),
                           "search.strategy": suite.search.strategy})  # fmt: skip
        if suite.judge:
            mlflow.log_params({"judge.name": suite.judge.name, "judge.max_tokens": suite.judge.max_tokens,
                               "judge.temperature": suite.judge.temperature,
                               "judge.max_examples": suite.judge.max_examples})  # fmt: skip
        mlflow.log_input(ds, context="evaluation")
        for s in scored:
            cfg = Config.from_json(s["config"])
            r = rank_of.get(cfg.config_id)
            tags = {
                **common_tags,
                "llmops.role": s["config"]["role"],
                "llmops.config_label": cfg.label,
                "llmops.eligible": str(r.eligible if r else "n/a"),
            }
            if r and r.reasons:
                tags["llmops.ineligible_reasons"] = "; ".join(r.reasons)
            name = ("champion baseline: " if s["config"]["role"] == "champion" else "") + cfg.label
            with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True, tags=tags) as child:
                mlflow.log_params(cfg.mlflow_params())
                mlflow.log_params({f"scorer.{n}.version": v for n, v in s["scorers"].items()})
                mlflow.log_dict(s["config"], "config.json")
                mlflow.log_input(ds, context="evaluation")
                metrics = {k: v for k, v in s["metrics"].items() if not math.isnan(v)}
                if r:
                    metrics["rank"] = r.rank
                mlflow.log_metrics(metrics)
                rows = [json.loads(x) for x in (run_dir(run_id) / f"scores-{cfg.config_id}.jsonl").read_text().splitlines()]
                all_rows += rows
                mlflow.log_table(pd.DataFrame(rows), "per_example.json")
                groups = run_dir(run_id) / f"bias-groups-{cfg.config_id}.json"
                if groups.exists():
                    mlflow.log_table(pd.DataFrame(json.loads(groups.read_text())), "bias_groups.json")
                if s.get("suspected_injections"):
                    mlflow.set_tag("llmops.suspected_injections", ",".join(s["suspected_injections"])[:5000])
                child_ids[cfg.config_id] = child.info.run_id
        # Agreement pooled over every configuration's examples: does the cheap
        # scorer rank answers as the judge does?
        mlflow.log_metrics({k: v for k, v in agreement(all_rows).items() if not math.isnan(v)})
        baseline = [s for s in scored if s["config"]["role"] == "champion"]
        board = leaderboard_rows(ranked, candidates, baseline)
        if halving_rec:
            board += eliminated_rows(halving_rec)
            mlflow.log_params({f"halving.{k}": halving_rec[k] for k in ("eta", "min_examples", "min_survivors")})
            mlflow.log_metrics({f"halving_{k}": halving_rec[k] for k in
                                ("tokens_spent", "tokens_full_grid_estimate", "token_share")})  # fmt: skip
            mlflow.log_dict(halving_rec, "halving.json")
        mlflow.log_table(pd.DataFrame(board), "leaderboard.json")
        best = ranked[0] if ranked and ranked[0].eligible else None
        if best:
            mlflow.log_metric("best_composite", best.metrics["composite"])
        parent_id = parent.info.run_id
    return dump_nan({
        "experiment_id": exp_id,
        "parent_run_id": parent_id,
        "child_run_ids": child_ids,
        "leaderboard": board,
        "winner": best.config_id if best else None,
        "winner_reasons": [] if best else [f"{r.config_id}: {'; '.join(r.reasons)}" for r in ranked],
        "results": {s["config"]["config_id"]: {"metrics": s["metrics"]} for s in scored},
        "halving": {k: halving_rec[k] for k in ("rounds", "tokens_spent", "tokens_full_grid_estimate", "token_share")}
        if halving_rec else None,
        "suspected_injections": {s["config"]["config_id"]: s["suspected_injections"] for s in scored
                                 if s.get("suspected_injections")},
        "configs": {s["config"]["config_id"]: s["config"] for s in scored},
    })


LEADERBOARD_METRICS = ("relevance", "groundedness", "correctness", "bias", "trulens_answer_relevance",
                       "trulens_context_relevance", "trulens_groundedness", "ragas_faithfulness",
                       "ragas_response_relevancy", "ragas_context_precision", "judge_error_rate",
                       "latency_ttft_p95_s", "latency_e2e_p50_s", "latency_e2e_p95_s", "failed_rate", "composite")


def leaderboard_rows(ranked, candidates: dict[str, dict], baseline: list[dict] = ()) -> list[dict]:
    """One row per candidate in rank order, then the champion's baseline
    row (rank None) when it was re-evaluated outside the grid. Columns: the
    metrics of LEADERBOARD_METRICS that some configuration has."""
    have = {k for s in [*candidates.values(), *baseline] for k in s["metrics"]}
    columns = [k for k in LEADERBOARD_METRICS if k in have or k in ("composite", "failed_rate")]

    def row(rank, cfg_json: dict, m: dict, eligible: bool, note: str) -> dict:
        cfg = Config.from_json(cfg_json)
        if cfg_json.get("is_champion"):
            note = "; ".join(x for x in ("current champion", note) if x)
        return {
            "rank": rank,
            "config_id": cfg.config_id,
            "model": cfg.model,
            "template": cfg.template_name,
            "sampling": cfg.sampling.short(),
            **{k: m.get(k, math.nan) for k in columns},
            "eligible": eligible,
            "note": note,
        }  # fmt: skip

    rows = [row(r.rank, candidates[r.config_id]["config"], r.metrics, r.eligible, "; ".join(r.reasons)) for r in ranked]
    rows += [row(None, b["config"], b["metrics"], True, "baseline, not a candidate") for b in baseline]
    return rows


def eliminated_rows(rec: dict) -> list[dict]:
    """Leaderboard rows (no rank) for configurations successive halving dropped."""
    rounds = {r["index"]: r for r in rec["rounds"]}
    out = []
    for cid, idx in sorted(rec["eliminated"].items(), key=lambda kv: (-kv[1], kv[0])):
        r = rounds[idx]
        comp = r["composite"].get(cid)
        out.append({"rank": None, "config_id": cid, **rec["labels"][cid], "composite": math.nan, "eligible": False,
                    "dropped": True,
                    "note": f"dropped by successive halving in round {idx}: composite "
                            f"{'n/a' if comp is None else f'{comp:.4f}'} on {r['examples']} examples"})  # fmt: skip
    return out


# ------------------------------------------------------ registry + the gate


def register_and_decide(suite_path: str, sweep: dict, dataset: dict, context: dict) -> dict:
    """Register the sweep's winner (alias `challenger`), compare it with the
    champion on the same dataset, and move `champion` if the gate passes.
    Idempotent per Airflow run: a retry never registers or decides twice."""

    suite = load_suite(suite_path)
    uri = settings.tracking_uri()
    name = suite.registered_model
    results = {cid: load_metrics(r["metrics"]) for cid, r in sweep["results"].items()}
    done = registry.find_version_for_run(name, context["run_id"], uri)
    if done is not None:  # a retry of this task: finish what the first try decided
        return dump_nan(_resume_registration(name, done, sweep, uri))
    # Read together at decision time: the promotion is a compare-and-set on both.
    ledger = Ledger(settings.artifact_store_uri(), name)
    head = ledger.head()
    champ = registry.current_champion(name, uri)
    champ_version = champ.version if champ else None
    report = {"registered_model": name, "version": None, "aliases_before": registry.aliases(name, uri),
              "comparison": []}  # fmt: skip

    winner = sweep["winner"]
    if winner is None:
        decision = registry.Decision(registry.REJECT, ["no eligible candidate"] + sweep["winner_reasons"])
    else:
        wm = results[winner]
        if champ is not None and champ.config_id == winner:
            reasons = [f"the best candidate is the current champion v{champ.version}"]
            runner_up = next((r["config_id"] for r in sweep["leaderboard"]
                              if r["rank"] is not None and r["eligible"] and r["config_id"] != winner), None)  # fmt: skip
            if runner_up is not None:  # for the report: how far behind is the best alternative?
                comparisons = paired_comparisons(suite, context["run_id"], sweep, runner_up, champ.config_id)
                report["comparison"] = [c.to_json() for c in comparisons]
                c = next(c for c in comparisons if c.metric == "composite")
                reasons.append(f"best alternative {runner_up}: composite {c.diff:+.4f} vs champion, "
                               f"{suite.gate.confidence:.0%} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}]")  # fmt: skip
            decision = registry.Decision(
                registry.KEEP, reasons, challenger_composite=wm["composite"], champion_composite=wm["composite"],
                champion_version=champ.version,
            )  # fmt: skip
        else:
            if champ is not None and champ.config_id in results:
                comparisons = paired_comparisons(suite, context["run_id"], sweep, winner, champ.config_id)
                report["comparison"] = [c.to_json() for c in comparisons]
                composite = next(c for c in comparisons if c.metric == "composite")
            else:
                composite = None  # champion could not be re-evaluated here: INCONCLUSIVE
            decision = registry.decide(wm, composite, suite.gate, champion_version=champ_version)

    if winner is not None and decision.outcome != registry.KEEP:
        cfg = sweep["configs"][winner]
        wm = results[winner]
        serving_config = {k: v for k, v in cfg.items() if k not in ("role", "source")}
        serving_config["model_source"] = cfg["source"]
        tags = {
            "llmops.config_id": winner,
            "llmops.composite": f"{wm['composite']:.6f}",
            "llmops.dataset_digest": dataset["digest"],
            "llmops.scoring_digest": scoring_digest(suite),
            "llmops.suite": suite.name,
            "llmops.suite_digest": suite.digest,
            "llmops.airflow_run_id": context["run_id"],
            "llmops.parent_run_id": sweep["parent_run_id"],
            "llmops.git_commit": context.get("git_commit") or settings.git_commit(),
            "llmops.decision": decision.outcome,
            "llmops.decision_reasons": " | ".join(decision.reasons),
            "llmops.compared_with": f"v{champ_version}" if champ_version else "none",
            "llmops.champion_before": champ_version or "",
        }
        version = registry.register_version(
            name, sweep["child_run_ids"][winner], serving_config, tags=tags, tracking_uri=uri,
            description=f"{Config.from_json(cfg).label}; composite {wm['composite']:.4f}",
        )  # fmt: skip
        report["version"] = version
        if decision.outcome == registry.PROMOTE:
            try:
                registry.promote(
                    name, version, champ_version, uri, ledger=ledger, expected_head=head,
                    reasons=decision.reasons, dag_run_id=context["run_id"], git_commit=tags["llmops.git_commit"],
                    evidence={"parent_run_id": sweep["parent_run_id"], "config_id": winner,
                              "dataset_digest": dataset["digest"], "comparison": report["comparison"]},
                )  # fmt: skip
            except RegistryError as e:
                registry.tag_version(name, version, {"llmops.decision": "ABORTED", "llmops.decision_reasons": str(e)}, uri)
                raise
            log.info("PROMOTE: champion -> v%s (was %s)", version, f"v{champ_version}" if champ_version else "none")
        else:
            log.info("%s: champion stays %s", decision.outcome, f"v{champ_version}" if champ_version else "unset")
    report["decision"] = decision.to_json()
    report["aliases"] = registry.aliases(name, uri)
    _tag_parent(sweep["parent_run_id"], decision.outcome, decision.reasons, report["version"], uri)
    if report["comparison"]:
        _log_promotion_report(suite, sweep["parent_run_id"], report, context["run_id"], uri)
    return dump_nan(report)


def _scores(run_id: str, config_id: str) -> list[dict]:
    path = run_dir(run_id) / f"scores-{config_id}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def _values(rows: list[dict], metric: str) -> dict[str, float]:
    """Per-example values keyed by example id. For the composite an example
    that failed or could not be scored counts 0, exactly as it does in the
    configuration's coverage-weighted composite, so the mean of these values
    *is* that composite; other metrics pair only examples scored on both sides."""
    out = {}
    for r in rows:
        v = r.get(metric)
        v = math.nan if v is None else float(v)
        if metric == "composite" and math.isnan(v):
            v = 0.0
        out[r["example_id"]] = v
    return out


def paired_comparisons(suite: Suite, run_id: str, sweep: dict, winner: str, champion: str):
    """Winner vs champion on every weighted metric and the composite, plus
    Holm's adjustment of the composite p-value over all eligible candidates
    (each was, in effect, tested against the champion)."""
    from evaluation.scorers import scorer_for_metric
    from evaluation.stats import holm, paired_compare

    g = suite.gate
    kw = dict(resamples=g.bootstrap_resamples, confidence=g.confidence, seed=g.seed)
    champ_rows, winner_rows = _scores(run_id, champion), _scores(run_id, winner)
    out = []
    per_example_metrics = [m for m in suite.scoring.weights if scorer_for_metric(m).level == "example"]
    for metric in [*per_example_metrics, "composite"]:
        hib = True if metric == "composite" else scorer_for_metric(metric).higher_is_better
        out.append(paired_compare(_values(winner_rows, metric), _values(champ_rows, metric),
                                  metric=metric, higher_is_better=hib, **kw))  # fmt: skip
    eligible = [row["config_id"] for row in sweep["leaderboard"] if row["rank"] is not None and row["eligible"]]
    champ_comp = _values(champ_rows, "composite")
    p = {cid: paired_compare(_values(_scores(run_id, cid), "composite"), champ_comp, metric="composite", **kw).p_value
         for cid in eligible}  # fmt: skip
    adjusted = holm(p)
    for c in out:
        c.p_adjusted = adjusted.get(winner) if c.metric == "composite" else None
    return out


def _log_promotion_report(suite: Suite, parent_run_id: str, report: dict, run_id: str, uri: str) -> None:
    import mlflow
    import pandas as pd

    from evaluation.plots import forest_plot

    who = f"v{report['version']}" if report["version"] else "best alternative"
    png = forest_plot(
        report["comparison"], run_dir(run_id) / "promotion_report.png",
        title=f"{who} vs champion v{report['decision']['champion_version']}: {report['decision']['outcome']}",
        margin=suite.gate.min_improvement,
    )  # fmt: skip
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.log_table(parent_run_id, pd.DataFrame(report["comparison"]), "promotion_report.json")
    client.log_artifact(parent_run_id, str(png))


def _resume_registration(name: str, version: str, sweep: dict, uri: str) -> dict:
    """This DAG run already registered `version`; complete a PROMOTE that was
    cut short (compare-and-set against the champion recorded before), and
    report the decision recorded on the version."""
    tags = registry.version_tags(name, version, uri)
    outcome = tags.get("llmops.decision", registry.REJECT)
    before = tags.get("llmops.champion_before") or None
    current = registry.aliases(name, uri).get(registry.CHAMPION)
    if outcome == registry.PROMOTE and current != version:
        ledger = Ledger(settings.artifact_store_uri(), name)
        last = ledger.last()
        if last is not None and last.version == version and last.dag_run_id == tags.get("llmops.airflow_run_id"):
            registry.finish_promotion(name, last, uri)  # the entry was written, the alias move was not
        else:
            registry.promote(name, version, before, uri, ledger=ledger, expected_head=ledger.head(),
                             reasons=[r for r in tags.get("llmops.decision_reasons", "").split(" | ") if r],
                             dag_run_id=tags.get("llmops.airflow_run_id"))  # fmt: skip
        log.info("resumed: champion -> v%s", version)
    reasons = [r for r in tags.get("llmops.decision_reasons", "").split(" | ") if r]
    decision = registry.Decision(outcome, reasons, champion_version=before,
                                 challenger_composite=float(tags.get("llmops.composite", "nan")))  # fmt: skip
    _tag_parent(sweep["parent_run_id"], outcome, reasons, version, uri)
    aliases_before = {registry.CHAMPION: before} if before else {}
    return {"registered_model": name, "version": version, "aliases_before": aliases_before,
            "decision": decision.to_json(), "aliases": registry.aliases(name, uri), "comparison": []}  # fmt: skip


def _tag_parent(parent_run_id: str, outcome: str, reasons: list[str], version: str | None, uri: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.set_tag(parent_run_id, "llmops.decision", outcome)
    client.set_tag(parent_run_id, "llmops.decision_reasons", " | ".join(reasons))
    if version:
        client.set_tag(parent_run_id, "llmops.registered_version", version)


def rollback_champion(registered_model: str, *, reason: str, dag_run_id: str | None = None) -> dict:
    """Move `champion` back to the ledger's previous version (compare-and-set,
    recorded in the ledger)."""
    uri = settings.tracking_uri()
    ledger = Ledger(settings.artifact_store_uri(), registered_model)
    entry = registry.rollback(registered_model, uri, ledger=ledger, reason=reason, dag_run_id=dag_run_id,
                              git_commit=settings.git_commit())  # fmt: skip
    log.info("ROLLBACK: %s champion v%s -> v%s (ledger entry %d)", registered_model, entry.previous_version,
             entry.version, entry.seq)  # fmt: skip
    return {"entry": entry.seq, "from": entry.previous_version, "to": entry.version,
            "aliases": registry.aliases(registered_model, uri)}  # fmt: skip


def final_report(suite_path: str, dataset: dict, sweep: dict, decision: dict, context: dict) -> dict:
    suite = load_suite(suite_path)
    report = {
        "suite": suite.name,
        "suite_path": suite.source_path,
        "airflow_run_id": context["run_id"],
        "dataset": dataset,
        "tracking_uri": settings.tracking_uri(),
        "experiment": suite.experiment_name,
        "experiment_id": sweep["experiment_id"],
        "parent_run_id": sweep["parent_run_id"],
        "leaderboard": sweep["leaderboard"],
        **decision,
    }
    path = run_dir(context["run_id"]) / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    (settings.home() / "last_report.json").write_text(json.dumps(report, indent=2, default=str))
    report["report_path"] = str(path)
    return report
