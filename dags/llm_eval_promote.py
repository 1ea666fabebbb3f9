"""
### llm_eval_promote

Evaluates every candidate LLM configuration of a suite (model x sampling
parameters x prompt template) on a vLLM engine, scores the answers, registers
the best configuration in the MLflow Model Registry (alias `challenger`) and
moves `champion` to it only when it beats the current champion on the same
examples: the lower bound of the paired confidence interval of the improvement
must clear the suite's margin (see README "Gate").

`choose_action -> validate_suite (freezes the run's inputs) -> validate_dataset -> plan_configs ->
start_engines -> select_configs (successive halving, when the suite asks for it) ->
generate[model] (the throughput sweep) -> measure_latency (the latency probe at serving load, one
engine at a time) -> score[config] (embedding, correctness, bias and judge scorers) -> log_to_mlflow -> register_and_promote ->
report -> announce_champion` (asset event on PROMOTE), with `stop_engines`
as teardown. Every move of `champion` emits an event on the asset
`llmops://registry/champion` with extra `{registered_model, version, action}`:
`promote` from announce_champion, `rollback` from rollback_champion.

Params: `suite` (a suite YAML under the bundled suites/ or a directory of
LLMOPS_SUITES_PATH; anything else is refused), `keep_engines` (leave the vLLM servers
this run started running), `rollback` (instead of evaluating, move `champion`
one step back through the promotion ledger, never toggling; `rollback_reason`
is recorded). Bad suites and datasets fail at once (no retries);
engine and network faults are retried with backoff and resume from the cache.
Task bodies live in `evaluation.stages` (one module per task family) and
`serving.endpoints` / `serving.ownership`.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from evaluation.settings import BUNDLED_SUITE
from evaluation.suite import read_schedule

SUITE = os.environ.get("LLMOPS_SUITE", str(BUNDLED_SUITE))
CHAMPION_CHANGED = Asset("llmops://registry/champion")


def permanent_errors_fail_fast(fn):
    """Config and data errors fail the task without retries."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from airflow.exceptions import AirflowFailException

        from evaluation.errors import PermanentError

        try:
            return fn(*args, **kwargs)
        except PermanentError as e:
            raise AirflowFailException(str(e)) from e

    return wrapper


def _ctx(frozen: bool = True) -> tuple[str, dict]:
    """(the run's suite file, and the run's ids). The `suite` param is
    resolved under the suite roots (outside them: a SuiteError, no retries);
    once validate_suite has frozen the run's inputs, every task reads the
    frozen snapshot instead."""
    from evaluation.settings import resolve_suite
    from evaluation.stages.validate import task_suite_path

    ctx = get_current_context()
    submitted = resolve_suite(ctx["params"]["suite"])
    path = task_suite_path(ctx["run_id"], submitted, require=frozen)
    return path, {"run_id": ctx["run_id"], "dag_id": ctx["dag"].dag_id}


@dag(
    dag_id="llm_eval_promote",
    schedule=read_schedule(SUITE),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["llmops"],
    params={
        "suite": Param(SUITE, type="string", description="Suite YAML under the bundled suites/ or a directory of "
                       "LLMOPS_SUITES_PATH: an absolute path or a path relative to one of them (default.yaml)"),
        "keep_engines": Param(False, type="boolean", description="Leave vLLM servers started by this run running"),
        "rollback": Param(False, type="boolean", description="Only move champion one step back through the ledger"),
        "rollback_reason": Param("rollback requested through the DAG", type="string"),
    },
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=5),
    },
)
def llm_eval_promote():
    @task.branch
    def choose_action() -> str:
        return "rollback_champion" if get_current_context()["params"].get("rollback") else "validate_suite"

    @task(outlets=[CHAMPION_CHANGED])
    @permanent_errors_fail_fast
    def rollback_champion() -> dict:
        """One step back through the ledger (a retry finishes this run's own
        rollback); emits the same asset event as a promotion."""
        from evaluation.stages import promote as promote_stage
        from evaluation.suite import load_suite

        ctx = get_current_context()
        name = load_suite(_ctx(frozen=False)[0]).registered_model
        res = promote_stage.rollback_champion(name, reason=ctx["params"]["rollback_reason"], dag_run_id=ctx["run_id"])
        ctx["outlet_events"][CHAMPION_CHANGED].extra = {"registered_model": name, "version": res["to"],
                                                        "action": "rollback"}  # fmt: skip
        return res

    @task(retries=0)
    @permanent_errors_fail_fast
    def validate_suite() -> dict:
        from evaluation.stages import validate as validate_stage

        suite_path, context = _ctx(frozen=False)
        return validate_stage.check_suite(suite_path, context["run_id"])

    @task(retries=0)
    @permanent_errors_fail_fast
    def validate_dataset(_suite: dict) -> dict:
        from evaluation.stages import validate as validate_stage

        return validate_stage.check_dataset(_ctx()[0])

    @task
    @permanent_errors_fail_fast
    def plan_configs(_dataset: dict) -> list[dict]:
        from evaluation.stages import plan as plan_stage

        suite_path, context = _ctx()
        configs = plan_stage.plan(suite_path, context["run_id"])
        return plan_stage.annotate_missing(suite_path, configs, plan_stage.identities(configs), context["run_id"])

    @task
    def group_by_model(configs: list[dict]) -> list[dict]:
        from evaluation.stages import plan as plan_stage

        return plan_stage.batches_by_model(configs)

    @task(execution_timeout=timedelta(minutes=30))
    @permanent_errors_fail_fast
    def start_engines(configs: list[dict]) -> dict:
        from evaluation.stages import plan as plan_stage
        from evaluation.suite import load_suite
        from serving.endpoints import endpoints_for

        suite_path, context = _ctx()
        needed = plan_stage.engines_needed(suite_path, configs)  # fully cached models need no engine
        timeout = load_suite(suite_path).generation.ready_timeout_s  # spans this task's retries
        # Launches are recorded for the teardown; if this fails it stops what it launched.
        return endpoints_for(plan_stage.models_of(configs), needed, ready_timeout_s=timeout, run_id=context["run_id"])

    @task(retries=3, execution_timeout=timedelta(hours=2))
    @permanent_errors_fail_fast
    def select_configs(configs: list[dict], endpoints: dict) -> list[dict]:
        """Grid: every configuration. Successive halving: the survivors of
        rounds on growing subsets (the rest are reported as dropped)."""
        from evaluation.stages import select as select_stage

        suite_path, context = _ctx()
        return select_stage.select_configs(suite_path, configs, endpoints, context["run_id"])

    @task(retries=3, execution_timeout=timedelta(hours=2), map_index_template="{{ batch['model'] }}")
    @permanent_errors_fail_fast
    def generate(batch: dict, endpoints: dict) -> list[dict]:
        """All of one model's configurations as one interleaved request
        stream (the throughput sweep)."""
        from evaluation.stages import generate as generate_stage
        from evaluation.stages import plan as plan_stage
        from serving import ownership

        suite_path, context = _ctx()
        model, ep = batch["model"], endpoints[batch["model"]]
        if any(c["missing"] or c.get("probe") for c in batch["configs"]):
            # Restarts a managed engine that died since start_engines (e.g. on
            # a retry), or starts one start_engines did not need.
            spec = plan_stage.models_of(batch["configs"])[model]
            ep = ownership.live_endpoint(suite_path, model, spec, ep, context["run_id"])
        return generate_stage.generate_model(suite_path, batch["configs"], ep, context["run_id"])

    @task(retries=2, execution_timeout=timedelta(hours=1))
    @permanent_errors_fail_fast
    def measure_latency(batches: list[dict], endpoints: dict) -> dict:
        """The latency probe at the serving load, after every sweep, one
        engine at a time (evaluation.stages.latency)."""
        from evaluation.stages import latency as latency_stage

        suite_path, context = _ctx()
        return latency_stage.probe_all(suite_path, batches, endpoints, context["run_id"])

    @task(map_index_template="{{ config['config_id'] }}", execution_timeout=timedelta(hours=2))
    @permanent_errors_fail_fast
    def score(config: dict) -> dict:
        """Scorers, including judge scorers (the judge engine is started on
        first need) and bias from the probe generations."""
        from evaluation.stages import score as score_stage

        suite_path, context = _ctx()
        return score_stage.score_config(suite_path, config, context["run_id"])

    @task
    @permanent_errors_fail_fast
    def log_to_mlflow(scored: list[dict], dataset: dict) -> dict:
        from evaluation.stages import track as track_stage

        suite_path, context = _ctx()
        return track_stage.log_sweep(suite_path, list(scored), dataset, context)

    @task(retries=1)
    @permanent_errors_fail_fast
    def register_and_promote(sweep: dict, dataset: dict) -> dict:
        from evaluation.stages import promote as promote_stage

        suite_path, context = _ctx()
        return promote_stage.register_and_decide(suite_path, sweep, dataset, context)

    @task
    def report(dataset: dict, sweep: dict, decision: dict) -> dict:
        from evaluation.report import format_report
        from evaluation.stages import promote as promote_stage

        suite_path, context = _ctx()
        rep = promote_stage.final_report(suite_path, dataset, sweep, decision, context)
        print(format_report(rep), flush=True)
        return {"outcome": rep["decision"]["outcome"], "registered_model": rep["registered_model"],
                "version": rep["version"], "report_path": rep["report_path"]}  # fmt: skip

    @task(outlets=[CHAMPION_CHANGED])
    def announce_champion(rep: dict) -> None:
        """Emits the asset event that triggers redeployment, only on PROMOTE."""
        from airflow.exceptions import AirflowSkipException

        if rep["outcome"] != "PROMOTE":
            raise AirflowSkipException(f"champion unchanged ({rep['outcome']}): no asset event")
        get_current_context()["outlet_events"][CHAMPION_CHANGED].extra = {
            "registered_model": rep["registered_model"], "version": rep["version"], "action": "promote",
        }  # fmt: skip

    @task
    def stop_engines(_endpoints: dict) -> list[str]:
        from serving import ownership

        ctx = get_current_context()
        if ctx["params"].get("keep_engines"):
            return []
        # Every engine a task of this run launched (start_engines, any of its
        # tries; the judge's; one that halving or a restart needed), by the
        # launch records: a process that is no longer that engine is left alone.
        return [r.note for r in ownership.stop_launched(ctx["run_id"])]

    action = choose_action()
    suite = validate_suite()
    action >> [suite, rollback_champion()]
    dataset = validate_dataset(suite)
    configs = plan_configs(dataset)
    endpoints = start_engines(configs)
    selected = select_configs(configs, endpoints)
    batches = group_by_model(selected)
    generated = generate.partial(endpoints=endpoints).expand(batch=batches)
    latency = measure_latency(batches, endpoints)
    scored = score.expand(config=selected)
    generated >> latency >> scored
    sweep = log_to_mlflow(scored, dataset)
    decision = register_and_promote(sweep, dataset)
    rep = report(dataset, sweep, decision)
    announce_champion(rep)
    rep >> stop_engines(endpoints).as_teardown(setups=endpoints)


llm_eval_promote()
