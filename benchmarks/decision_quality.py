"""How often does the gate promote? Real generations, the DAG's own stages.

    .venv/bin/python benchmarks/decision_quality.py [--suite S] [--seeds 10] [--temperature 0.7]
        [--family K] [--sweeps 100] [--rows N] [--no-judge] [--ready-timeout S] [--request-timeout S]

Every configuration is planned, generated (dataset rows and bias probes),
measured by the latency probe and scored exactly as in a DAG run
(evaluation.stages: plan, generate_model, latency.probe_all, score_config:
the suite's scorers, configuration-level ones such as bias and latency on
their probes, the composite with the metrics' directions). Each repetition is
then one sweep as the DAG decides it: K candidate configurations are ranked
(evaluation.ranking.rank_configs, the leaderboard of stages.track), the top
eligible one is compared with the champion by
evaluation.compare.paired_comparisons (Holm over the sweep's eligible
candidates) and evaluation.registry.decide gives the outcome.

- A/A (the global null): the champion and all K candidates are one
  configuration (SmolLM2, `terse` prompt, `--temperature`) with different
  sampling seeds. Target: PROMOTE in <= 5% of sweeps.
- Real improvement: K seeds of that configuration against a degenerate
  champion (Gemma 3 270M base, `grounded` prompt, greedy). Target: PROMOTE in
  >= 95% of sweeps.

K defaults to the size of the suite's grid (the family the DAG adjusts over).
Sweeps are drawn (seeded) from the seeds: they share generations, so they
are not independent; the number of distinct generations is printed with the
rates. `--no-judge` leaves out the suite's judge scorers (refused if any
judge metric has weight: the composite must stay the suite's) and the
judge_error_rate ceiling they feed; `--rows N` uses the first N rows. The
suite actually used is written next to the run's files and named in the
output, benchmarks/out/decision_quality_t<temperature>.json. Generations and
scores go through the result cache of LLMOPS_HOME, so a rerun is cheap.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import random
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

from evaluation import registry, settings
from evaluation.candidates import Config, expand_configs
from evaluation.compare import paired_comparisons
from evaluation.jsonsafe import load_metrics
from evaluation.ranking import rank_configs
from evaluation.runstore import RunStore
from evaluation.scorers import get_scorer
from evaluation.stages import generate as generate_stage
from evaluation.stages import latency as latency_stage
from evaluation.stages import plan as plan_stage
from evaluation.stages import score as score_stage
from evaluation.stages.inputs import lower_is_better
from evaluation.stages.track import leaderboard_rows
from evaluation.suite import Suite, load_suite

log = logging.getLogger("decision_quality")

GOOD = ("smollm2-135m-instruct", "terse")  # model, template; temperature and seeds from the command line
DEGENERATE = ("gemma3-270m", "grounded", 0.0)


def benchmark_suite(suite_path: str, out_dir: Path, *, rows: int | None = None, no_judge: bool = False,
                    ready_timeout_s: float | None = None, request_timeout_s: float | None = None) -> Path:
    """The suite this benchmark runs: the named one, written out with an
    absolute dataset path, optionally limited to `rows` rows, without its
    judge scorers (only when they carry no weight) and with longer engine
    start-up and request deadlines (a busy machine; no effect on answers)."""
    src = load_suite(suite_path)
    raw = yaml.safe_load(Path(suite_path).read_text())
    raw["dataset"]["path"] = str(src.dataset_path)
    if src.bias_probes_path is not None:
        raw["bias"]["probes"] = str(src.bias_probes_path)
    if rows:
        raw["dataset"]["limit"] = rows
    if ready_timeout_s:
        raw.setdefault("generation", {})["ready_timeout_s"] = ready_timeout_s
    if request_timeout_s:
        raw.setdefault("generation", {})["request_timeout_s"] = request_timeout_s
    if no_judge:
        judged = [n for n in src.scoring.scorers if get_scorer(n).needs_judge]
        weighted = sorted(m for n in judged for m in get_scorer(n).metrics if src.scoring.weights.get(m))
        if weighted:
            raise SystemExit(f"--no-judge: {suite_path} weights judge metric(s) {weighted}; leaving them out would "
                             "change the composite")  # fmt: skip
        raw["scoring"]["scorers"] = [n for n in src.scoring.scorers if n not in judged]
        raw.pop("judge", None)
        raw.get("gate", {}).get("ceilings", {}).pop("judge_error_rate", None)
        raw.get("gate", {}).get("floors", {}).pop("judge_error_rate", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "suite.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_suite(path)  # the derived suite must still be valid
    return path


def planned_config(planned: list[dict], model: str, template: str, temperature: float) -> dict:
    """The candidate (model, template) of the plan stage's configurations,
    at `temperature`."""
    match = [c for c in planned if c["role"] == "candidate" and c["model"] == model and c["template_name"] == template]
    if not match:
        raise SystemExit(f"the suite has no configuration of model {model!r} with template {template!r}")
    cfg = {**match[0], "sampling": {**match[0]["sampling"], "temperature": temperature}}
    return {**cfg, **Config.from_json(cfg).to_json()}  # a new config id


def with_seeds(config: dict, seeds: list[int]) -> list[dict]:
    """`config` once per sampling seed."""
    base = Config.from_json(config)
    return [{**config, **replace(base, sampling=replace(base.sampling, seed=s)).to_json()} for s in seeds]


def evaluate(suite_path: str, configs: list[dict], run_id: str, *, keep_engines: bool = False) -> dict[str, dict]:
    """Generate and score `configs` as a DAG run does (tests/helpers/pipeline.py
    calls the same task bodies): engines only for models with generations
    missing from the cache, one interleaved stream per model, the latency
    probe, score_config per configuration. Returns {config id: the score
    task's result, metrics as floats}."""
    from serving.endpoints import endpoints_for
    from serving.ownership import stop_launched

    suite = load_suite(suite_path)
    configs = plan_stage.annotate_missing(suite_path, configs, plan_stage.identities(configs), run_id)
    needed = plan_stage.engines_needed(suite_path, configs)
    endpoints = endpoints_for(plan_stage.models_of(configs), needed, ready_timeout_s=suite.generation.ready_timeout_s,
                              run_id=run_id)  # launches recorded for stop_launched
    try:
        batches = plan_stage.batches_by_model(configs)
        for batch in batches:  # the throughput sweep
            generate_stage.generate_model(suite_path, batch["configs"], endpoints[batch["model"]], run_id)
        latency_stage.probe_all(suite_path, batches, endpoints, run_id)  # the latency probe, after every sweep
        scored = {}
        for c in configs:
            s = score_stage.score_config(suite_path, c, run_id)
            scored[c["config_id"]] = {**s, "metrics": load_metrics(s["metrics"])}
            log.info("%s seed %s: composite %.4f", Config.from_json(c).label, c["sampling"]["seed"],
                     scored[c["config_id"]]["metrics"]["composite"])  # fmt: skip
    finally:
        if not keep_engines:
            stop_launched(run_id)
    return scored


def sweep_decision(suite: Suite, run_id: str, scored: dict[str, dict], candidates: list[str], champion: str) -> dict:
    """One sweep decided as the DAG decides it: rank the candidates, compare
    the top eligible one with the champion (Holm over the eligible
    candidates), apply the gate. The champion is a baseline, not a
    candidate (its configuration is outside the sweep's grid)."""
    ranked = rank_configs({cid: scored[cid]["metrics"] for cid in candidates}, suite.gate)
    board = leaderboard_rows(ranked, {cid: scored[cid] for cid in candidates}, [scored[champion]])
    winner = ranked[0].config_id if ranked and ranked[0].eligible else None
    if winner is None:
        return {"outcome": registry.REJECT, "winner": None, "reasons": ["no eligible candidate"], "comparison": None}
    comparisons = paired_comparisons(suite, run_id, {"leaderboard": board}, winner, champion)
    composite = next(c for c in comparisons if c.metric == "composite")
    d = registry.decide(scored[winner]["metrics"], composite, suite.gate, champion_version="1")
    return {"outcome": d.outcome, "winner": winner, "reasons": d.reasons, "comparison": composite.to_json()}


def draw_sweeps(pool: list[str], family: int, n: int, seed: int, *, exclude: str | None = None) -> list[list[str]]:
    """Up to `n` distinct `family`-subsets of `pool` (without `exclude`),
    drawn with a seeded generator; all of them when there are fewer."""
    ids = [c for c in pool if c != exclude]
    if family > len(ids):
        raise SystemExit(f"--family {family} needs at least {family + 1} seeds")
    every = math.comb(len(ids), family)
    rng = random.Random(seed)
    if every <= n:
        return [list(s) for s in itertools.combinations(ids, family)]
    seen: set[tuple[str, ...]] = set()
    while len(seen) < n:
        seen.add(tuple(sorted(rng.sample(ids, family))))
    return [list(s) for s in sorted(seen)]


def _rates(results: list[dict]) -> dict:
    outcomes = [r["outcome"] for r in results]
    return {"repetitions": len(outcomes), "promote_rate": outcomes.count(registry.PROMOTE) / len(outcomes),
            "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))}}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=str(settings.BUNDLED_SUITE), help="suite whose scorers, weights and gate are used")
    ap.add_argument("--seeds", type=int, default=10, help="sampling seeds of the good configuration")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the good configuration")
    ap.add_argument("--family", type=int, default=None,
                    help="candidates per sweep (Holm family); default: the suite's grid size")  # fmt: skip
    ap.add_argument("--sweeps", type=int, default=100, help="sweeps drawn per experiment (at most)")
    ap.add_argument("--rows", type=int, default=None, help="use only the first N dataset rows")
    ap.add_argument("--no-judge", action="store_true", help="leave out the suite's (unweighted) judge scorers")
    ap.add_argument("--ready-timeout", type=float, default=None, help="engine start-up deadline in s (busy machine)")
    ap.add_argument("--request-timeout", type=float, default=None, help="generation request timeout in s (busy machine)")
    ap.add_argument("--keep-engines", action="store_true", help="leave the engines it started running")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.monotonic()
    run_id = f"decision-quality-t{args.temperature:g}-{time.strftime('%Y%m%dT%H%M%S')}"  # a run of its own
    suite_path = str(benchmark_suite(args.suite, RunStore(run_id).dir, rows=args.rows, no_judge=args.no_judge,
                                     ready_timeout_s=args.ready_timeout, request_timeout_s=args.request_timeout))
    suite = load_suite(suite_path)
    family = args.family or len(expand_configs(suite))
    planned = plan_stage.plan(suite_path)
    good = with_seeds(planned_config(planned, *GOOD, args.temperature), list(range(1, args.seeds + 1)))
    bad = planned_config(planned, *DEGENERATE)
    scored = evaluate(suite_path, [*good, bad], run_id, keep_engines=args.keep_engines)
    good_ids, bad_id = [c["config_id"] for c in good], bad["config_id"]

    aa = []
    per_champion = max(1, args.sweeps // len(good_ids))
    for champ in good_ids:
        for sweep in draw_sweeps(good_ids, family, per_champion, suite.gate.seed, exclude=champ):
            aa.append(sweep_decision(suite, run_id, scored, sweep, champ))
    improvement = [sweep_decision(suite, run_id, scored, sweep, bad_id)
                   for sweep in draw_sweeps(good_ids, family, args.sweeps, suite.gate.seed)]  # fmt: skip
    weights = suite.scoring.weights
    result = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "suite": args.suite,
        "suite_used": suite_path,
        "scorers": suite.scoring.scorers,
        "composite": {m: {"weight": w, "direction": "lower" if m in lower_is_better(weights) else "higher"}
                      for m, w in weights.items()},  # fmt: skip
        "good_configuration": {"model": GOOD[0], "template": GOOD[1], "temperature": args.temperature,
                               "seeds": args.seeds},  # fmt: skip
        "degenerate_configuration": dict(zip(("model", "template", "temperature"), DEGENERATE)),
        "rows": len(RunStore(run_id).scores(bad_id)),
        "family": family,
        "distinct_generations": len(good_ids) + 1,
        "aa": _rates(aa),
        "improvement": _rates(improvement),
        "good_composites": [round(scored[c]["metrics"]["composite"], 4) for c in good_ids],
        "degenerate_composite": round(scored[bad_id]["metrics"]["composite"], 4),
        "aa_min_adjusted_p": min((r["comparison"]["p_adjusted"] for r in aa if r["comparison"]), default=None),
        "gate": suite.gate.model_dump(),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    (out / f"decision_quality_t{args.temperature:g}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "gate"}, indent=2))
    print(f"A/A: PROMOTE in {result['aa']['promote_rate']:.1%} of {len(aa)} sweeps of {family} candidates "
          f"(target <= 5%)")  # fmt: skip
    print(f"improvement: PROMOTE in {result['improvement']['promote_rate']:.1%} of {len(improvement)} sweeps "
          f"(target >= 95%)")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
