"""Stage `select`: successive halving, when the suite asks for it (task
select_configs), and its record for the leaderboard and MLflow."""

from __future__ import annotations

import logging
import math
import time

from evaluation.candidates import Config
from evaluation.jsonsafe import dump_nan
from evaluation.ranking import config_summary, example_composite
from evaluation.runstore import RunStore
from evaluation.scorers import ScoringContext, get_scorer
from evaluation.stages.generate import cached_generations, generate_items
from evaluation.stages.inputs import examples_for, lower_is_better
from evaluation.stages.plan import batches_by_model, models_of
from evaluation.stages.score import run_scorers, scoring_items
from evaluation.suite import load_suite
from serving.ownership import live_endpoint

log = logging.getLogger(__name__)


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
    cheap_metrics = {m for n in cheap for m in get_scorer(n).metrics}
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
                ep = endpoints[model] = live_endpoint(suite_path, model, models_of(batch)[model], ep,
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
    RunStore(run_id).write_json(RunStore.HALVING, dump_nan(record))
    log.info("successive halving: %d of %d configurations go to the full evaluation", len(survivors) + len(fixed),
             len(configs))  # fmt: skip
    return survivors + fixed


def halving_summary(run_id: str, scored: list[dict]) -> dict | None:
    """Tokens the halving run generated against the full grid's: survivors
    count their full-dataset generations, eliminated configurations what
    they used; the full grid is estimated from each eliminated
    configuration's mean completion tokens per example."""
    store = RunStore(run_id)
    rec = store.read_json(RunStore.HALVING)
    if rec is None:
        return None
    n = rec["n_examples"]
    spent = full = 0.0
    for s in scored:
        cid = s["config"]["config_id"]
        gens = store.generations(cid)
        t = sum(g.get("completion_tokens") or 0 for g in gens.values())
        spent += t
        full += t
    for cid, u in rec["used"].items():
        if cid in rec["eliminated"]:
            spent += u["completion_tokens"]
            full += u["completion_tokens"] / max(1, u["examples"]) * n
    rec.update(tokens_spent=spent, tokens_full_grid_estimate=full, token_share=spent / full if full else math.nan)
    return rec


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
