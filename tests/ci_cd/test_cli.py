"""The llmops console script: help text, and bad input rejected before any
expensive work (no Airflow DB, no engine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LLMOPS = str(Path(sys.executable).with_name("llmops"))


def run(*args, home: Path, timeout=120):
    env = {**os.environ, "LLMOPS_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    return subprocess.run([LLMOPS, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def test_help_documents_the_commands(tmp_path):
    out = run("--help", home=tmp_path)
    assert out.returncode == 0
    for cmd in ("run", "validate", "ui", "models", "engines", "scorers", "report", "rollback", "ledger"):
        assert cmd in out.stdout
    run_help = run("run", "--help", home=tmp_path).stdout
    assert "--suite" in run_help and "--keep-engines" in run_help


def test_run_with_a_bad_suite_fails_fast_naming_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "suites" / "default.yaml").read_text().replace("top_p:", "top_pp:"))
    out = run("run", "--suite", str(bad), home=tmp_path / "home")
    assert out.returncode == 2
    assert str(bad) in out.stderr and "search_space.top_pp" in out.stderr
    assert not (tmp_path / "home" / "airflow").exists()  # nothing started


def test_validate_reports_bad_rows(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"id": "a", "question": "What is one plus one?", "contexts": ["One plus one is two."]}\n'
        '{"id": "a", "question": "", "contexts": ["x"]}\n'
    )
    suite = tmp_path / "s.yaml"
    suite.write_text((REPO / "suites" / "default.yaml").read_text().replace("data/world_facts_rag.jsonl", str(data)))
    out = run("validate", "--suite", str(suite), home=tmp_path / "home")
    assert out.returncode == 2
    assert "duplicate id" in out.stderr and "['a']" in out.stderr and "column 'question'" in out.stderr


def test_validate_bundled_suite(tmp_path):
    out = run("validate", home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    assert "8 configurations" in out.stdout and "48 rows" in out.stdout


def test_scorers_lists_the_registry(tmp_path):
    out = run("scorers", home=tmp_path)
    assert out.returncode == 0
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    for name in ("relevance", "groundedness", "latency", "correctness", "bias", "trulens_answer_relevance",
                 "trulens_context_relevance", "trulens_groundedness", "ragas_faithfulness",
                 "ragas_response_relevancy", "ragas_context_precision"):  # fmt: skip
        assert name in lines
    assert "judge" in lines["ragas_faithfulness"] and "judge" not in lines["relevance"]
    assert "lower" in lines["bias"] and "per config" in lines["bias"]


def test_rollback_with_an_empty_ledger_fails_clearly(tmp_path):
    out = run("rollback", "--registered-model", "nothing-yet", home=tmp_path / "home")
    assert out.returncode == 2
    assert "nothing-yet" in out.stderr and "is empty; nothing to roll back to" in out.stderr


def test_ledger_of_an_unknown_model_is_empty(tmp_path):
    out = run("ledger", "--registered-model", "nothing-yet", home=tmp_path / "home")
    assert out.returncode == 0 and "is empty" in out.stdout
