"""Exact token attributions of a cosine between two mean-pooled (or weight-pooled) embeddings
(pure tensor math).

A GRACE embedding is the L2-normalised mean of the pooled hidden states (GRACE paper, arXiv 2510.04506); an
LLM2Vec-Gen embedding is the mean of its K aligned vectors (LLM2Vec-Gen paper, arXiv 2603.10913); both are means, and a mean
is linear. With ``m_a = mean_i h_i`` (n rows) and ``e_a = m_a / |m_a|``:

    cos(a, b) = e_a . e_b = sum_i  (h_i . e_b) / (n |m_a|)

so ``c_i = (h_i . e_b) / (n |m_a|)`` is token i's exact share of the cosine, and the shares of
one side's tokens sum to the cosine (up to float rounding; the sums run in float64). The same
holds for b's tokens seen from ``e_a``: each side gets its own exact split. A positive share
pulls the two texts together, a negative one pushes them apart. Any fixed weighted sum
``p = sum_i w_i h_i`` splits the same way (``c_i = w_i (h_i . e_b) / |p|``): GRACE's balanced
pooling, where a text's tokens share one half of the weight and its rationale's the other.
"""

from __future__ import annotations

import torch


def token_contributions(states: torch.Tensor, other: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's share of ``cos(sum_i w_i h_i, other)``: (n, D), (D,) -> (n,) float64.

    ``states`` are the pooled vectors of one text (hidden states of its pooled tokens, or
    LLM2Vec-Gen's aligned vectors); ``other`` is the other text's embedding (any norm).
    ``weights`` (n,): each row's weight in the pooled vector (GRACE's balanced pooling,
    grace.models.pooling.token_weights); None: the mean (1/n each). With ``p = sum_i w_i h_i`` the
    share is ``w_i (h_i . e_other) / |p|``, and the shares still sum to the cosine.
    """
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"states must be (n >= 1, D), got {tuple(states.shape)}")
    h = states.double()
    w = _weights(weights, h.shape[0])
    pooled = w @ h  # (D,)
    norm = pooled.norm()
    if norm == 0:
        return torch.zeros(h.shape[0], dtype=torch.float64)
    unit_other = other.double() / other.double().norm().clamp_min(1e-300)  # (D,)
    return w * (h @ unit_other) / norm  # (n,)


def _weights(weights: torch.Tensor | None, n: int) -> torch.Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    if weights.shape != (n,):
        raise ValueError(f"weights must be ({n},), one per row, got {tuple(weights.shape)}")
    return weights.double()


def pair_attributions(states_a: torch.Tensor, states_b: torch.Tensor,
                      weights_a: torch.Tensor | None = None, weights_b: torch.Tensor | None = None
                      ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(cosine, shares of a's rows, shares of b's rows); each share vector sums to the cosine.
    ``weights_a``/``weights_b``: the rows' pooling weights (``token_contributions``)."""
    pooled_a = _weights(weights_a, states_a.shape[0]) @ states_a.double()
    pooled_b = _weights(weights_b, states_b.shape[0]) @ states_b.double()
    cosine = float(torch.nn.functional.cosine_similarity(pooled_a, pooled_b, dim=0))
    return (cosine, token_contributions(states_a, pooled_b, weights_a),
            token_contributions(states_b, pooled_a, weights_b))
