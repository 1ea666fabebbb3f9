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
