"""The run report lists suspected prompt injections: in the terminal report
(format_report), in last_report.json (the report task, promote.final_report)
and in `llmops report`, which reads last_report.json back."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from evaluation.report import format_report
from evaluation.stages.promote import final_report
from tests.conftest import write_suite

LLMOPS = str(Path(sys.executable).with_name("llmops"))
CFG = "smollm2-135m-instruct-abc123"


def _row(cid: str, rank: int) -> dict:
    return {"rank": rank, "config_id": cid, "model": "smollm2-135m-instruct", "template": "terse",
            "sampling": "t=0.7", "composite": 0.61, "failed_rate": 0.0, "eligible": True, "note": ""}  # fmt: skip


def _sweep() -> dict:
    return {
        "experiment_id": "1",
        "parent_run_id": "p1",
        "leaderboard": [_row(CFG, 1), _row("gemma3-270m-def456", 2)],
        "suspected_injections": {CFG: ["row-07", "row-31"]},
    }


def _decision() -> dict:
    return {"registered_model": "unit-model", "version": "2", "aliases_before": {}, "aliases": {"champion": "2"},
            "comparison": [], "decision": {"outcome": "PROMOTE", "reasons": ["no current champion"]}}  # fmt: skip


def _report(suspected: dict | None) -> dict:
    rep = {"suite": "unit", "dataset": {"rows": 48, "digest": "d"}, "airflow_run_id": "r1", "tracking_uri": "sqlite://",
           "experiment": "e", "experiment_id": "1", "parent_run_id": "p1", "leaderboard": _sweep()["leaderboard"],
           **_decision()}  # fmt: skip
    if suspected is not None:
        rep["suspected_injections"] = suspected
    return rep


def test_terminal_report_lists_suspected_injections_per_configuration():
    text = format_report(_report({CFG: ["row-07", "row-31"]}))
    lines = [x for x in text.splitlines() if "row-07" in x]
    assert lines, text
    assert "row-31" in lines[0] and CFG in lines[0]
    assert "injection" in text.lower()


def test_terminal_report_says_when_no_answer_looked_like_an_injection():
    for suspected in ({}, None):  # None: a report written before the field existed
        text = format_report(_report(suspected))
        assert "Suspected prompt injections: none" in text, text


def test_last_report_json_carries_the_sweeps_suspected_injections(tmp_path, llmops_home):
    suite = write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1")
    rep = final_report(str(suite), {"rows": 4, "digest": "d"}, _sweep(), _decision(), {"run_id": "r1"})
    assert rep["suspected_injections"] == {CFG: ["row-07", "row-31"]}
    saved = json.loads((llmops_home / "last_report.json").read_text())
    assert saved["suspected_injections"] == {CFG: ["row-07", "row-31"]}
    assert not math.isnan(saved["leaderboard"][0]["composite"])


def test_llmops_report_prints_the_suspected_injections(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "last_report.json").write_text(json.dumps(_report({CFG: ["row-07", "row-31"]})))
    env = {**os.environ, "LLMOPS_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    out = subprocess.run([LLMOPS, "report"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "row-07" in out.stdout and "row-31" in out.stdout and CFG in out.stdout
