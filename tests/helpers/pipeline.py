"""The llm_eval_promote DAG's task bodies called in order, in-process, the
way the DAG wires them (no Airflow): for tests that follow a suite from
validation to the report against fake OpenAI-compatible servers."""

from __future__ import annotations

from evaluation.stages import generate as generate_stage
from evaluation.stages import latency as latency_stage
from evaluation.stages import plan as plan_stage
from evaluation.stages import promote as promote_stage
from evaluation.stages import score as score_stage
from evaluation.stages import track as track_stage
from evaluation.stages import validate as validate_stage


def run_stages(suite_path: str, run_id: str) -> dict:
    """validate -> plan -> endpoints -> generate[model] -> score[config] ->
    MLflow -> register/gate -> report. Returns every stage's output."""
    from serving.endpoints import endpoints_for

    out: dict = {"suite": validate_stage.check_suite(suite_path, run_id)}
    suite_path = validate_stage.task_suite_path(run_id, suite_path)  # later stages read the frozen inputs
    out["dataset"] = validate_stage.check_dataset(suite_path)
    configs = plan_stage.plan(suite_path, run_id)
    configs = plan_stage.annotate_missing(suite_path, configs, plan_stage.identities(configs), run_id)
    out["configs"] = configs
    needed = plan_stage.engines_needed(suite_path, configs)
    endpoints = endpoints_for(plan_stage.models_of(configs), needed, ready_timeout_s=20, run_id=run_id)
    out["endpoints"] = endpoints
    batches = plan_stage.batches_by_model(configs)
    out["generated"] = [generate_stage.generate_model(suite_path, b["configs"], endpoints[b["model"]], run_id)
                        for b in batches]  # fmt: skip
    out["latency"] = latency_stage.probe_all(suite_path, batches, endpoints, run_id)
    out["scored"] = [score_stage.score_config(suite_path, c, run_id) for c in configs]
    context = {"run_id": run_id, "dag_id": "llm_eval_promote"}
    out["sweep"] = track_stage.log_sweep(suite_path, out["scored"], out["dataset"], context)
    out["decision"] = promote_stage.register_and_decide(suite_path, out["sweep"], out["dataset"], context)
    out["report"] = promote_stage.final_report(suite_path, out["dataset"], out["sweep"], out["decision"], context)
    return out
