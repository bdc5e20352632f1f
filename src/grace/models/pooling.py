"""Pooling (SPEC 1.2): masked mean of last-layer hidden states, then L2 normalisation.

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


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (N, T, D) over positions where ``mask`` (N, T) is set -> (N, D)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (N, T, 1)
    total = (hidden * weights).sum(dim=1)  # (N, D)
    count = weights.sum(dim=1).clamp(min=1.0)  # (N, 1)
    return total / count


def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean in float32, L2-normalised: the embedding. (N, T, D), (N, T) -> (N, D)."""
    return F.normalize(masked_mean(hidden.float(), mask), dim=-1)
