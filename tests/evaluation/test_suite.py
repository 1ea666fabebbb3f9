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


# --------------------------------------------------------------------------- #
# Fields that could only fail late are refused with the suite
# --------------------------------------------------------------------------- #


def _load_err(tmp_path, s: dict) -> str:
    path = _write(tmp_path, s)
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    msg = str(exc.value)
    assert str(path.resolve()) in msg
    return msg


@pytest.mark.parametrize(
    "template, needle",
    [
        pytest.param("{question:>50000000}", "format spec", id="format-spec"),
        pytest.param("{context:10} {question}", "format spec", id="format-spec-context"),
        pytest.param("{question!r}", "conversion", id="conversion"),
        pytest.param("{question.__class__}", "attribute or index", id="attribute"),
        pytest.param("{question[0]}", "attribute or index", id="index"),
        pytest.param("{}", "positional", id="positional"),
        pytest.param("{question", "not a valid template", id="unbalanced"),
    ],
)
def test_template_placeholders_are_plain_names(tmp_path, template, needle):
    s = _base_suite()
    s["search_space"]["prompt_templates"][0]["template"] = template
    msg = _load_err(tmp_path, s)
    assert "search_space.prompt_templates.0.template" in msg
    assert needle in msg, msg


def test_escaped_braces_are_literal_text(tmp_path):
    s = _base_suite()
    s["search_space"]["prompt_templates"][0]["template"] = 'Reply as JSON {{"answer": ...}}. {question}'
    load_suite(_write(tmp_path, s))


def _mlflow_refuses(name: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException:
        return True
    return False


@pytest.mark.parametrize("name", ["org/model", "model:v1", "..", ".", "../x", "a/../b", " ", "models:/x"])
def test_registered_model_names_mlflow_refuses_are_refused(tmp_path, name):
    assert _mlflow_refuses(name)  # the oracle: MLflow's own check
    s = _base_suite()
    s["registered_model"] = name
    msg = _load_err(tmp_path, s)
    assert "registered_model" in msg


@pytest.mark.parametrize("name", ["it's", 'say "x"', "back\\slash"])
def test_registered_model_names_that_break_registry_filters_are_refused(tmp_path, name):
    s = _base_suite()
    s["registered_model"] = name
    assert "registered_model" in _load_err(tmp_path, s)


@pytest.mark.parametrize("name", ["llmops-world-facts", "my model v2", "team.rag_champion"])
def test_registered_model_names_mlflow_accepts_are_accepted(tmp_path, name):
    assert not _mlflow_refuses(name)
    s = _base_suite()
    s["registered_model"] = name
    assert load_suite(_write(tmp_path, s)).registered_model == name


@pytest.mark.parametrize("schedule", ["@daily", "@hourly", "@weekly", "@once", "0 3 * * *", "*/15 * * * 1-5", None])
def test_valid_schedules(tmp_path, schedule):
    s = _base_suite()
    s["schedule"] = schedule
    path = _write(tmp_path, s)
    assert load_suite(path).schedule == schedule
    assert read_schedule(path) == schedule


@pytest.mark.parametrize("schedule", ["@dialy", "61 * * * *", "* * *", "every day", "0 0 * * * *", "", 5])
def test_invalid_schedule_fails_validation_but_not_dag_parsing(tmp_path, schedule):
    s = _base_suite()
    s["schedule"] = schedule
    msg = _load_err(tmp_path, s)
    assert "schedule" in msg
    # DAG parse time: never raises, falls back to the default schedule.
    assert read_schedule(tmp_path / "suite.yaml") == DEFAULT_SCHEDULE


def test_max_tokens_must_fit_the_managed_engines_context(tmp_path):
    s = _base_suite()
    s["candidates"][1]["max_model_len"] = 512
    s["search_space"]["max_tokens"] = [64, 512]
    msg = _load_err(tmp_path, s)
    assert "model-b" in msg and "max_model_len" in msg and "512" in msg
    # An existing endpoint's context length is its own business.
    s["candidates"][1]["max_model_len"] = 2048
    s["candidates"][0]["max_model_len"] = 512
    load_suite(_write(tmp_path / "ok", s))


def test_judge_sharing_a_candidates_name_must_share_its_source(tmp_path):
    s = _base_suite()
    s["judge"] = {"name": "model-b", "source": {"bundled": "smollm2-135m-instruct"}}
    msg = _load_err(tmp_path, s)
    assert "judge" in msg and "model-b" in msg
    s["judge"]["source"] = {"bundled": "gemma3-270m"}
    load_suite(_write(tmp_path / "ok", s))


def test_candidate_names_may_be_served_names_with_slash_and_colon(tmp_path):
    s = _base_suite()
    s["candidates"][0]["name"] = "org/model-name:tag"
    configs = expand_configs(load_suite(_write(tmp_path, s)))
    assert {c.model for c in configs} == {"org/model-name:tag", "model-b"}


@pytest.mark.parametrize("name", ["", "two words", "tab\there", "new\nline"])
def test_candidate_names_without_whitespace(tmp_path, name):
    s = _base_suite()
    s["candidates"][0]["name"] = name
    assert "candidates.0.name" in _load_err(tmp_path, s)


# --------------------------------------------------------------------------- #
# Credentials (the key itself never enters the suite)
# --------------------------------------------------------------------------- #


def test_api_key_env_is_a_name_kept_in_the_suite(tmp_path):
    s = _base_suite()
    s["candidates"][0]["source"]["api_key_env"] = "MODEL_A_KEY"
    suite = load_suite(_write(tmp_path, s))
    assert suite.candidates[0].source.api_key_env == "MODEL_A_KEY"


@pytest.mark.parametrize(
    "source, needle",
    [
        pytest.param({"bundled": "gemma3-270m", "api_key_env": "K"}, "base_url", id="managed-source"),
        pytest.param({"base_url": "http://h/v1", "api_key_env": "K", "api_key_file": "/run/k"}, "one of",
                     id="both"),
        pytest.param({"base_url": "http://h/v1", "api_key_env": "not a name"}, "api_key_env", id="bad-var-name"),
        pytest.param({"base_url": "http://h/v1", "api_key_file": "keys/k.txt"}, "absolute", id="relative-file"),
        pytest.param({"base_url": "ftp://h/v1"}, "base_url", id="not-http"),
        pytest.param({"base_url": "http://"}, "base_url", id="no-host"),
    ],
)
def test_bad_credential_and_endpoint_fields(tmp_path, source, needle):
    s = _base_suite()
    s["candidates"][0]["source"] = source
    msg = _load_err(tmp_path, s)
    assert "candidates.0.source" in msg and needle in msg, msg


# --------------------------------------------------------------------------- #
# Per-candidate search spaces and explicit configurations
# --------------------------------------------------------------------------- #


def test_candidate_search_space_overrides_the_suites_per_key(tmp_path):
    s = _base_suite()
    s["candidates"][1]["search_space"] = {"temperature": [0.2], "max_tokens": [32, 48]}
    configs = expand_configs(load_suite(_write(tmp_path, s)))
    a = [c for c in configs if c.model == "model-a"]
    b = [c for c in configs if c.model == "model-b"]
    assert sorted(c.sampling.temperature for c in a) == [0.0, 0.7]
    assert {(c.sampling.temperature, c.sampling.max_tokens) for c in b} == {(0.2, 32), (0.2, 48)}
    assert {c.template_name for c in b} == {"plain"}  # inherited from the suite's search space


def test_candidate_search_space_is_validated_like_the_suites(tmp_path):
    s = _base_suite()
    s["candidates"][1]["search_space"] = {"temperature": [3.0]}
    msg = _load_err(tmp_path, s)
    assert "candidates.1.search_space.temperature" in msg and "[0, 2]" in msg


def test_explicit_configurations_besides_the_grid_are_deduplicated(tmp_path):
    s = _base_suite()
    s["configurations"] = [
        {"model": "model-b", "template": "plain", "temperature": 0.3, "top_p": 0.9, "max_tokens": 40},
        {"model": "model-a", "template": "plain", "temperature": 0.0},  # already a grid point
    ]
    s["search_space"]["max_tokens"] = [96]
    configs = expand_configs(load_suite(_write(tmp_path, s)))
    assert len(configs) == 5  # 4 grid points + 1 new one
    extra = [c for c in configs if c.sampling.temperature == 0.3]
    assert len(extra) == 1
    c = extra[0]
    assert (c.model, c.api, c.template_name, c.sampling.top_p, c.sampling.max_tokens) == \
        ("model-b", "completions", "plain", 0.9, 40)  # fmt: skip


def test_explicit_configurations_only(tmp_path):
    s = _base_suite()
    templates = s.pop("search_space")["prompt_templates"]
    s["prompt_templates"] = templates
    s["configurations"] = [
        {"model": "model-a", "template": "plain", "temperature": 0.5, "seed": 7},
        {"model": "model-b", "template": "plain"},
    ]
    configs = expand_configs(load_suite(_write(tmp_path, s)))
    assert [(c.model, c.sampling.temperature, c.sampling.seed) for c in configs] == \
        [("model-a", 0.5, 7), ("model-b", 0.0, 1234)]  # fmt: skip


@pytest.mark.parametrize(
    "entry, needles",
    [
        pytest.param({"model": "model-c", "template": "plain"}, ["configurations.0", "model-c", "model-a"],
                     id="unknown-model"),
        pytest.param({"model": "model-a", "template": "fancy"}, ["configurations.0", "fancy", "plain"],
                     id="unknown-template"),
        pytest.param({"model": "model-a", "template": "plain", "temperature": 5}, ["configurations.0.temperature"],
                     id="bad-temperature"),
        pytest.param({"model": "model-a", "template": "plain", "topp": 0.5}, ["configurations.0.topp"],
                     id="unknown-key"),
    ],
)
def test_bad_explicit_configuration_is_named(tmp_path, entry, needles):
    s = _base_suite()
    s["configurations"] = [entry]
    msg = _load_err(tmp_path, s)
    for needle in needles:
        assert needle in msg, msg


def test_a_candidate_without_configurations_is_refused(tmp_path):
    s = _base_suite()
    s["prompt_templates"] = s.pop("search_space")["prompt_templates"]
    s["configurations"] = [{"model": "model-a", "template": "plain"}]
    msg = _load_err(tmp_path, s)
    assert "model-b" in msg and "no configurations" in msg


def test_a_template_name_means_one_template(tmp_path):
    s = _base_suite()
    s["candidates"][1]["search_space"] = {
        "prompt_templates": [{"name": "plain", "template": "Other text: {question}"}]
    }
    msg = _load_err(tmp_path, s)
    assert "plain" in msg and "two different" in msg
