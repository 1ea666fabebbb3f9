"""Stage `promote`: register the winner, apply the gate, move aliases
through the ledger; rollback; the final report (tasks register_and_promote,
rollback_champion, report)."""

from __future__ import annotations

import json
import logging

from evaluation import registry, settings
from evaluation.candidates import Config
from evaluation.compare import paired_comparisons
from evaluation.errors import RegistryError
from evaluation.jsonsafe import dump_nan, load_metrics
from evaluation.ledger import Ledger
from evaluation.runstore import RunStore
from evaluation.stages.inputs import scoring_digest
from evaluation.suite import Suite, load_suite

log = logging.getLogger(__name__)


# Fields of a planned configuration that describe this run, not what to serve.
RUN_ONLY_FIELDS = ("role", "source", "missing", "missing_dataset", "is_champion", "engine_key")


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
    # The id under which this run evaluated the champion (plan stage): its
    # registered id, or the id of its recorded model's configuration.
    baseline = RunStore(context["run_id"]).read_json(RunStore.BASELINE) or {}
    champ_cid = baseline.get("champion_config_id") or (champ.config_id if champ else None)
    report = {"registered_model": name, "version": None, "aliases_before": registry.aliases(name, uri),
              "comparison": []}  # fmt: skip

    winner = sweep["winner"]
    if winner is None:
        decision = registry.Decision(registry.REJECT, ["no eligible candidate"] + sweep["winner_reasons"])
    else:
        wm = results[winner]
        if champ is not None and champ_cid == winner:
            reasons = [f"the best candidate is the current champion v{champ.version}"]
            runner_up = next((r["config_id"] for r in sweep["leaderboard"]
                              if r["rank"] is not None and r["eligible"] and r["config_id"] != winner), None)  # fmt: skip
            if runner_up is not None:  # for the report: how far behind is the best alternative?
                comparisons = paired_comparisons(suite, context["run_id"], sweep, runner_up, champ_cid)
                report["comparison"] = [c.to_json() for c in comparisons]
                c = next(c for c in comparisons if c.metric == "composite")
                reasons.append(f"best alternative {runner_up}: composite {c.diff:+.4f} vs champion, "
                               f"{suite.gate.confidence:.0%} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}]")  # fmt: skip
            decision = registry.Decision(
                registry.KEEP, reasons, challenger_composite=wm["composite"], champion_composite=wm["composite"],
                champion_version=champ.version,
            )  # fmt: skip
        else:
            if champ is not None and champ_cid in results:
                comparisons = paired_comparisons(suite, context["run_id"], sweep, winner, champ_cid)
                report["comparison"] = [c.to_json() for c in comparisons]
                composite = next(c for c in comparisons if c.metric == "composite")
            else:
                composite = None  # champion could not be re-evaluated here: INCONCLUSIVE
            decision = registry.decide(wm, composite, suite.gate, champion_version=champ_version)
            problem = baseline.get("problem")
            if composite is None and problem and decision.outcome == registry.INCONCLUSIVE:
                decision.reasons.append(f"champion v{champ_version} could not be re-evaluated: {problem}")

    if winner is not None and decision.outcome != registry.KEEP:
        cfg = sweep["configs"][winner]
        wm = results[winner]
        serving_config = {k: v for k, v in cfg.items() if k not in RUN_ONLY_FIELDS}
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


def _log_promotion_report(suite: Suite, parent_run_id: str, report: dict, run_id: str, uri: str) -> None:
    import mlflow
    import pandas as pd

    from evaluation.plots import forest_plot

    who = f"v{report['version']}" if report["version"] else "best alternative"
    png = forest_plot(
        report["comparison"], RunStore(run_id).path(RunStore.PROMOTION_PLOT),
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
    """Move `champion` one step back through the ledger's history
    (compare-and-set, recorded in the ledger; see registry.rollback). A retry
    with the same `dag_run_id` finishes that rollback instead of doing another."""
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
        "suspected_injections": sweep.get("suspected_injections") or {},  # {config id: [example ids]}
        **decision,
    }
    path = RunStore(context["run_id"]).write_json(RunStore.REPORT, report)
    (settings.home() / "last_report.json").write_text(json.dumps(report, indent=2, default=str))
    report["report_path"] = str(path)
    return report
