"""Cache keys, composed in one place.

Each key is the hash of every input that changes the cached result and of
nothing else. Generation: the model's identity (weights content, tokenizer,
chat template, output-changing engine flags, or what a remote endpoint
reports), the engine version, the API, sampling parameters and seed, the
rendered prompt and the version of the rendering code. Score: the
generation's key, the scorer's name and version, and the scorer's own
parameters (embedding model identity, judge identity, latency budget, ...).
Validation: the dataset's content and the bounds checked.

tests/evaluation/test_keys.py changes each input alone and checks that the
key changes, and that nothing else does.
"""

from __future__ import annotations

from evaluation.hashing import sha256_json

GENERATIONS, SCORES, VALIDATIONS = "generations", "scores", "validations"


def cache_key(**parts: object) -> str:
    return sha256_json(parts)


def generation_key(config, example, endpoint: dict) -> str:
    """`config`: evaluation.candidates.Config; `example`:
    evaluation.dataset.Example; `endpoint`: the model's identity (see
    serving.endpoints.identify)."""
    return cache_key(
        kind="generation",
        model=config.model,
        model_fingerprint=endpoint["model_fingerprint"],
        engine=endpoint["engine"],
        api=config.api,
        sampling=config.identity()["sampling"],
        template=config.template_hash,
        example=example.digest,
    )


def score_key(scorer_name: str, scorer_version: str, params: dict, generation_key_: str) -> str:
    return cache_key(kind="score", scorer=scorer_name, version=scorer_version, params=params,
                     generation=generation_key_)  # fmt: skip


def validation_key(dataset_digest: str, bounds: dict, version: int = 2) -> str:
    return cache_key(kind="validation", dataset=dataset_digest, bounds=bounds, version=version)
