"""Exact token attributions of a cosine between two mean-pooled embeddings (pure tensor math).

A GRACE embedding is the L2-normalised mean of the pooled hidden states (GRACE paper, arXiv 2510.04506); an
LLM2Vec-Gen embedding is the mean of its K aligned vectors (LLM2Vec-Gen paper, arXiv 2603.10913); both are means, and a mean
is linear. With ``m_a = mean_i h_i`` (n rows) and ``e_a = m_a / |m_a|``:

    cos(a, b) = e_a . e_b = sum_i  (h_i . e_b) / (n |m_a|)

so ``c_i = (h_i . e_b) / (n |m_a|)`` is token i's exact share of the cosine, and the shares of
one side's tokens sum to the cosine (up to float rounding; the sums run in float64). The same
holds for b's tokens seen from ``e_a``: each side gets its own exact split. A positive share
pulls the two texts together, a negative one pushes them apart.
"""

from __future__ import annotations

import torch


def token_contributions(states: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Each row's share of ``cos(mean(states), other)``: (n, D), (D,) -> (n,) float64.

    ``states`` are the pooled vectors of one text (hidden states of its pooled tokens, or
    LLM2Vec-Gen's aligned vectors); ``other`` is the other text's embedding (any norm).
    """
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"states must be (n >= 1, D), got {tuple(states.shape)}")
    h = states.double()
    mean = h.mean(dim=0)  # (D,)
    norm = mean.norm()
    if norm == 0:
        return torch.zeros(h.shape[0], dtype=torch.float64)
    unit_other = other.double() / other.double().norm().clamp_min(1e-300)  # (D,)
    return (h @ unit_other) / (h.shape[0] * norm)  # (n,)


def pair_attributions(states_a: torch.Tensor, states_b: torch.Tensor
                      ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(cosine, shares of a's rows, shares of b's rows); each share vector sums to the cosine."""
    mean_a, mean_b = states_a.double().mean(dim=0), states_b.double().mean(dim=0)
    cosine = float(torch.nn.functional.cosine_similarity(mean_a, mean_b, dim=0))
    return cosine, token_contributions(states_a, mean_b), token_contributions(states_b, mean_a)
