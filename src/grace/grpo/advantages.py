"""Group-relative advantages (GRPO outcome advantages, one scalar per rollout).

A_k = R_k - mean_group(R): Dr.GRPO style, no division by the group's std by default (the GRACE
reference run). With ``normalize_std`` A_k is further divided by (std + eps), std unbiased as in
verl. The trainer broadcasts A_k to every response token of rollout k.
Deviation from verl: a group of one rollout (G == 1) gets advantage 0 (verl uses mean 0, std 1,
i.e. the raw reward), since a lone rollout has no baseline to compare with.
"""

import torch


def group_advantages(rewards: torch.Tensor, normalize_std: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """rewards (N, G), one row per group -> advantages (N, G)."""
    if rewards.shape[1] == 1:
        return torch.zeros_like(rewards)
    adv = rewards - rewards.mean(dim=1, keepdim=True)  # (N, G)
    if normalize_std:
        adv = adv / (rewards.std(dim=1, keepdim=True, unbiased=True) + eps)  # (N, G)
    return adv
