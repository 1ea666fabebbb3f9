"""Sweep throughput against the engine's own limit, and the DAG's overhead.

    .venv/bin/python benchmarks/sweep.py [--model smollm2-135m-instruct] [--naive-requests 48] [--skip-dag]
                                         [--suite SUITE] [--concurrency N]

On the same prompts (the bundled suite's configurations of one model x its
48 rows) and the same engine build, measures completion tokens/s of:
  (a) vLLM's offline engine, `LLM.chat`/`LLM.generate` with every request
      (each with its own SamplingParams) in one call: the limit;
  (b) the pipeline's generation phase (`evaluation.generate_stage.generate_model`:
      one interleaved stream to a vLLM server, adaptive concurrency);
  (c) a naive client sending one request at a time (first N requests);
then runs the whole DAG on the bundled suite (or --suite) from an empty state
and again unchanged, and reports its wall time, the share not spent
generating (engine start-up, scoring and judge calls count as overhead;
generation inside successive halving's rounds counts as generating) and the
re-run's wall time.
Prints the figures and ratios b/a, b/c; writes benchmarks/out/sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evaluation import settings
from evaluation.candidates import expand_configs
from evaluation.dataset import load_examples
from evaluation.generation import build_request
from evaluation.suite import load_suite

OFFLINE = r'''
import json, sys, time

def main():
    from vllm import LLM, SamplingParams
    spec = json.load(open(sys.argv[1]))
    llm = LLM(model=spec["model_dir"], max_model_len=2048, enforce_eager=True, dtype="bfloat16",
              enable_chunked_prefill=False, max_num_batched_tokens=4096)
    params = [SamplingParams(**p) for p in spec["params"]]
    t0 = time.perf_counter()
    if spec["api"] == "chat":
        outs = llm.chat(spec["inputs"], params, use_tqdm=False)
    else:
        outs = llm.generate(spec["inputs"], params, use_tqdm=False)
    wall = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    json.dump({"wall_s": wall, "tokens": tokens, "requests": len(outs)}, open(sys.argv[2], "w"))

if __name__ == "__main__":
    main()
'''


def offline(model_dir: Path, api: str, jobs) -> dict:
    params = []
    inputs = []
    for cfg, ex in jobs:
        s = cfg.sampling
        p = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.top_k != -1:
            p["top_k"] = s.top_k
        if s.temperature > 0:
            p["seed"] = s.seed
        params.append(p)
        _, body = build_request(cfg, ex)
        inputs.append(body["messages"] if api == "chat" else body["prompt"])
    with tempfile.TemporaryDirectory() as d:
        spec, out, script = Path(d, "spec.json"), Path(d, "out.json"), Path(d, "offline.py")
        spec.write_text(json.dumps({"model_dir": str(model_dir), "api": api, "inputs": inputs, "params": params}))
        script.write_text(OFFLINE)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
        proc = subprocess.run([str(settings.engine_python()), str(script), str(spec), str(out)], env=env,
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"offline engine failed:\n{proc.stderr[-12000:]}")
        return json.loads(out.read_text())


def llmops_run(home: Path, suite: str) -> float:
    env = {**os.environ, "LLMOPS_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "LLMOPS_MODELS_DIR": str(settings.models_dir())}  # fmt: skip
    t0 = time.monotonic()
    subprocess.run([str(Path(sys.executable).with_name("llmops")), "run", "--suite", suite], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.monotonic() - t0


def generation_seconds(home: Path) -> float:
    """Seconds the DAG spent generating: the generate tasks' streams plus the
    generation inside successive halving's rounds."""
    timings = [json.loads(p.read_text()) for p in home.glob("runs/*/timing-*.json")]
    rounds = [json.loads(p.read_text()) for p in home.glob("runs/*/halving.json")]
    return sum(t["seconds"] for t in timings) + sum(r.get("generation_seconds", 0.0) for r in rounds)


def judge_seconds(home: Path) -> float:
    """Seconds the DAG's score tasks spent in judge scorers (per-scorer
    timings written by evaluation.score_stage.run_scorers)."""
    from evaluation.scorers import get_scorer

    total = 0.0
    for p in home.glob("runs/*/score-timing-*.json"):
        total += sum(v for n, v in json.loads(p.read_text()).items() if get_scorer(n).needs_judge)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--naive-requests", type=int, default=48)
    ap.add_argument("--skip-dag", action="store_true")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="requests in flight for (b) (default: the bundled suite's generation.concurrency)")
    ap.add_argument("--suite", default=str(settings.BUNDLED_SUITE),
                    help="suite for the whole-DAG figures (default: the bundled suite)")
    args = ap.parse_args()

    from evaluation.generation import generate_jobs, interleave
    from evaluation.stages import generate as generate_stage
    from serving.engine import EngineManager
    from serving.models import materialize

    suite = load_suite(settings.BUNDLED_SUITE)
    examples = load_examples(suite.dataset_path)
    configs = [c for c in expand_configs(suite) if c.model == args.model]
    api = configs[0].api
    jobs = interleave(configs, examples)
    model_dir = materialize(args.model, settings.models_dir(), settings.engine_python())
    res: dict = {"model": args.model, "configs": len(configs), "requests": len(jobs)}

    print(f"(a) offline engine: {len(jobs)} requests in one call ...", flush=True)
    a = offline(model_dir, api, jobs)
    res["a_offline"] = {**a, "tok_s": a["tokens"] / a["wall_s"]}

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLMOPS_HOME"] = tmp  # empty cache: everything is generated
        mgr = EngineManager(tmp, settings.engine_python())
        rec = mgr.launch(args.model, model_dir)
        try:
            mgr.wait(rec, 600)
            ep = {"base_url": rec.base_url, "model_fingerprint": "bench", "engine": "bench"}
            print("(b) pipeline generation phase ...", flush=True)
            t0 = time.perf_counter()
            # The dataset rows only (no bias probes), exactly the offline run's requests.
            gen_suite = suite if args.concurrency is None else suite.model_copy(
                update={"generation": suite.generation.model_copy(update={"concurrency": args.concurrency})})
            res["b_concurrency"] = gen_suite.generation.concurrency
            _, fresh, _ = generate_stage.generate_items(gen_suite, configs, examples, ep)
            wall = time.perf_counter() - t0
            toks = sum(r.completion_tokens or 0 for _, r in fresh)
            res["b_pipeline"] = {"wall_s": wall, "tokens": toks, "tok_s": toks / wall}
            print(f"(c) naive client, {args.naive_requests} requests one at a time ...", flush=True)
            t0 = time.perf_counter()
            naive = generate_jobs(rec.base_url, jobs[: args.naive_requests], concurrency=1, timeout_s=300)
            wall = time.perf_counter() - t0
            toks = sum(r.completion_tokens or 0 for r in naive)
            res["c_naive"] = {"wall_s": wall, "tokens": toks, "requests": len(naive), "tok_s": toks / wall}
        finally:
            mgr.stop(args.model)
    res["b_over_a"] = res["b_pipeline"]["tok_s"] / res["a_offline"]["tok_s"]
    res["b_over_c"] = res["b_pipeline"]["tok_s"] / res["c_naive"]["tok_s"]

    if not args.skip_dag:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            print("DAG on the bundled suite, empty state ...", flush=True)
            first = llmops_run(home, args.suite)
            gen_s, judge_s = generation_seconds(home), judge_seconds(home)
            print("DAG again, unchanged ...", flush=True)
            again = llmops_run(home, args.suite)
        res["dag"] = {
            "suite": args.suite,
            "first_wall_s": first,
            "generation_s": gen_s,
            "judge_scoring_s": judge_s,
            "non_generation_share": 1 - gen_s / first,
            "overhead_share_excluding_judge": 1 - (gen_s + judge_s) / first,
            "unchanged_rerun_wall_s": again,
            "rerun_share": again / first,
        }
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print(f"tokens/s: offline {res['a_offline']['tok_s']:.0f}, pipeline {res['b_pipeline']['tok_s']:.0f}, "
          f"naive {res['c_naive']['tok_s']:.0f}; b/a {res['b_over_a']:.2f} (target >= 0.9), "
          f"b/c {res['b_over_c']:.1f} (target >= 4)")
    if "dag" in res:
        d = res["dag"]
        print(f"DAG: {d['first_wall_s']:.0f} s, {d['generation_s']:.0f} s generating, {d['judge_scoring_s']:.0f} s "
              f"in judge scorers; {d['non_generation_share']:.0%} not generating (target <= 15%), "
              f"{d['overhead_share_excluding_judge']:.0%} neither generating nor judging; "
              f"unchanged re-run {d['unchanged_rerun_wall_s']:.0f} s = {d['rerun_share']:.1%} (target <= 5%)")


if __name__ == "__main__":
    main()
