"""The Lee document-similarity benchmark (Lee, Pincombe & Welsh, 2005), as shipped in the
gensim wheel's test data: 50 news documents (``lee.cor``) and the mean human similarity
rating of every pair (``similarities0-1.txt``, a 50 x 50 matrix on a 0-1 scale whose upper
triangle holds the ratings) -> 1,225 pairs.

Score: correlation between the cosine of the two documents' embeddings and the human rating,
over the 1,225 pairs: Spearman (the main score, as for MTEB STS) and Pearson (the metric of the
original paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import pearsonr, spearmanr

from grace.data.readers import gensim_test_file


@dataclass
class LeeResult:
    spearman: float
    pearson: float
    num_pairs: int


def load_lee() -> tuple[list[str], np.ndarray]:
    """The 50 documents and the (50, 50) human similarity matrix."""
    # lee.cor is Latin-1 (a pound sign on line 41), as gensim's own tutorial reads it.
    docs = gensim_test_file("lee.cor").read_text(encoding="latin-1").splitlines()
    ratings = np.loadtxt(gensim_test_file("similarities0-1.txt"))
    if ratings.shape != (len(docs), len(docs)):
        raise ValueError(f"Lee ratings have shape {ratings.shape}, expected {len(docs)} x {len(docs)}")
    return docs, ratings


def score_lee(embeddings: np.ndarray, ratings: np.ndarray) -> LeeResult:
    """Correlate cosine similarities of normalised ``embeddings`` (50, D) with the ratings."""
    cos = embeddings @ embeddings.T  # (50, 50)
    upper = np.triu_indices(len(ratings), k=1)
    model_sim, human = cos[upper], ratings[upper]  # (1225,)
    return LeeResult(
        spearman=float(spearmanr(model_sim, human).statistic),
        pearson=float(pearsonr(model_sim, human).statistic),
        num_pairs=int(len(human)),
    )
