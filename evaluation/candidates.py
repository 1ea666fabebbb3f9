"""Candidate configurations: model x sampling parameters x prompt template.

A configuration is what gets deployed (inference configuration, not weights).
Its id is a content hash of everything that changes its answers: the served
model name *and the model's identity* (weights content, tokenizer, chat
template and output-changing engine flags, or what a remote endpoint reports;
see serving.models.model_fingerprint), sampling parameters and seed, the
prompt template. The same configuration has the same id in every run and
suite, which is what lets the pipeline recognise the champion; new weights
under an old name are a new configuration.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from evaluation.hashing import sha256_json
from evaluation.suite import Suite


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int

    def short(self) -> str:
        k = "off" if self.top_k == -1 else self.top_k
        return f"t={self.temperature:g} p={self.top_p:g} k={k} max={self.max_tokens}"


@dataclass(frozen=True)
class Config:
    model: str  # served model name
    api: str  # "chat" | "completions"
    sampling: SamplingParams
    template_name: str
    template: str
    system: str | None = None
    # The model's identity (serving.models.model_fingerprint or
    # remote_fingerprint); set by the plan stage, part of config_id.
    model_identity: str = ""
    # Not part of the identity: where the model is served from in this run.
    source: dict = field(default_factory=dict, compare=False)

    @property
    def template_hash(self) -> str:
        return sha256_json({"system": self.system, "template": self.template})[:12]

    @property
    def config_id(self) -> str:
        return sha256_json(self.identity())[:12]

    @property
    def label(self) -> str:
        return f"{self.model} | {self.template_name} | {self.sampling.short()}"

    def identity(self) -> dict:
        return {
            "model": self.model,
            "api": self.api,
            "sampling": asdict(self.sampling),
            "template": self.template,
            "system": self.system,
            "model_identity": self.model_identity,
        }

    def to_json(self) -> dict:
        return {
            "config_id": self.config_id,
            "model": self.model,
            "api": self.api,
            "sampling": asdict(self.sampling),
            "template_name": self.template_name,
            "template": self.template,
            "system": self.system,
            "model_identity": self.model_identity,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Config":
        return cls(
            model=d["model"],
            api=d["api"],
            sampling=SamplingParams(**d["sampling"]),
            template_name=d["template_name"],
            template=d["template"],
            system=d.get("system"),
            model_identity=d.get("model_identity") or "",
            source=d.get("source") or {},
        )

    def mlflow_params(self) -> dict:
        s = self.sampling
        return {
            "config_id": self.config_id,
            "model": self.model,
            "model_identity": self.model_identity,
            "api": self.api,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "max_tokens": s.max_tokens,
            "seed": s.seed,
            "prompt_template": self.template_name,
            "prompt_template_hash": self.template_hash,
        }


def expand_configs(suite: Suite) -> list[Config]:
    """Every configuration of the suite: each candidate's grid (its search
    space: the suite's, with the keys the candidate overrides replaced), then
    the explicit `configurations`; a configuration listed twice is kept once."""
    configs: list[Config] = []

    def add(cand, tpl, sampling: SamplingParams) -> None:
        configs.append(Config(model=cand.name, api=cand.api, sampling=sampling, template_name=tpl.name,
                              template=tpl.template, system=tpl.system,
                              source=cand.source.model_dump(exclude_none=True)))  # fmt: skip

    for cand in suite.candidates:
        ss = suite.space_for(cand)
        if ss is None:
            continue
        for tpl, temp, top_p, top_k, max_tokens in itertools.product(
            ss.prompt_templates, ss.temperature, ss.top_p, ss.top_k, ss.max_tokens
        ):
            add(cand, tpl, SamplingParams(temp, top_p, top_k, max_tokens, ss.seed))
    by_name = {c.name: c for c in suite.candidates}
    templates = suite.templates
    for ec in suite.configurations:
        add(by_name[ec.model], templates[ec.template],
            SamplingParams(ec.temperature, ec.top_p, ec.top_k, ec.max_tokens, ec.seed))  # fmt: skip
    seen: set[str] = set()
    unique = []
    for c in configs:
        if c.config_id not in seen:
            seen.add(c.config_id)
            unique.append(c)
    return unique


def render_context(contexts: tuple[str, ...] | list[str]) -> str:
    return "\n\n".join(f"[{i}] {c.strip()}" for i, c in enumerate(contexts, start=1))
