"""Stress a vLLM CPU server with seeded sampling requests, with and without
chunked prefill (see docs/engine-notes.md for why that matters).

    .venv/bin/python benchmarks/seeded_stress.py                  # our launch flags
    .venv/bin/python benchmarks/seeded_stress.py --chunked-prefill  # vLLM's default

Prints and writes (benchmarks/out/seeded_stress.json) how many of the
requests succeeded, the wall time and tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path

from evaluation import settings
from evaluation.candidates import Config, SamplingParams
from evaluation.dataset import load_examples
from evaluation.errors import EngineUnavailable
from evaluation.generation import generate_async
from serving.engine import EngineManager
from serving.models import materialize

MODEL = "smollm2-135m-instruct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunked-prefill", action="store_true", help="launch with vLLM's default chunked prefill")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="passes over the 48 bundled rows")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model_dir = materialize(MODEL, settings.models_dir(), settings.engine_python())
    mgr = EngineManager(tempfile.mkdtemp(prefix="stress-"), settings.engine_python())
    extra = ["--enable-chunked-prefill", "--max-num-batched-tokens", "2048"] if args.chunked_prefill else []
    rec = mgr.launch(MODEL, model_dir, extra_args=extra)
    examples = load_examples(settings.REPO_ROOT / "suites/data/world_facts_rag.jsonl") * args.repeat
    cfg = Config(MODEL, "chat", SamplingParams(0.7, 0.95, -1, 64, 1234), "t",
                 "Context:\n{context}\n\nQuestion: {question}\nAnswer:")  # fmt: skip
    done: list = []
    result = {"chunked_prefill": args.chunked_prefill, "requests": len(examples), "concurrency": args.concurrency}
    try:
        mgr.wait(rec, 600)
        t0 = time.monotonic()
        try:
            asyncio.run(generate_async(rec.base_url, cfg, examples, concurrency=args.concurrency, timeout_s=120,
                                       max_retries=0, on_result=done.append))  # fmt: skip
            result["engine_died"] = False
        except EngineUnavailable as e:
            result["engine_died"] = True
            result["error"] = str(e)
        wall = time.monotonic() - t0
        toks = sum(r.completion_tokens or 0 for r in done)
        result.update(succeeded=sum(r.success for r in done), wall_s=round(wall, 1), tokens=toks,
                      tokens_per_s=round(toks / wall, 1))  # fmt: skip
    finally:
        mgr.stop(MODEL)
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    (out / "seeded_stress.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
