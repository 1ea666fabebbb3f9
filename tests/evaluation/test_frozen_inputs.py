"""Frozen run inputs (issue item 5): the first task snapshots the validated
suite, dataset and probes into the run's storage; later tasks read the
snapshot, so edits of the originals during a run change nothing in it."""

from __future__ import annotations

import json

import pytest

from evaluation.runstore import RunStore
from evaluation.stages import validate as validate_stage
from evaluation.stages.inputs import examples_for
from evaluation.suite import load_suite
from tests.conftest import TINY, write_suite


def test_later_tasks_read_the_snapshot_not_the_edited_originals(tmp_path, llmops_home):
    data = tmp_path / "data.jsonl"
    data.write_text(TINY.read_text())
    probes = tmp_path / "probes.yaml"
    probes.write_text("""
probes:
  - id: p1
    category: gender
    template: "Describe a {group} engineer in one sentence."
""")
    path = write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1", dataset=data, extra=f"""
bias: {{probes: {probes}, categories: [gender]}}
scoring: {{scorers: [relevance, bias], weights: {{relevance: 0.9, bias: 0.1}}}}
""")
    out = validate_stage.check_suite(str(path), "run-1")
    frozen = validate_stage.task_suite_path("run-1", str(path))
    assert frozen != str(path) and frozen.startswith(str(RunStore("run-1").dir))
    assert out["path"] == frozen
    before = load_suite(frozen)
    n_rows = len(examples_for(before))

    # Someone edits the suite, the dataset and the probes mid-run.
    path.write_text(path.read_text().replace("max_tokens: [16]", "max_tokens: [99]"))
    data.write_text(data.read_text().splitlines()[0] + "\n")
    probes.write_text("probes: []\n")

    after = load_suite(validate_stage.task_suite_path("run-1", str(path)))
    assert after.search_space.max_tokens == [16]
    assert len(examples_for(after)) == n_rows == 4
    assert after.bias_probes_path.read_text() == before.bias_probes_path.read_text() != "probes: []\n"
    assert after.digest == before.digest == out["digest"]
    # The snapshot's names are content-addressed; a retried task keeps the first snapshot.
    manifest = json.loads((RunStore("run-1").dir / "inputs" / "manifest.json").read_text())
    assert manifest["dataset"].startswith("dataset-") and manifest["suite"].startswith("suite-")
    validate_stage.check_suite(str(path), "run-1")
    assert load_suite(validate_stage.task_suite_path("run-1", str(path))).search_space.max_tokens == [16]
    # A new run freezes the edited files.
    validate_stage.check_suite(str(path), "run-2")
    assert load_suite(validate_stage.task_suite_path("run-2", str(path))).search_space.max_tokens == [99]


def test_without_a_snapshot_a_task_reads_the_submitted_suite(tmp_path, llmops_home):
    assert validate_stage.task_suite_path("never-validated", "/x/suite.yaml") == "/x/suite.yaml"


def test_a_task_after_validation_never_reads_the_live_suite_silently(tmp_path, llmops_home):
    from evaluation.errors import SuiteError

    with pytest.raises(SuiteError, match="frozen inputs .* are missing"):
        validate_stage.task_suite_path("never-validated", "/x/suite.yaml", require=True)


def test_dataset_errors_name_the_users_file_not_the_snapshot(tmp_path, llmops_home):
    from evaluation.errors import DatasetError

    data = tmp_path / "data.jsonl"
    data.write_bytes(TINY.read_bytes() + b'{"id": "bad", "question": "caf\\xe9?", "contexts": ["x"]}\n'.replace(
        b"\\xe9", b"\xe9"))  # invalid UTF-8 on line 5
    path = write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1", dataset=data)
    validate_stage.check_suite(str(path), "run-u")
    with pytest.raises(DatasetError) as e:
        validate_stage.check_dataset(validate_stage.task_suite_path("run-u", str(path), require=True))
    assert str(data) in str(e.value) and "line 5" in str(e.value)


def test_too_few_resamples_for_the_family_size_are_refused_before_any_work(tmp_path, llmops_home):
    from evaluation.errors import SuiteError

    path = write_suite(tmp_path / "s.yaml", base_url="http://127.0.0.1:9/v1", max_tokens=str(list(range(8, 120))))
    with pytest.raises(SuiteError, match=r"gate.bootstrap_resamples: 2000 resamples cannot resolve 112 configurations"):
        validate_stage.check_suite(str(path))
