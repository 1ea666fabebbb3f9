"""Stage `score`: example-level and configuration-level scorers over one
configuration's generations, with the judge started on first need (task
score, mapped per configuration)."""

from __future__ import annotations

import logging
import math
import time

from evaluation import settings
from evaluation.cache import ResultCache
from evaluation.candidates import Config
from evaluation.dataset import Example
from evaluation.generation import RequestResult
from evaluation.jsonsafe import dump_nan
from evaluation.keys import SCORES, score_key
from evaluation.ranking import config_summary, example_composite
from evaluation.runstore import RunStore
from evaluation.scorers import ScoringContext, ScoringItem, get_scorer
from evaluation.scorers._judge import has_transient_error
from evaluation.stages.inputs import bias_enabled, examples_for, lower_is_better, probe_prompts
from evaluation.suite import Suite, load_suite
from serving.ownership import ensure_recorded

log = logging.getLogger(__name__)


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
    from evaluation.secrets import api_key

    source = j.source.model_dump(exclude_none=True)
    key = api_key(source, f"judge ({j.name})")  # read at use time, kept in memory only (repr=False)
    ident = identify(j.name, source, max_model_len=j.max_model_len, api_key=key)
    return JudgeEndpoint(base_url="", model=j.name, identity=f"{ident['model_fingerprint']}|{ident['engine']}",
                         max_tokens=j.max_tokens, temperature=j.temperature, concurrency=j.concurrency,
                         timeout_s=j.request_timeout_s, max_retries=j.max_retries, api_key=key)  # fmt: skip


def live_judge(suite: Suite, judge, run_id: str):
    """Make the judge endpoint ready (a managed engine is started, or the
    running one reused: a bundled judge that is also a candidate shares its
    engine) and record a launch for the teardown."""
    from dataclasses import replace

    j = suite.judge
    ep = ensure_recorded(suite, j.name, {"source": j.source.model_dump(exclude_none=True),
                                          "max_model_len": j.max_model_len}, run_id)  # fmt: skip
    return replace(judge, base_url=ep["base_url"])


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
        skey = {it.example.id: score_key(name, scorer.version, params, gens[it.example.id].get("cache_key"), it.example.digest)
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
    store = RunStore(run_id)
    timing = store.score_timing_name(ctx.config.config_id)
    previous = store.read_json(timing, {})
    store.write_json(timing, ({n: previous.get(n, 0.0) + v for n, v in seconds.items()} | {
        n: v for n, v in previous.items() if n not in seconds}))  # fmt: skip
    return per_example, metrics, versions


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
    store = RunStore(run_id)
    gens = store.generations(config.config_id)
    ok, invisible = scoring_items(examples, gens)
    ctx = ScoringContext(config=config, latency_budget_s=suite.scoring.latency_budget_s, judge=judge_identity(suite))
    per_example, metrics, scorer_info = run_scorers(suite, suite.scoring.scorers, ok, ctx, gens, run_id)

    # Config-level scorers (bias over its probes, latency over the latency
    # probe): one value for the configuration, and bootstrap replicates of
    # it over its own units for the gate's statistics.
    config_values: dict[str, float] = {}
    replicates: dict[str, list[float]] = {}
    inputs = config_inputs(suite, run_id, config.config_id)
    for name in suite.scoring.scorers:
        scorer = get_scorer(name)
        if scorer.level == "config":
            res = scorer.score_config(inputs)
            metrics.update(res.metrics)
            config_values.update({m: res.metrics.get(m, math.nan) for m in scorer.metrics})
            replicates.update(res.replicates)
            store.write_json(store.groups_name(name, config.config_id), res.table)
    store.write_json(store.replicates_name(config.config_id), replicates)
    store.write_json(store.config_values_name(config.config_id), config_values)
    metrics.update(sweep_throughput(run_id, config, config_json.get("engine_key", config.model)))

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
    store.write_scores(config.config_id, rows)
    log.info("[%s] composite %.4f (coverage %.2f)", config.config_id, metrics["composite"], metrics["coverage"])
    return dump_nan({"config": config_json, "metrics": metrics, "scorers": scorer_info,
                     "suspected_injections": [r["example_id"] for r in rows if r["injection_markers"]]})


def config_inputs(suite: Suite, run_id: str, config_id: str):
    """What configuration-level scorers rate (scorers.ConfigInputs)."""
    from evaluation.scorers import ConfigInputs
    from evaluation.stages import latency as latency_stage

    return ConfigInputs(
        probe_answers=probe_answers(suite, run_id, config_id) if bias_enabled(suite) else [],
        categories=list(suite.bias.categories) if suite.bias else [],
        latency=latency_stage.records(run_id, config_id), latency_budget_s=suite.scoring.latency_budget_s,
        resamples=suite.gate.config_resamples, seed=suite.gate.seed,
    )  # fmt: skip


def sweep_throughput(run_id: str, config: Config, engine: str) -> dict[str, float]:
    """The throughput sweep's rate for this configuration's engine (all its
    configurations' fresh generations together), reported as throughput,
    never as latency. Absent when everything came from the cache."""
    store = RunStore(run_id)
    t = store.read_json(store.generation_timing_name(engine))
    if not t or not t.get("requests") or not t.get("seconds"):
        return {}
    return {"sweep_throughput_tok_s": t["completion_tokens"] / t["seconds"],
            "sweep_requests_per_s": t["requests"] / t["seconds"]}  # fmt: skip


def probe_answers(suite: Suite, run_id: str, config_id: str) -> list:
    from evaluation.bias import ProbeAnswer

    gens = RunStore(run_id).generations(config_id, kind="probes")
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
