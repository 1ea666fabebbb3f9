from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_rag.jsonl"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def llmops_home(tmp_path, monkeypatch) -> Path:
    """An isolated state directory and MLflow store for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("LLMOPS_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    return home


def write_suite(path: Path, *, base_url: str, model: str = "fake", extra: str = "", dataset: Path = TINY,
                max_tokens: str = "[16]", name: str = "unit") -> Path:
    path.write_text(f"""
name: {name}
dataset: {{path: {dataset}}}
candidates:
  - name: {model}
    source: {{base_url: {base_url}}}
search_space:
  temperature: [0.0]
  max_tokens: {max_tokens}
  prompt_templates:
    - name: grounded
      template: "Answer using the context.\\n\\nContext:\\n{{context}}\\n\\nQuestion: {{question}}\\nAnswer:"
gate: {{min_scored_examples: 2}}
generation: {{concurrency: 2, request_timeout_s: 5, max_retries: 1, ready_timeout_s: 10}}
registered_model: unit-model
{extra}
""")
    return path


JUDGE_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def judge_endpoint(tmp_path_factory):
    """A real local judge: vLLM CPU serving the bundled SmolLM2 model, one per
    test session. LLMOPS_TEST_JUDGE_URL (e.g. http://127.0.0.1:8765/v1)
    reuses a server that is already running instead. Slow to start (about a
    minute); only tests marked slow use it."""
    from evaluation import settings
    from evaluation.scorers import JudgeEndpoint
    from serving.engine import EngineManager
    from serving.models import materialize, model_fingerprint

    models = Path(os.environ.get("LLMOPS_MODELS_DIR") or REPO / ".llmops" / "models")
    model_dir = materialize(JUDGE_MODEL, models, settings.engine_python())
    ident = f"{model_fingerprint(model_dir)}/test"
    url = os.environ.get("LLMOPS_TEST_JUDGE_URL")
    if url:
        yield JudgeEndpoint(base_url=url.rstrip("/"), model=JUDGE_MODEL, identity=ident, timeout_s=120)
        return
    mgr = EngineManager(tmp_path_factory.mktemp("judge-engine"), settings.engine_python())
    rec = mgr.launch(JUDGE_MODEL, model_dir, max_model_len=2048)
    try:
        mgr.wait(rec, timeout_s=600)
        yield JudgeEndpoint(base_url=rec.base_url, model=JUDGE_MODEL, identity=ident, timeout_s=120)
    finally:
        mgr.stop(JUDGE_MODEL)
