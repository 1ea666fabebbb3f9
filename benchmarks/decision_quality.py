"""How often does the gate promote? Measured on real generations.

    .venv/bin/python benchmarks/decision_quality.py [--seeds 20] [--rows 48]

- A/A: one configuration (SmolLM2, `terse` prompt, `--temperature`, 0.7 by default) is
  generated with N different sampling seeds; every pair of seeds is put
  through the gate as challenger vs champion. Target: PROMOTE in <= 5%.
- Real improvement: the same configuration (each seed) as challenger against
  a degenerate champion (Gemma 3 270M base, `grounded` prompt, greedy).
  Target: PROMOTE in >= 95%.

Uses the bundled suite's scorers, weights and gate, the pipeline's own
statistics (`evaluation.stats`) and decision (`evaluation.registry.decide`).
Pairs share seeds, so the A/A repetitions are not independent; the count of
distinct generations is printed with the rates. Writes
benchmarks/out/decision_quality_t<temperature>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import tempfile
import time
from pathlib import Path

from evaluation import settings
from evaluation.candidates import Config, SamplingParams
from evaluation.dataset import load_examples
from evaluation.generation import generate
from evaluation.ranking import config_summary, example_composite
from evaluation.registry import PROMOTE, decide
from evaluation.scorers import ScoringContext, ScoringItem, get_scorer
from evaluation.stats import holm, paired_compare
from evaluation.suite import load_suite
from serving.engine import EngineManager
from serving.models import materialize

log = logging.getLogger("decision_quality")


def score(suite, config, examples, results) -> tuple[dict[str, float], dict[str, float]]:
    """(per-example composite for pairing, run-level metrics)."""
    ok = [ScoringItem(ex, r) for ex, r in zip(examples, results) if r.success]
    per = {ex.id: {} for ex in examples}
    metrics: dict[str, float] = {}
    ctx = ScoringContext(config=config, latency_budget_s=suite.scoring.latency_budget_s)
    for name in suite.scoring.scorers:
        scorer = get_scorer(name)
        vals = scorer.score(ok, ctx)
        for it, v in zip(ok, vals):
            per[it.example.id].update(v)
        metrics.update(scorer.aggregate(vals))
    rows = []
    for ex, r in zip(examples, results):
        comp = example_composite(per[ex.id], suite.scoring.weights) if r.success else math.nan
        rows.append({"example_id": ex.id, "success": r.success, "composite": comp})
    metrics.update(config_summary(rows, len(examples)))
    paired = {r["example_id"]: (0.0 if math.isnan(r["composite"]) else r["composite"]) for r in rows}
    return paired, metrics


def gate(suite, challenger, champion) -> str:
    g = suite.gate
    (c_vals, c_metrics), (k_vals, _) = challenger, champion
    cmp = paired_compare(c_vals, k_vals, metric="composite", resamples=g.bootstrap_resamples,
                         confidence=g.confidence, seed=g.seed)  # fmt: skip
    cmp.p_adjusted = holm({"x": cmp.p_value})["x"]
    return decide(c_metrics, cmp, g, champion_version="1").outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the good configuration")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    suite = load_suite(settings.BUNDLED_SUITE)
    examples = load_examples(suite.dataset_path, args.rows)
    templates = {t.name: t for t in suite.search_space.prompt_templates}
    mgr = EngineManager(tempfile.mkdtemp(prefix="dq-"), settings.engine_python())
    t0 = time.monotonic()
    recs = {}
    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        recs[name] = mgr.launch(name, materialize(name, settings.models_dir(), settings.engine_python()))
    try:
        for rec in recs.values():
            mgr.wait(rec, 600)

        def run(model, api, tpl, temperature, seed):
            t = templates[tpl]
            cfg = Config(model, api, SamplingParams(temperature, 0.95, -1, 64, seed), tpl, t.template, t.system)
            res = generate(recs[model].base_url, cfg, examples, concurrency=args.concurrency, timeout_s=300,
                           max_retries=3)  # fmt: skip
            return score(suite, cfg, examples, res)

        good = []
        for seed in range(1, args.seeds + 1):
            good.append(run("smollm2-135m-instruct", "chat", "terse", args.temperature, seed))
            log.info("seed %d: composite %.4f", seed, good[-1][1]["composite"])
        bad = run("gemma3-270m", "completions", "grounded", 0.0, 1)
        log.info("degenerate champion: composite %.4f", bad[1]["composite"])

        aa = [gate(suite, good[i], good[j]) for i, j in itertools.permutations(range(len(good)), 2)]
        imp = [gate(suite, g, bad) for g in good]
    finally:
        for name in recs:
            mgr.stop(name)
    result = {
        "seeds": args.seeds,
        "temperature": args.temperature,
        "rows": len(examples),
        "aa_repetitions": len(aa),
        "aa_promote_rate": sum(o == PROMOTE for o in aa) / len(aa),
        "aa_outcomes": {o: aa.count(o) for o in sorted(set(aa))},
        "improvement_repetitions": len(imp),
        "improvement_promote_rate": sum(o == PROMOTE for o in imp) / len(imp),
        "improvement_outcomes": {o: imp.count(o) for o in sorted(set(imp))},
        "good_composites": [round(g[1]["composite"], 4) for g in good],
        "degenerate_composite": round(bad[1]["composite"], 4),
        "gate": suite.gate.model_dump(),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    (out / f"decision_quality_t{args.temperature:g}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "gate"}, indent=2))
    print(f"A/A: PROMOTE in {result['aa_promote_rate']:.1%} of {len(aa)} ordered seed pairs (target <= 5%)")
    print(f"improvement: PROMOTE in {result['improvement_promote_rate']:.1%} of {len(imp)} (target >= 95%)")


if __name__ == "__main__":
    main()
