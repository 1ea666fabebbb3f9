"""Stage `track`: rank the candidates and log the sweep to MLflow (one
parent run, one child run per configuration; task log_to_mlflow)."""

from __future__ import annotations

import logging
import math

from evaluation import settings
from evaluation.candidates import Config
from evaluation.jsonsafe import dump_nan, load_metrics
from evaluation.ranking import rank_configs
from evaluation.runstore import RunStore
from evaluation.stages.inputs import examples_for, scoring_digest
from evaluation.stages.score import agreement
from evaluation.stages.select import eliminated_rows, halving_summary
from evaluation.suite import load_suite

log = logging.getLogger(__name__)


def log_sweep(suite_path: str, scored: list[dict], dataset: dict, context: dict) -> dict:
    """Rank the candidates and log the sweep to MLflow: one parent run for
    the DAG run, one child run per configuration."""
    import mlflow
    import pandas as pd

    suite = load_suite(suite_path)
    run_id = context["run_id"]
    store = RunStore(run_id)
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
                rows = store.scores(cfg.config_id)
                all_rows += rows
                mlflow.log_table(pd.DataFrame(rows), "per_example.json")
                groups = store.read_json(store.groups_name("bias", cfg.config_id))
                if groups is not None:
                    mlflow.log_table(pd.DataFrame(groups), "bias_groups.json")
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
