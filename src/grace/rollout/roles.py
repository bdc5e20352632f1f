"""Which texts get which rationales in one GRACE step (GRACE paper, arXiv 2510.04506), and how their embeddings
are laid out for the reward functions.

Two generation calls per step:
- *context* rationales: one per text at ``context_temperature`` (0.5), never trained;
- *trained* rationales: G per text at ``temperature`` (1.0); these are the groups.

| mode / variant | context texts | trained groups |
|---|---|---|
| unsupervised (all) | anchor x_i | x_i |
| supervised reference, paper | q_i, then d-_i | d+_i |
| supervised decoupled | d-_i | q_i, then d+_i |

Rows are instance-major inside each role block, e.g. context ``[q_0..q_{B-1}, d-_0..d-_{B-1}]``;
trained rows are group-major (group 0's G rollouts first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grace.data.readers import Triplet


@dataclass
class RolloutPlan:
    context_texts: list[str]  # one rationale each, at context_temperature
    trained_texts: list[str]  # one group of G rationales each, at temperature


def plan_rollouts(mode: str, variant: str, records: list) -> RolloutPlan:
    if mode == "unsupervised":
        return RolloutPlan(list(records), list(records))
    queries = [r.query for r in records]
    positives = [r.positive for r in records]
    negatives = [r.negative for r in records]
    if variant == "decoupled":
        return RolloutPlan(negatives, queries + positives)
    return RolloutPlan(queries + negatives, positives)


def reward_inputs(
    mode: str,
    variant: str,
    context: torch.Tensor,
    trained: torch.Tensor,
    truncated: torch.Tensor,
    num_rollouts: int,
) -> tuple[dict, dict]:
    """Name the embeddings for ``grace.grpo.rewards.compute_rewards``.

    context (C, D), trained (T*G, D), truncated (T*G,) -> (embeddings, truncation masks).
    """
    G = num_rollouts
    groups = trained.view(-1, G, trained.shape[-1])  # (T, G, D)
    trunc = truncated.view(-1, G)  # (T, G)
    if mode == "unsupervised":
        return {"anchor": context, "rollouts": groups}, {"rollouts": trunc}
    if variant == "decoupled":
        B = context.shape[0]
        return (
            {"query": groups[:B], "positive": groups[B:], "negative": context},
            {"query": trunc[:B], "positive": trunc[B:]},
        )
    B = context.shape[0] // 2
    return (
        {"query": context[:B], "positive": groups, "negative": context[B:]},
        {"positive": trunc},
    )


def num_groups_per_instance(mode: str, variant: str) -> int:
    """Trained groups per data record (2 for supervised decoupled, else 1)."""
    return 2 if (mode == "supervised" and variant == "decoupled") else 1


def context_blocks(mode: str, variant: str) -> int:
    """Context rationales per data record."""
    return 2 if (mode == "supervised" and variant != "decoupled") else 1


__all__ = ["RolloutPlan", "Triplet", "plan_rollouts", "reward_inputs"]
