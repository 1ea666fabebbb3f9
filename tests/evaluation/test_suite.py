"""Suite loading and validation, schedule reading, configuration identity."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from evaluation.candidates import Config, SamplingParams, expand_configs
from evaluation.errors import SuiteError
from evaluation.suite import DEFAULT_SCHEDULE, load_suite, read_schedule

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SUITE = REPO / "suites" / "default.yaml"
TINY = REPO / "tests" / "data" / "tiny_rag.jsonl"


# --------------------------------------------------------------------------- #
# The bundled suite
# --------------------------------------------------------------------------- #


def test_default_suite_expands_to_eight_unique_configs():
    suite = load_suite(DEFAULT_SUITE)
    assert suite.name == "world-facts-rag"
    assert suite.source_path == str(DEFAULT_SUITE.resolve())
    assert suite.dataset_path == (DEFAULT_SUITE.parent / "data" / "world_facts_rag.jsonl").resolve()

    configs = expand_configs(suite)
    assert len(configs) == 8
    ids = [c.config_id for c in configs]
    assert len(set(ids)) == 8
    assert all(len(i) == 12 for i in ids)
    # Every model x template x temperature combination is present exactly once.
    combos = {(c.model, c.template_name, c.sampling.temperature) for c in configs}
    assert combos == {
        (m, t, temp)
        for m in ("smollm2-135m-instruct", "gemma3-270m")
        for t in ("grounded", "terse")
        for temp in (0.0, 0.7)
    }
    apis = {c.model: c.api for c in configs}
    assert apis == {"smollm2-135m-instruct": "chat", "gemma3-270m": "completions"}


def test_default_suite_digest_is_stable_across_loads():
    a = load_suite(DEFAULT_SUITE)
    b = load_suite(DEFAULT_SUITE)
    assert a is not b
    assert a.digest == b.digest
    assert len(a.digest) == 16
    assert [c.config_id for c in expand_configs(a)] == [c.config_id for c in expand_configs(b)]


def test_digest_changes_with_content(tmp_path):
    p1 = _write(tmp_path / "one", _base_suite())
    changed = _base_suite()
    changed["gate"]["max_failed_rate"] = 0.5
    p2 = _write(tmp_path / "two", changed)
    same = _write(tmp_path / "three", _base_suite())
    assert load_suite(p1).digest != load_suite(p2).digest
    # The digest does not depend on where the file lives.
    assert load_suite(p1).digest == load_suite(same).digest


# --------------------------------------------------------------------------- #
# Invalid suites
# --------------------------------------------------------------------------- #


def _base_suite() -> dict:
    return {
        "name": "unit-suite",
        "dataset": {"path": "tiny_rag.jsonl"},
        "candidates": [
            {"name": "model-a", "source": {"base_url": "http://localhost:8000/v1"}, "api": "chat"},
            {"name": "model-b", "source": {"bundled": "gemma3-270m"}, "api": "completions"},
        ],
        "search_space": {
            "temperature": [0.0, 0.7],
            "prompt_templates": [
                {"name": "plain", "template": "Context: {context}\nQuestion: {question}\nAnswer:"},
            ],
        },
        "scoring": {
            "scorers": ["relevance", "groundedness", "latency"],
            "weights": {"relevance": 0.5, "groundedness": 0.4, "latency": 0.1},
        },
        "gate": {"max_failed_rate": 0.2, "min_scored_examples": 1},
        "registered_model": "unit-model",
        "schedule": "0 3 * * *",
    }


def _write(directory: Path, suite: dict | str, dataset: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if dataset:
        shutil.copy(TINY, directory / "tiny_rag.jsonl")
    p = directory / "suite.yaml"
    p.write_text(suite if isinstance(suite, str) else yaml.safe_dump(suite, sort_keys=False))
    return p


def test_base_suite_is_valid(tmp_path):
    """Guard for the invalid cases below: each differs from this valid suite
    by exactly one fault."""
    suite = load_suite(_write(tmp_path, _base_suite()))
    assert suite.dataset_path == (tmp_path / "tiny_rag.jsonl").resolve()
    assert len(expand_configs(suite)) == 4
    assert suite.schedule == "0 3 * * *"


def _unknown_top(s):
    s["nmae"] = "typo"


def _unknown_nested(s):
    s["search_space"]["temprature"] = [0.3]


def _wrong_type(s):
    s["gate"]["max_failed_rate"] = "high"


def _two_sources(s):
    s["candidates"][0]["source"] = {"base_url": "http://localhost:8000/v1", "path": "/models/x"}


def _bad_placeholder(s):
    s["search_space"]["prompt_templates"][0]["template"] = "{foo} {question}"


def _missing_dataset(s):
    s["dataset"]["path"] = "does_not_exist.jsonl"


def _unknown_weight(s):
    s["scoring"]["weights"] = {"relevance": 0.5, "fluency": 0.5}


def _unknown_scorer(s):
    s["scoring"]["scorers"] = ["relevance", "bleurt"]
    s["scoring"]["weights"] = {"relevance": 1.0}


def _duplicate_candidates(s):
    s["candidates"][1]["name"] = "model-a"


def _unknown_floor(s):
    s["gate"]["floors"] = {"relevnace": 0.3}


def _unknown_ceiling(s):
    s["gate"]["ceilings"] = {"bias": 0.1}  # no bias scorer selected


def _inverted_bounds(s):
    s["dataset"]["min_question_chars"] = 100
    s["dataset"]["max_question_chars"] = 10


INVALID = [
    pytest.param(_unknown_top, ["nmae", "unknown field"], id="unknown-top-level-key"),
    pytest.param(_unknown_nested, ["search_space.temprature", "unknown field"], id="unknown-nested-key"),
    pytest.param(_wrong_type, ["gate.max_failed_rate"], id="wrong-type"),
    pytest.param(_two_sources, ["candidates.0.source", "exactly one"], id="two-sources"),
    pytest.param(
        _bad_placeholder, ["search_space.prompt_templates.0.template", "foo"], id="unknown-placeholder"
    ),
    pytest.param(_missing_dataset, ["dataset.path", "does_not_exist.jsonl"], id="missing-dataset"),
    pytest.param(_unknown_weight, ["scoring.weights", "fluency"], id="unknown-weight-metric"),
    pytest.param(_unknown_scorer, ["scoring.scorers", "bleurt"], id="unknown-scorer"),
    pytest.param(_duplicate_candidates, ["candidates", "duplicate", "model-a"], id="duplicate-candidates"),
    pytest.param(_unknown_floor, ["gate.floors", "relevnace"], id="unknown-floor-metric"),
    pytest.param(_unknown_ceiling, ["gate.ceilings", "bias"], id="unknown-ceiling-metric"),
    pytest.param(_inverted_bounds, ["dataset", "min_question_chars (100) > max_question_chars (10)"],
                 id="inverted-length-bounds"),
]


def test_duplicate_yaml_keys_are_rejected(tmp_path):
    text = yaml.safe_dump(_base_suite(), sort_keys=False) + "gate: {max_failed_rate: 0.9}\n"
    path = _write(tmp_path, text)
    with pytest.raises(SuiteError, match="duplicate key 'gate'") as exc:
        load_suite(path)
    assert str(path.resolve()) in str(exc.value)


@pytest.mark.parametrize("mutate, needles", INVALID)
def test_invalid_suite_names_file_and_field(tmp_path, mutate, needles):
    s = copy.deepcopy(_base_suite())
    mutate(s)
    path = _write(tmp_path, s)
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    msg = str(exc.value)
    assert str(path.resolve()) in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in error message:\n{msg}"


def test_invalid_yaml_names_file(tmp_path):
    path = _write(tmp_path, "name: x\ncandidates: [unclosed\n  - {a: 1\n")
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    msg = str(exc.value)
    assert str(path.resolve()) in msg
    assert "not valid YAML" in msg


def test_top_level_not_a_mapping(tmp_path):
    path = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(SuiteError, match="mapping") as exc:
        load_suite(path)
    assert str(path.resolve()) in str(exc.value)


def test_source_path_cannot_be_set_from_yaml(tmp_path):
    s = _base_suite()
    s["source_path"] = "/elsewhere/suite.yaml"
    path = _write(tmp_path, s)
    with pytest.raises(SuiteError, match="source_path") as exc:
        load_suite(path)
    assert str(path.resolve()) in str(exc.value)


def test_missing_suite_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SuiteError, match="not found") as exc:
        load_suite(path)
    assert str(path.resolve()) in str(exc.value)


def test_several_errors_are_all_reported(tmp_path):
    s = _base_suite()
    s["search_space"]["temprature"] = [0.3]
    s["gate"]["max_failed_rate"] = "high"
    path = _write(tmp_path, s)
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    msg = str(exc.value)
    assert "2 error(s)" in msg
    assert "search_space.temprature" in msg
    assert "gate.max_failed_rate" in msg


# --------------------------------------------------------------------------- #
# read_schedule
# --------------------------------------------------------------------------- #


def test_read_schedule_of_valid_suite(tmp_path):
    assert read_schedule(_write(tmp_path, _base_suite())) == "0 3 * * *"
    assert read_schedule(DEFAULT_SUITE) == "@daily"


def test_read_schedule_none_disables(tmp_path):
    s = _base_suite()
    s["schedule"] = None
    assert read_schedule(_write(tmp_path, s)) is None


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("name: x\ncandidates: [unclosed\n  - {a: 1\n", id="invalid-yaml"),
        pytest.param("- a\n- list\n", id="not-a-mapping"),
        pytest.param("name: no-schedule-key\n", id="no-schedule-key"),
    ],
)
def test_read_schedule_defaults_for_broken_file(tmp_path, content):
    path = tmp_path / "suite.yaml"
    path.write_text(content)
    assert read_schedule(path) == DEFAULT_SCHEDULE == "@daily"


def test_read_schedule_missing_file_does_not_raise(tmp_path):
    assert read_schedule(tmp_path / "missing.yaml") == "@daily"


# --------------------------------------------------------------------------- #
# Configuration identity
# --------------------------------------------------------------------------- #


def _config(**overrides) -> Config:
    sampling = overrides.pop("sampling", SamplingParams(0.0, 1.0, -1, 64, 1234))
    base = dict(
        model="model-a",
        api="chat",
        sampling=sampling,
        template_name="plain",
        template="Q: {question}\nC: {context}",
        system=None,
        source={"base_url": "http://localhost:8000/v1"},
    )
    base.update(overrides)
    return Config(**base)


def test_config_id_identical_for_identical_configs():
    a, b = _config(), _config()
    assert a is not b
    assert a.config_id == b.config_id
    assert a == b


def test_config_id_changes_with_temperature():
    a = _config()
    b = _config(sampling=dataclasses.replace(a.sampling, temperature=0.7))
    assert a.config_id != b.config_id


def test_config_id_changes_with_template():
    a = _config()
    b = _config(template="Question: {question}\nContext: {context}")
    assert a.config_id != b.config_id
    assert a.template_hash != b.template_hash
    c = _config(system="Be terse.")
    assert c.config_id != a.config_id


def test_config_id_changes_with_model_and_api():
    a = _config()
    assert _config(model="model-b").config_id != a.config_id
    assert _config(api="completions").config_id != a.config_id


def test_source_does_not_affect_config_id():
    a = _config(source={"base_url": "http://localhost:8000/v1"})
    b = _config(source={"path": "/models/model-a"})
    c = _config(source={})
    assert a.config_id == b.config_id == c.config_id
    assert a == b


def test_config_json_roundtrip_keeps_id():
    a = _config()
    b = Config.from_json(a.to_json())
    assert b.config_id == a.config_id
    assert b.source == a.source


def test_same_config_same_id_across_suites(tmp_path):
    """A candidate served from a different source in another suite keeps its id."""
    s1 = _base_suite()
    s2 = _base_suite()
    s2["candidates"][0]["source"] = {"path": "/models/model-a"}
    ids1 = {c.label: c.config_id for c in expand_configs(load_suite(_write(tmp_path / "a", s1)))}
    ids2 = {c.label: c.config_id for c in expand_configs(load_suite(_write(tmp_path / "b", s2)))}
    assert ids1 == ids2
