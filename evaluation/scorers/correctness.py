"""Correctness against the dataset's reference answer, where a row has one:

- `correctness_embedding`: cosine similarity of answer and reference
  embeddings (all-MiniLM-L6-v2), clipped to [0, 1];
- `correctness_token_f1`: SQuAD-style token F1 (lower-cased, punctuation and
  articles removed) between answer and reference;
- `correctness`: their mean, the headline a suite can weight.

A row without a reference, or an empty answer, is NaN (not scored).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import numpy as np

from evaluation.scorers import Scorer, ScoringContext, ScoringItem, register_scorer
from evaluation.scorers._embeddings import embed

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_tokens(text: str) -> list[str]:
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@register_scorer("correctness")
class Correctness(Scorer):
    version = "1"

    def cache_params(self, ctx: ScoringContext) -> dict:
        from evaluation.scorers._embeddings import embedding_identity

        return {"embeddings": embedding_identity()}
    metrics = ("correctness", "correctness_embedding", "correctness_token_f1")

    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict[str, float]]:
        nan = {m: math.nan for m in self.metrics}
        usable = [i for i in items if i.example.reference and i.result.text.strip()]
        vec = embed([i.example.reference for i in usable] + [i.result.text.strip() for i in usable])
        out = []
        for it in items:
            ref, answer = it.example.reference, it.result.text.strip()
            if not ref or not answer:
                out.append(dict(nan))
                continue
            emb = min(1.0, max(0.0, float(np.dot(vec[ref], vec[answer]))))
            f1 = token_f1(answer, ref)
            out.append({"correctness": (emb + f1) / 2, "correctness_embedding": emb, "correctness_token_f1": f1})
        return out
