"""Answer relevance: cosine similarity of question and answer embeddings,
clipped to [0, 1]. An empty answer is scored NaN (nothing to compare)."""

from __future__ import annotations

import math

import numpy as np

from evaluation.scorers import Scorer, ScoringContext, ScoringItem, register_scorer
from evaluation.scorers._embeddings import embed


@register_scorer("relevance")
class AnswerRelevance(Scorer):
    version = "1"

    def cache_params(self, ctx: ScoringContext) -> dict:
        from evaluation.scorers._embeddings import embedding_identity

        return {"embeddings": embedding_identity()}

    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict[str, float]]:
        texts = [i.example.question for i in items] + [i.result.text.strip() for i in items if i.result.text.strip()]
        vec = embed(texts)
        out = []
        for it in items:
            answer = it.result.text.strip()
            if not answer:
                out.append({"relevance": math.nan})
                continue
            sim = float(np.dot(vec[it.example.question], vec[answer]))
            out.append({"relevance": min(1.0, max(0.0, sim))})
        return out
