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
LLMOPS_SUITES_PATH     colon-separated directories the DAG's `suite` param may
                       name suites in, besides the bundled suites/ (see
                       resolve_suite)
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITES_DIR = REPO_ROOT / "suites"
BUNDLED_SUITE = SUITES_DIR / "default.yaml"


def home() -> Path:
    p = Path(os.environ.get("LLMOPS_HOME") or Path.cwd() / ".llmops").resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def suite_roots() -> list[Path]:
    """Directories suites may come from when a DAG run names one: the bundled
    suites/ and each directory of LLMOPS_SUITES_PATH (symlinks resolved)."""
    extra = [p for p in os.environ.get("LLMOPS_SUITES_PATH", "").split(os.pathsep) if p.strip()]
    roots = [SUITES_DIR.resolve(), *(Path(p).expanduser().resolve() for p in extra)]
    return list(dict.fromkeys(roots))


def under_roots(path: str | os.PathLike) -> bool:
    real = Path(path).expanduser().resolve()
    return any(real.is_relative_to(root) for root in suite_roots())


def resolve_suite(param: str) -> str:
    """The suite file a DAG run's `suite` param names, as a real path under
    one of suite_roots(): an absolute path, or a path relative to a root
    (`default.yaml`). `..` is refused; symlinks are resolved before the check,
    so a link out of a root is refused too. Raises SuiteError naming the
    roots: a DAG run can only read suites the deployment put there."""
    from evaluation.errors import SuiteError

    roots = suite_roots()
    where = f"suite roots: {', '.join(map(str, roots))} (add directories to LLMOPS_SUITES_PATH)"
    if not isinstance(param, str) or not param.strip():
        raise SuiteError(f"suite param: empty; name a suite file under the {where}")
    given = Path(param).expanduser()
    if ".." in given.parts:
        raise SuiteError(f"suite param {param!r}: '..' is not allowed; name a suite file under the {where}")
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    for c in candidates:
        real = c.resolve()
        if not any(real.is_relative_to(root) for root in roots):
            raise SuiteError(f"suite param {param!r}: {real} is outside the {where}")
        if real.is_file():
            return str(real)
    raise SuiteError(f"suite param {param!r}: no such suite file under the {where}")


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
