"""Fixtures for engine-lifecycle tests: a fake engine program started by the
real EngineManager (see fake_engine.py for why)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

FAKE = Path(__file__).with_name("fake_engine.py")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def launches(model_dir: Path) -> list[int]:
    log = model_dir / "launches.log"
    return [int(x.split()[0]) for x in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake_engines(tmp_path, llmops_home, monkeypatch):
    """LLMOPS_ENGINE_PYTHON -> a wrapper running fake_engine.py; returns a
    factory of model directories with the given fake behaviour. Kills any
    fake engine of this test left running (only those under tmp_path)."""
    wrapper = tmp_path / "engine-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("LLMOPS_ENGINE_PYTHON", str(wrapper))

    def model(name: str, **behaviour) -> Path:
        d = tmp_path / "models" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(name.encode())
        (d / "fake_engine.json").write_text(json.dumps(behaviour))
        return d

    yield model
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(FAKE) in cmd and str(tmp_path) in cmd:
                os.kill(int(p.name), signal.SIGKILL)


def models_spec(*dirs: Path) -> dict:
    return {d.name: {"source": {"path": str(d)}, "max_model_len": 2048} for d in dirs}
