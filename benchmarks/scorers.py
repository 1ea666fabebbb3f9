"""Scoring throughput and judge traffic: embedding vs TruLens vs Ragas scorers.

    .venv/bin/python benchmarks/scorers.py [--rows 8] [--judge-url http://127.0.0.1:8765/v1] [--concurrency 4]

Scores the first --rows rows of the bundled dataset (suites/data/world_facts_rag.jsonl)
with three groups of scorers, all through `evaluation.score_stage.run_scorers`
(so through the score cache, as in the DAG) and the same local judge:
  (1) embedding: relevance, groundedness, correctness (no judge);
  (2) TruLens: trulens_answer_relevance, trulens_context_relevance, trulens_groundedness;
  (3) Ragas: ragas_faithfulness, ragas_response_relevancy, ragas_context_precision;
and reports per group (and per scorer) rows/s, judge HTTP calls per row and
the judge error rate. The same scoring is then run again, unchanged, against
the now-filled score cache: it must make zero judge calls (its rows/s shown).

The answers are the dataset's `reference` texts, wrapped in a successful
RequestResult (synthetic latency_s / ttft_s, and a synthetic unique generation
cache key per row), so the benchmark needs no generation engine; only the
judge is served. Without --judge-url a vLLM engine serving the bundled
SmolLM2-135M-Instruct (from .llmops/models) is started and stopped at the end.

Judge calls are counted on the server: vLLM's `/metrics` counter
`vllm:request_success_total` (summed over its labels) read before and after
each scorer; `http_requests_total` of /v1/chat/completions (every status) is
read too, so rejected requests (4xx, never reaching the engine) show. The
counters are server-wide: another client of the same judge in the window is
counted as well (the benchmark watches the counter for 5 s before starting
and warns of such traffic). Ragas scorers also count their own HTTP requests client-side
(`last_requests`); that is reported next to the server's count.

The score cache and state directory are temporary (LLMOPS_HOME and
LLMOPS_CACHE are pointed at a temporary directory). A one-time warm-up
(embedding model load, TruLens/Ragas imports) is timed apart and not counted
in any group. Prints a table; writes benchmarks/out/scorers.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from evaluation import settings

GROUPS = {
    "embedding": ["relevance", "groundedness", "correctness"],
    "trulens": ["trulens_answer_relevance", "trulens_context_relevance", "trulens_groundedness"],
    "ragas": ["ragas_faithfulness", "ragas_response_relevancy", "ragas_context_precision"],
}
JUDGE_MODEL = "smollm2-135m-instruct"
DATASET = settings.REPO_ROOT / "suites" / "data" / "world_facts_rag.jsonl"

SUITE_YAML = """\
name: scorer-benchmark
version: "1"
dataset:
  path: {dataset}
  limit: {rows}
candidates:
  - name: {model}
    source: {{base_url: "{url}"}}
    api: chat
search_space:
  prompt_templates:
    - name: plain
      template: "{{context}} Q: {{question}} A:"
scoring:
  scorers: {scorers}
  weights: {{relevance: 1.0}}
judge:
  name: {model}
  source: {{base_url: "{url}"}}
  concurrency: {concurrency}
registered_model: scorer-benchmark
"""

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$")


def server_counters(root: str) -> dict[str, float]:
    """vllm:request_success_total (all labels) and the chat-completions HTTP
    requests (all statuses; non-2xx apart) from the judge's /metrics."""
    text = urllib.request.urlopen(f"{root}/metrics", timeout=10).read().decode()
    out = {"engine_requests": 0.0, "http_requests": 0.0, "http_non_2xx": 0.0}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "vllm:request_success_total":
            out["engine_requests"] += value
        elif name == "http_requests_total" and 'handler="/v1/chat/completions"' in labels:
            out["http_requests"] += value
            if 'status="2xx"' not in labels:
                out["http_non_2xx"] += value
    return out


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


def warm_up() -> float:
    """Load the embedding model and import TruLens / Ragas once, outside the timings."""
    t0 = time.perf_counter()
    from evaluation.scorers import list_scorers
    from evaluation.scorers._embeddings import embed
    from evaluation.scorers.ragas_judge import _embeddings, _ragas_env
    from evaluation.scorers.trulens_judge import _provider_class

    list_scorers()
    embed(["warm-up"])
    _provider_class()
    _ragas_env()
    import instructor  # noqa: F401
    import ragas.metrics.collections  # noqa: F401

    _embeddings()
    return time.perf_counter() - t0


def fmt(v: float, spec: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8, help="first N rows of the bundled dataset")
    ap.add_argument("--judge-url", default=None, help="an OpenAI-compatible vLLM judge (…/v1); default: start one")
    ap.add_argument("--concurrency", type=int, default=4, help="judge requests in flight per scorer")
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The bundled model lives in the project's state directory; everything
    # else (engine records, score cache) goes to a temporary one.
    os.environ.setdefault("LLMOPS_MODELS_DIR", str(settings.models_dir()))
    tmp = tempfile.TemporaryDirectory(prefix="scorer-bench-")
    os.environ["LLMOPS_HOME"] = tmp.name
    os.environ["LLMOPS_CACHE"] = str(Path(tmp.name) / "cache")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    from evaluation.candidates import expand_configs
    from evaluation.dataset import load_examples
    from evaluation.generation import RequestResult
    from evaluation.scorers import ScoringContext, ScoringItem, get_scorer
    from evaluation.scorers._judge import judge_error_rate
    from evaluation.stages import score as score_stage
    from evaluation.suite import load_suite

    mgr = None
    url = args.judge_url.rstrip("/") if args.judge_url else None
    try:
        if url is None:
            from serving.engine import EngineManager
            from serving.models import materialize

            model_dir = materialize(JUDGE_MODEL, settings.models_dir(), settings.engine_python())
            mgr = EngineManager(Path(tmp.name) / "judge-engine", settings.engine_python())
            print(f"starting a judge engine ({JUDGE_MODEL}) ...", flush=True)
            t0 = time.perf_counter()
            rec = mgr.launch(JUDGE_MODEL, model_dir, max_model_len=2048)
            mgr.wait(rec, 600)
            url = rec.base_url.rstrip("/")
            print(f"judge ready at {url} in {time.perf_counter() - t0:.0f} s", flush=True)
        root = url.removesuffix("/v1")

        scorers = [n for names in GROUPS.values() for n in names]
        suite_path = Path(tmp.name) / "suite.yaml"
        suite_path.write_text(SUITE_YAML.format(dataset=DATASET, rows=args.rows, model=JUDGE_MODEL, url=url,
                                                scorers=json.dumps(scorers), concurrency=args.concurrency))  # fmt: skip
        suite = load_suite(suite_path)
        examples = load_examples(suite.dataset_path, limit=args.rows)
        config = expand_configs(suite)[0]
        items, gens = [], {}
        for ex in examples:
            text = ex.reference or ""
            r = RequestResult(example_id=ex.id, success=True, text=text, latency_s=0.5, ttft_s=0.1,
                              completion_tokens=len(text.split()), finish_reason="stop", attempts=1)  # fmt: skip
            items.append(ScoringItem(ex, r))
            key = hashlib.sha256(f"scorer-bench\x00{ex.id}\x00{ex.digest}\x00{text}".encode()).hexdigest()
            gens[ex.id] = {**r.to_json(), "cache_key": key}
        judge = replace(score_stage.judge_identity(suite), base_url=url)  # live URL: run_scorers launches nothing
        ctx = ScoringContext(config=config, latency_budget_s=suite.scoring.latency_budget_s, judge=judge)

        # Keep the scorer instances run_scorers makes, and count the rows they
        # are asked to score (0 on a full cache hit).
        instances: dict[str, object] = {}
        scored_rows: dict[str, int] = {}

        def recording_get_scorer(name: str):
            s = get_scorer(name)
            inner = s.score

            def score(todo, c):
                scored_rows[name] = scored_rows.get(name, 0) + len(todo)
                return inner(todo, c)

            s.score = score
            instances[name] = s
            return s

        get_scorer = recording_get_scorer

        n_ctx = sum(len(ex.contexts) for ex in examples)
        print(f"{len(items)} rows ({n_ctx} contexts, answers = references), judge {url} ({JUDGE_MODEL}), "
              f"concurrency {args.concurrency}", flush=True)  # fmt: skip
        print("warm-up (embedding model, TruLens and Ragas imports) ...", flush=True)
        warm_s = warm_up()
        print(f"warm-up {warm_s:.1f} s (not counted)", flush=True)
        idle = server_counters(root)
        time.sleep(5)  # other clients of the same judge would be counted as ours
        background = delta(server_counters(root), idle)["engine_requests"] / 5
        if background:
            print(f"warning: the judge served {background:.1f} requests/s from other clients before the run; "
                  "server-side call counts will include them", flush=True)  # fmt: skip

        def run_pass(label: str) -> dict:
            res: dict = {}
            for group, names in GROUPS.items():
                g = {"scorers": {}, "wall_s": 0.0, "engine_requests": 0.0, "http_requests": 0.0,
                     "http_non_2xx": 0.0}  # fmt: skip
                per_group: dict[str, dict] = {}
                for name in names:
                    scored_rows.pop(name, None)
                    before = server_counters(root)
                    t0 = time.perf_counter()
                    per_example, metrics, _ = score_stage.run_scorers(suite, [name], items, ctx, gens, "bench")
                    wall = time.perf_counter() - t0
                    d = delta(server_counters(root), before)
                    s = instances[name]
                    headline = s.metrics[0]
                    row = {
                        "wall_s": wall,
                        "rows_per_s": len(items) / wall,
                        "rows_scored": scored_rows.get(name, 0),
                        "judge_calls": d["engine_requests"],
                        "judge_calls_per_row": d["engine_requests"] / len(items),
                        "judge_http_requests": d["http_requests"],
                        "judge_http_non_2xx": d["http_non_2xx"],
                        "mean": metrics.get(headline, math.nan),
                        "nan_count": metrics.get(f"{headline}_nan_count", math.nan),
                    }
                    if s.needs_judge:
                        row["judge_error_rate"] = judge_error_rate(list(per_example.values()), list(s.metrics))
                    if hasattr(s, "last_requests"):
                        # the scorer's own count: stale on a cache hit (score() never ran)
                        row["client_requests"] = s.last_requests if scored_rows.get(name) else 0
                    g["scorers"][name] = row
                    for k in ("wall_s",):
                        g[k] += wall
                    for k in ("engine_requests", "http_requests", "http_non_2xx"):
                        g[k] += d[k]
                    for ex_id, vals in per_example.items():
                        per_group.setdefault(ex_id, {}).update(vals)
                    print(f"  [{label}] {name}: {wall:.1f} s, {d['engine_requests']:.0f} judge calls", flush=True)
                judge_metrics = [m for n in names if instances[n].needs_judge for m in instances[n].metrics]
                g["rows_per_s"] = len(items) / g["wall_s"]
                g["judge_calls_per_row"] = g["engine_requests"] / len(items)
                g["judge_error_rate"] = judge_error_rate(list(per_group.values()), judge_metrics)
                res[group] = g
            return res

        print("first pass (empty score cache) ...", flush=True)
        first = run_pass("first")
        print("re-run, unchanged (score cache) ...", flush=True)
        again = run_pass("cached")
        total_again = sum(g["engine_requests"] for g in again.values())
        total_http_again = sum(g["http_requests"] for g in again.values())
    finally:
        if mgr is not None:
            mgr.stop(JUDGE_MODEL)
        tmp.cleanup()

    res = {
        "rows": len(items),
        "contexts": n_ctx,
        "judge_url": url if args.judge_url else "(started by the benchmark)",
        "judge_model": JUDGE_MODEL,
        "concurrency": args.concurrency,
        "server_counters_at_start": idle,
        "background_judge_requests_per_s": background,
        "warm_up_s": warm_s,
        "first": first,
        "cached_rerun": again,
        "cached_rerun_judge_calls": total_again,
        "cached_rerun_judge_http_requests": total_http_again,
    }
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    (out / "scorers.json").write_text(json.dumps(res, indent=2, default=str))

    print()
    print(f"{'group / scorer':34} {'rows/s':>8} {'calls/row':>9} {'judge err':>9} {'mean':>6} {'NaN':>4} "
          f"{'client req':>10} | {'cached rows/s':>13} {'cached calls':>12}")  # fmt: skip
    for group in GROUPS:
        g, c = first[group], again[group]
        print(f"{group:34} {g['rows_per_s']:8.2f} {g['judge_calls_per_row']:9.2f} "
              f"{fmt(g['judge_error_rate'], '9.0%'):>9} {'':>6} {'':>4} {'':>10} | "
              f"{c['rows_per_s']:13.1f} {c['engine_requests']:12.0f}")  # fmt: skip
        for name, s in g["scorers"].items():
            cs = c["scorers"][name]
            print(f"  {name:32} {s['rows_per_s']:8.2f} {s['judge_calls_per_row']:9.2f} "
                  f"{fmt(s.get('judge_error_rate', math.nan), '9.0%'):>9} {fmt(s['mean']):>6} "
                  f"{s['nan_count']:4.0f} {s.get('client_requests', ''):>10} | "
                  f"{cs['rows_per_s']:13.1f} {cs['judge_calls']:12.0f}")  # fmt: skip
    non2xx = sum(g["http_non_2xx"] for g in first.values())
    for name, s in first["ragas"]["scorers"].items():
        if s["judge_calls"] > s.get("client_requests", 0):
            print(f"note: {name}: the server counted {s['judge_calls']:.0f} requests, the scorer sent "
                  f"{s['client_requests']}: the rest came from other clients of the judge")  # fmt: skip
    print(f"\njudge calls = vllm:request_success_total delta; non-2xx chat requests in the first pass: {non2xx:.0f}")
    rescored = sum(s["rows_scored"] for g in again.values() for s in g["scorers"].values())
    print(f"cached re-run: {total_again:.0f} judge calls ({total_http_again:.0f} HTTP requests), "
          f"{rescored} rows re-scored (target: 0)")  # fmt: skip
    if total_again or rescored:
        sys.exit(1)


if __name__ == "__main__":
    main()
