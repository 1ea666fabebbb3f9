"""Where things live. Everything is project-local by default (the state
directory `.llmops/` in the working directory) and overridable by env vars:

LLMOPS_HOME            state directory (Airflow home, MLflow DB and artifacts,
                       converted models, engine records and logs, cache, runs)
LLMOPS_MODELS_DIR      converted bundled models (default LLMOPS_HOME/models)
LLMOPS_ENGINE_PYTHON   python of the engine virtualenv (vLLM CPU build)
LLMOPS_CACHE           result cache (generations, scores): a directory or
                       gs://bucket/prefix (default LLMOPS_HOME/cache)
LLMOPS_ARTIFACT_STORE  artifact store for the promotion ledger: a directory or
                       gs://bucket/prefix (default LLMOPS_HOME/store)
MLFLOW_TRACKING_URI    tracking + registry store; default sqlite in LLMOPS_HOME
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_SUITE = REPO_ROOT / "suites" / "default.yaml"


def home() -> Path:
    p = Path(os.environ.get("LLMOPS_HOME") or Path.cwd() / ".llmops").resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def engine_python() -> Path:
    return Path(os.environ.get("LLMOPS_ENGINE_PYTHON") or REPO_ROOT / ".venv-engine" / "bin" / "python")


def models_dir() -> Path:
    return Path(os.environ.get("LLMOPS_MODELS_DIR") or home() / "models").resolve()


def cache_uri() -> str:
    """Generation and score cache: a directory or gs://bucket/prefix."""
    return os.environ.get("LLMOPS_CACHE") or str(home() / "cache")


def runs_dir() -> Path:
    return home() / "runs"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def artifact_store_uri() -> str:
    return os.environ.get("LLMOPS_ARTIFACT_STORE") or str(home() / "store")


def artifact_root() -> str:
    return (home() / "mlartifacts").as_uri()


def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
