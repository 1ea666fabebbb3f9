"""Groundedness: for each answer sentence, its best support (cosine
similarity) among the context sentences; the example's score is the mean over
answer sentences, clipped to [0, 1]. An answer with no sentence is NaN."""

from __future__ import annotations

import math

import numpy as np

from evaluation.scorers import Scorer, ScoringContext, ScoringItem, register_scorer
from evaluation.scorers._embeddings import embed, split_sentences


@register_scorer("groundedness")
class Groundedness(Scorer):
    version = "2"

    def cache_params(self, ctx: ScoringContext) -> dict:
        from evaluation.scorers._embeddings import embedding_identity

        return {"embeddings": embedding_identity()}

    def score(self, items: list[ScoringItem], ctx: ScoringContext) -> list[dict[str, float]]:
        answer_sents = [split_sentences(i.result.text) for i in items]
        context_sents = [[s for c in i.example.contexts for s in split_sentences(c)] for i in items]
        vec = embed([s for group in answer_sents + context_sents for s in group])
        out = []
        for a_sents, c_sents in zip(answer_sents, context_sents):
            if not a_sents or not c_sents:
                out.append({"groundedness": math.nan})
                continue
            A = np.stack([vec[s] for s in a_sents])
            C = np.stack([vec[s] for s in c_sents])
            best = (A @ C.T).max(axis=1)
            out.append({"groundedness": float(np.clip(best, 0.0, 1.0).mean())})
        return out
