"""Served model names are names, never paths: a candidate called
`org/model-name:tag` (how vLLM, Ollama and hosted APIs name models) goes
through every stage, is sent to the endpoint exactly as written, and every
file named after it stays inside its directory. The endpoint is the fake
OpenAI-compatible server (tests/helpers/fake_openai.py)."""

from __future__ import annotations

from pathlib import Path

from evaluation import settings
from evaluation.runstore import RunStore, safe_name
from tests.conftest import write_suite
from tests.helpers.fake_openai import Behaviour, FakeOpenAI
from tests.helpers.pipeline import run_stages

NAME = "org/model-name:tag"


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_served_name_with_slash_and_colon_goes_through_every_stage(tmp_path, llmops_home):
    with FakeOpenAI(Behaviour(models=(NAME,))) as srv:
        suite = str(write_suite(tmp_path / "s.yaml", base_url=srv.base_url, model=f'"{NAME}"'))
        out = run_stages(suite, "manual__2026-01-01T00:00:00+00:00")
    # Sent as written, in every request.
    assert srv.b.bodies and {b["model"] for b in srv.b.bodies} == {NAME}
    (config,) = out["configs"]
    assert config["model"] == NAME
    (summary,), = out["generated"]
    assert summary["generated"] == 4 and summary["failed"] == 0
    assert out["scored"][0]["metrics"]["coverage"] == 1.0
    assert out["report"]["leaderboard"][0]["model"] == NAME
    # Files named after the model or the run: one flat file each, in the run's directory.
    store = RunStore("manual__2026-01-01T00:00:00+00:00")
    assert store.dir.parent == settings.runs_dir()
    timing = store.path(store.generation_timing_name(NAME))
    assert timing.is_file() and timing.parent == store.dir
    assert timing.name == f"timing-{safe_name(NAME)}.json"
    for p in _files_under(llmops_home):
        assert ":" not in p.name, p  # nothing in the state directory is named with the raw name
    assert not (store.dir / "org").exists() and not (llmops_home / "org").exists()


def test_a_managed_engine_named_with_slash_and_colon(tmp_path, llmops_home, monkeypatch):
    """The same name served by an engine the pipeline starts: its record,
    lock and log files are flat files in the state directory. The engine
    program is tests/serving/fake_engine.py (vLLM takes a minute to start)
    behind the real EngineManager."""
    import sys

    from serving import ownership
    from serving.endpoints import manager

    fake = Path(__file__).parents[1] / "serving" / "fake_engine.py"
    wrapper = tmp_path / "engine-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("LLMOPS_ENGINE_PYTHON", str(wrapper))
    model_dir = tmp_path / "models" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights")
    suite = tmp_path / "s.yaml"
    write_suite(suite, base_url="unused", model=f'"{NAME}"')
    suite.write_text(suite.read_text().replace("source: {base_url: unused}", f"source: {{path: {model_dir}}}"))
    run_id = "managed-1"
    try:
        out = run_stages(str(suite), run_id)
        assert out["endpoints"][NAME]["managed"] and out["generated"][0][0]["generated"] == 4
        (rec,) = manager().list()
        assert rec.name == NAME
        for f in (Path(rec.log_file), *(llmops_home / "engines").iterdir()):
            assert f.parent in (llmops_home / "engines", llmops_home / "logs"), f
            assert safe_name(NAME) in f.name
    finally:
        ownership.stop_launched(run_id)
    assert manager().list() == []
