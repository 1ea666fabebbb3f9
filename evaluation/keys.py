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

GENERATIONS, SCORES, VALIDATIONS, LATENCY = "generations", "scores", "validations", "latency"


def cache_key(**parts: object) -> str:
    return sha256_json(parts)


def generation_key(config, example, endpoint: dict) -> str:
    """`config`: evaluation.candidates.Config (its identity includes the
    model's identity); `example`: evaluation.dataset.Example; `endpoint`:
    carries the engine version (`engine`). The rendered request (prompt,
    system message, sampling fields actually sent) is hashed as sent, so a
    change of rendering shows up even without a RENDER_VERSION bump. The
    run's concurrency, URLs and timeouts are not part of it."""
    from evaluation.generation import RENDER_VERSION, build_request

    path, body = build_request(config, example)
    body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return cache_key(
        kind="generation",
        model_identity=config.model_identity,
        engine=endpoint["engine"],
        request={"path": path, "body": body},
        render_version=RENDER_VERSION,
    )


def score_key(scorer_name: str, scorer_version: str, params: dict, generation_key_: str, example_digest: str) -> str:
    """`params`: the scorer's own inputs (Scorer.cache_params: judge identity,
    embedding model identity, latency budget, ...); `generation_key_`: the
    answer's key; `example_digest`: the row (question, contexts, reference)."""
    from evaluation.hygiene import HYGIENE_VERSION

    return cache_key(kind="score", scorer=scorer_name, version=scorer_version, params=params,
                     generation=generation_key_, example=example_digest, hygiene_version=HYGIENE_VERSION)  # fmt: skip


def latency_key(config, endpoint: dict, load: dict) -> str:
    """A latency probe's records: the configuration (model identity
    included), the engine version, and the load it was measured under (rows
    sent, concurrency). Cached records are reused only as a whole session
    (evaluation.stages.latency)."""
    return cache_key(kind="latency", config=config.identity(), engine=endpoint["engine"], load=load, version=1)


def validation_key(dataset_digest: str, bounds: dict, version: int = 2) -> str:
    return cache_key(kind="validation", dataset=dataset_digest, bounds=bounds, version=version)
