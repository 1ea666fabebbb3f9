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
from evaluation.errors import RegistryError
from evaluation.dataset import Example, dataset_digest, load_examples
from evaluation.generation import RequestResult, generate_jobs
from evaluation.jsonsafe import dump_nan, load_metrics
from evaluation.ledger import Ledger
from evaluation.ranking import config_summary, example_composite, rank_configs
from evaluation.scorers import ScoringContext, ScoringItem, get_scorer
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
    key = cache_key(kind="validation", dataset=dataset_digest(examples_for(suite)), bounds=bounds, version=1)
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
    examples = examples_for(load_suite(suite_path))
    for c in configs:
        hits, _ = cached_generations(Config.from_json(c), examples, identities[c["model"]])
        c["missing"] = len(examples) - len(hits)
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


def generate_model(suite_path: str, configs_json: list[dict], endpoint: dict, run_id: str) -> list[dict]:
    """Generate every missing answer of one model's configurations as a single
    interleaved request stream, reusing cached results. Successful results are
    cached as they arrive, so a retry after a crash only sends what is
    missing. Failed requests are not cached. Writes one generations file per
    configuration and returns one summary per configuration."""
    suite = load_suite(suite_path)
    configs = [Config.from_json(c) for c in configs_json]
    examples = examples_for(suite)
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
    seconds = round(time.monotonic() - t0, 2)
    timing = {"model": configs[0].model, "requests": len(jobs), "seconds": seconds,
              "completion_tokens": sum(r.completion_tokens or 0 for r in fresh)}  # fmt: skip
    (run_dir(run_id) / f"timing-{configs[0].model}.json").write_text(json.dumps(timing))
    summaries = []
    for cfg in configs:
        rows = done[cfg.config_id]
        out = run_dir(run_id) / f"generations-{cfg.config_id}.jsonl"
        out.write_text("".join(json.dumps(rows[ex.id]) + "\n" for ex in examples))
        mine = [r for (c, _), r in zip(jobs, fresh) if c.config_id == cfg.config_id]
        summary = {
            "config_id": cfg.config_id,
            "examples": len(examples),
            "cached": len(examples) - len(mine),
            "generated": len(mine),
            "failed": sum(1 for ex in examples if not rows[ex.id]["success"]),
            "completion_tokens": sum(r.completion_tokens or 0 for r in mine),
            "seconds": seconds,
            "path": str(out),
        }
        log.info("[%s] generation done: %s", cfg.config_id, summary)
        summaries.append(summary)
    return summaries


def generate_config(suite_path: str, config_json: dict, endpoint: dict, run_id: str) -> dict:
    """One configuration (see generate_model)."""
    return generate_model(suite_path, [config_json], endpoint, run_id)[0]


# ------------------------------------------------------------------- scoring


def score_config(suite_path: str, config_json: dict, run_id: str) -> dict:
    """Score one configuration's generations with the suite's scorers.
    Writes per-example rows next to the generations; returns run-level
    metrics (small, for XCom)."""
    suite = load_suite(suite_path)
    config = Config.from_json(config_json)
    examples = examples_for(suite)
    gen_path = run_dir(run_id) / f"generations-{config.config_id}.jsonl"
    gens = {g["example_id"]: g for g in map(json.loads, gen_path.read_text().splitlines())}
    ok = [ScoringItem(ex, RequestResult(**{k: v for k, v in gens[ex.id].items() if k not in ("cached", "cache_key")}))
          for ex in examples if gens[ex.id]["success"]]  # fmt: skip
    ctx = ScoringContext(config=config, latency_budget_s=suite.scoring.latency_budget_s)
    per_example: dict[str, dict] = {ex.id: {} for ex in examples}
    metrics: dict[str, float] = {}
    scorer_info = {}
    cache = ResultCache(settings.cache_uri())
    for name in suite.scoring.scorers:
        scorer = get_scorer(name)
        scorer_info[name] = scorer.version
        t0 = time.monotonic()
        skey = {item.example.id: cache_key(kind="score", scorer=name, version=scorer.version,
                                           params=scorer.cache_params(ctx),
                                           generation=gens[item.example.id].get("cache_key"))
                for item in ok}  # fmt: skip
        values = {i: cache.get(SCORES, skey[i]) for i in skey if gens[i].get("cache_key")}
        todo = [item for item in ok if values.get(item.example.id) is None]
        for item, vals in zip(todo, scorer.score(todo, ctx) if todo else []):
            values[item.example.id] = vals
            if gens[item.example.id].get("cache_key"):
                cache.put(SCORES, skey[item.example.id], vals)
        ordered = [values[item.example.id] for item in ok]
        for item, vals in zip(ok, ordered):
            per_example[item.example.id].update(vals)
        metrics.update(scorer.aggregate(ordered))
        log.info("[%s] scorer %s v%s: %d cached, %d scored, %.1f s", config.config_id, name, scorer.version,
                 len(ok) - len(todo), len(todo), time.monotonic() - t0)  # fmt: skip
    rows = []
    for ex in examples:
        g = gens[ex.id]
        m = per_example[ex.id]
        comp = example_composite(m, suite.scoring.weights) if g["success"] else math.nan
        rows.append(
            {
                "example_id": ex.id,
                "question": ex.question,
                "answer": g["text"],
                "success": g["success"],
                "error": g["error"],
                "cached": g.get("cached", False),
                **{k: m.get(k, math.nan) for k in sorted(m)},
                "composite": comp,
            }
        )
    metrics.update(config_summary(rows, len(examples)))
    (run_dir(run_id) / f"scores-{config.config_id}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    log.info("[%s] composite %.4f (coverage %.2f)", config.config_id, metrics["composite"], metrics["coverage"])
    return dump_nan({"config": config_json, "metrics": metrics, "scorers": scorer_info})


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
    with mlflow.start_run(experiment_id=exp_id, run_name=f"sweep {run_id}", tags=common_tags) as parent:
        mlflow.log_params({"suite_path": suite.source_path, "n_configs": len(candidates), "n_examples": len(examples)})
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
                mlflow.log_table(pd.DataFrame(rows), "per_example.json")
                child_ids[cfg.config_id] = child.info.run_id
        baseline = [s for s in scored if s["config"]["role"] == "champion"]
        board = leaderboard_rows(ranked, candidates, baseline)
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
        "configs": {s["config"]["config_id"]: s["config"] for s in scored},
    })


def leaderboard_rows(ranked, candidates: dict[str, dict], baseline: list[dict] = ()) -> list[dict]:
    """One row per candidate in rank order, then the champion's baseline
    row (rank None) when it was re-evaluated outside the grid."""

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
            **{k: m.get(k, math.nan) for k in ("relevance", "groundedness", "latency_ttft_p95_s",
                                               "latency_e2e_p50_s", "latency_e2e_p95_s", "failed_rate", "composite")},
            "eligible": eligible,
            "note": note,
        }  # fmt: skip

    rows = [row(r.rank, candidates[r.config_id]["config"], r.metrics, r.eligible, "; ".join(r.reasons)) for r in ranked]
    rows += [row(None, b["config"], b["metrics"], True, "baseline, not a candidate") for b in baseline]
    return rows


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
    for metric in [*suite.scoring.weights, "composite"]:
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
