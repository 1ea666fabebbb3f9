"""Successive halving against the full grid on the same suite.

    .venv/bin/python benchmarks/halving.py [--suite suites/default.yaml]

Evaluates the suite twice through the pipeline's own functions (no Airflow):
once with `search.strategy: grid`, once with `successive_halving` (the
suite's halving settings, or the defaults). Both share the content-addressed
cache, so the second strategy reuses generations; the cost of each is
therefore counted from the generation records it used (completion tokens of
the dataset generations, cached or not), not from wall time. Judge scorers
that carry no weight are left out (they cannot change the winner); bias
probes and every weighted scorer are kept. Prints each strategy's winner,
the generations and tokens it needed, and whether the winners agree; writes
benchmarks/out/halving.json. Starts the suite's vLLM engines when
generations are missing and stops those it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import yaml

from evaluation import settings
from evaluation.jsonsafe import load_metrics
from evaluation.ranking import rank_configs
from evaluation.runstore import RunStore
from evaluation.scorers import get_scorer
from evaluation.stages import generate as generate_stage
from evaluation.stages import inputs
from evaluation.stages import plan as plan_stage
from evaluation.stages import score as score_stage
from evaluation.stages import select as select_stage
from evaluation.suite import load_suite

OUT = Path(__file__).resolve().parent / "out"


def variant(suite_path: Path, strategy: str, tmp: Path) -> Path:
    raw = yaml.safe_load(suite_path.read_text())
    suite = load_suite(suite_path)
    raw["dataset"]["path"] = str(suite.dataset_path)
    if raw.get("bias", {}).get("probes", "bundled") != "bundled":
        raw["bias"]["probes"] = str(suite.bias_probes_path)
    weights = suite.scoring.weights
    raw.setdefault("scoring", {})["scorers"] = [
        n for n in suite.scoring.scorers
        if not get_scorer(n).needs_judge or any(weights.get(m) for m in get_scorer(n).metrics)
    ]  # fmt: skip
    if not any(get_scorer(n).needs_judge for n in raw["scoring"]["scorers"]):
        raw.pop("judge", None)
        raw.get("gate", {}).get("ceilings", {}).pop("judge_error_rate", None)
    raw.setdefault("search", {})["strategy"] = strategy
    out = tmp / f"{strategy}.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def evaluate(path: Path, run_id: str) -> dict:
    from serving.endpoints import endpoints_for, stop_endpoints

    suite = load_suite(path)
    configs = plan_stage.plan(str(path))
    models = plan_stage.models_of(configs)
    plan_stage.annotate_missing(str(path), configs, plan_stage.identities(configs))
    t0 = time.monotonic()
    selected_ids: list[str] = []
    endpoints: dict = {}
    try:
        needed = {c["model"] for c in configs if c["missing"]}
        endpoints = endpoints_for(models, needed, ready_timeout_s=suite.generation.ready_timeout_s)
        selected = select_stage.select_configs(str(path), configs, endpoints, run_id)
        selected_ids = [c["config_id"] for c in selected]
        for batch in plan_stage.batches_by_model(selected):
            generate_stage.generate_model(str(path), batch["configs"], endpoints[batch["model"]], run_id)
    finally:
        stop_endpoints(endpoints)
    scored = [score_stage.score_config(str(path), c, run_id) for c in configs if c["config_id"] in selected_ids]
    metrics = {s["config"]["config_id"]: load_metrics(s["metrics"]) for s in scored}
    ranked = rank_configs(metrics, suite.gate)
    halving = select_stage.halving_summary(run_id, scored)
    if halving:
        tokens, generations = halving["tokens_spent"], sum(
            halving["used"][c]["examples"] for c in halving["eliminated"]) + len(scored) * len(
            inputs.examples_for(suite))  # fmt: skip
    else:
        tokens = sum(g.get("completion_tokens") or 0 for s in scored
                     for g in RunStore(run_id).generations(s["config"]["config_id"]).values())
        generations = len(scored) * len(inputs.examples_for(suite))
    labels = {c["config_id"]: f"{c['model']} {c['template_name']} t={c['sampling']['temperature']}" for c in configs}
    return {
        "winner": ranked[0].config_id if ranked and ranked[0].eligible else None,
        "winner_label": labels.get(ranked[0].config_id) if ranked else None,
        "ranking": [(r.config_id, labels[r.config_id], round(r.metrics["composite"], 4)) for r in ranked],
        "completion_tokens": tokens,
        "generations": generations,
        "seconds": round(time.monotonic() - t0, 1),
        "halving": halving and {k: halving[k] for k in ("rounds", "eliminated", "tokens_full_grid_estimate")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default=str(settings.BUNDLED_SUITE))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        grid = evaluate(variant(Path(args.suite).resolve(), "grid", Path(tmp)), f"bench-grid-{stamp}")
        halv = evaluate(variant(Path(args.suite).resolve(), "successive_halving", Path(tmp)), f"bench-halving-{stamp}")
    res = {
        "suite": args.suite,
        "grid": grid,
        "successive_halving": halv,
        "same_winner": grid["winner"] == halv["winner"],
        "token_ratio": halv["completion_tokens"] / grid["completion_tokens"] if grid["completion_tokens"] else None,
        "generation_ratio": halv["generations"] / grid["generations"],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "halving.json").write_text(json.dumps(res, indent=2, default=str))
    print(f"\ngrid:               winner {grid['winner_label']} ({grid['winner']}), "
          f"{grid['generations']} generations, {grid['completion_tokens']:.0f} completion tokens")
    print(f"successive halving: winner {halv['winner_label']} ({halv['winner']}), "
          f"{halv['generations']} generations, {halv['completion_tokens']:.0f} completion tokens")
    for r in halv["halving"]["rounds"]:
        print(f"  round {r['index']}: {len(r['configs'])} configurations on {r['examples']} examples, kept {r['kept']}")
    print(f"same winner: {res['same_winner']}; tokens {res['token_ratio']:.2f} of the grid's, "
          f"generations {res['generation_ratio']:.2f}")
    print(f"figures: {OUT / 'halving.json'}")


if __name__ == "__main__":
    main()
