"""Pooling (GRACE paper, arXiv 2510.04506): masked mean of last-layer hidden states, then L2 normalisation.

Pure functions. The mask convention used everywhere in grace: 1 (or True) marks a position
that counts, 0 a position that is ignored (padding, the system prefix, tokens after EOS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: the first real token gets position 0."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (N, T)


def pooling_mask(attention_mask: torch.Tensor, pool_start: torch.Tensor) -> torch.Tensor:
    """Real tokens at or after ``pool_start`` (the first token past the system prefix)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    after_prefix = positions[None, :] >= pool_start[:, None]  # (N, T)
    return attention_mask.bool() & after_prefix  # (N, T)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is set: over everything (``dim=None``: a
    loss's token-mean) or along ``dim``. ``mask`` may have fewer dims than ``x``; the trailing
    ones broadcast (hidden (N, T, D) with mask (N, T), ``dim=1`` -> (N, D)). An empty mask gives
    0 (verl divides by sum + 1e-8: also 0)."""
    m = mask.to(x.dtype)
    m = m.reshape(m.shape + (1,) * (x.dim() - m.dim())).expand_as(x)  # broadcast over trailing dims
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1e-8)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1e-8)


def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean in float32, L2-normalised: the embedding. (N, T, D), (N, T) -> (N, D)."""
    return F.normalize(masked_mean(hidden.float(), mask, dim=1), dim=-1)
