"""GRACE rewards: contrastive signals turned into one scalar per trained rollout.

Pure tensor functions. Every embedding given here is already L2-normalised, so cosine is a
dot product. B = instances (groups) in the global batch, G = rollouts per group, D = width.
``h_x`` below is the pooled, normalised embedding of text x with one rationale.

Every variant returns ``R = finalize(R_CL + l1*R_consist + l2*R_hard)``, where ``finalize``
multiplies by ``scale`` (= 1/tau) and then REPLACES the reward of a truncated rollout (hit the
length limit without EOS) by ``truncation_penalty`` (= -gamma), unscaled: the reference code
writes ``-1`` over the reward, it does not scale it. Defaults are the reference run's:
l1 = l2 = 0.2, scale = 10 (tau = 0.1), penalty = -1. R_consist of rollout k is always its mean
cosine to the other G-1 rollouts of its group (0 when G == 1). "In-batch" terms average over
the other B-1 groups of the batch passed in (0 when B == 1).

Supervised variants (one (q, d+, d-) triplet per group i):

* ``supervised_paper`` -- the paper's formulas: M >= 1 negatives, summed;
  R_CL = cos(q, d+_k) - sum_m cos(q, d-^m); R_hard_i = -1/(B-1) sum_{j!=i} max_l cos(q_i, d+_j^l)
  (the most similar of the other group's positive rollouts, averaged over the other groups).
* ``supervised_reference`` -- the public reference code (GasolSun36/GRACE,
  verl/workers/reward_manager/grace.py): the paper's formulas with exactly one negative per
  triplet. q and d- get one rationale each, d+ gets G (the trained rollouts);
  R_CL = cos(q, d+_k) - cos(q, d-), R_hard as the paper (max over l, mean over j).
  KNOWN FLAW of both (upstream issue #4): -cos(q, d-) and R_hard do not depend on k, so they
  are constant within a group and vanish under group-mean centring WHEN NO ROLLOUT OF THE GROUP
  IS TRUNCATED; only cos(q, d+_k) and R_consist reach the gradient then. A truncated rollout's
  reward is replaced by the penalty while its siblings keep ``scale * raw``, and raw includes
  the group-constant terms, so with a truncated rollout in a group those terms move the gap to
  the penalty, and the advantages of the whole group with it (tested both ways).
* ``supervised_decoupled`` -- ours, not in the paper: q AND d+ get G trained rollouts each;
  d- keeps one untrained rationale. With q_bar / p_bar the normalised means of a group's query /
  positive rollouts, a query rollout k gets
  R_CL = cos(q_ik, p_bar_i) - cos(q_ik, d-_i)  (how well it separates d+ from d-),
  R_hard = -1/(B-1) sum_{j!=i} cos(q_ik, p_bar_j), and R_consist among the q_i rollouts;
  a positive rollout is scored the same way with the roles of q and d+ swapped. Every term
  depends on rollout k, so every term survives centring. Centroids include truncated rollouts.
  Output rows: the B query groups, then the B positive groups.

Unsupervised (``unsupervised``, reference code; SimCSE-like): one anchor rationale and G
trained rollouts of the same text x_i. R_CL = cos(anchor_i, x_ik),
R_hard = -1/(B-1) sum_{j!=i} cos(x_ik, anchor_j). Every term already depends on k. The paper
gives no separate unsupervised formula, so every variant uses this one.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grace.config.methods import MODES, VARIANTS


@dataclass
class RewardOutput:
    total: torch.Tensor  # (N, G) final reward per trained rollout, after scale and truncation penalty
    components: dict[str, torch.Tensor]  # each (N, G), unscaled: "contrastive", "consistency", "hard"


def consistency(rollouts: torch.Tensor) -> torch.Tensor:
    """Mean cosine of each rollout to the other rollouts of its group; zeros when G == 1."""
    G = rollouts.shape[1]
    if G == 1:
        return rollouts.new_zeros(rollouts.shape[:2])
    sims = rollouts @ rollouts.transpose(1, 2)  # (B, G, G)
    return (sims.sum(-1) - sims.diagonal(dim1=1, dim2=2)) / (G - 1)  # (B, G)


def _mean_over_others(sims: torch.Tensor) -> torch.Tensor:
    """sims (B, B, ...) indexed [i, j, ...] -> (B, ...): mean over j != i; zeros when B == 1."""
    B = sims.shape[0]
    if B == 1:
        return sims.new_zeros(sims.shape[1:])
    eye = torch.eye(B, dtype=torch.bool, device=sims.device)  # (B, B)
    eye = eye.view(B, B, *([1] * (sims.dim() - 2)))
    return sims.masked_fill(eye, 0.0).sum(1) / (B - 1)  # (B, ...)


def finalize(raw: torch.Tensor, truncated: torch.Tensor, scale: float, truncation_penalty: float) -> torch.Tensor:
    """raw * scale, except truncated rollouts, which get the (unscaled) penalty instead."""
    return torch.where(truncated, torch.full_like(raw, truncation_penalty), raw * scale)  # (N, G)


def _combine(contrastive, consist, hard, truncated, consistency_weight, hard_weight, scale, truncation_penalty):
    raw = contrastive + consistency_weight * consist + hard_weight * hard  # (N, G)
    components = {"contrastive": contrastive, "consistency": consist, "hard": hard}
    return RewardOutput(finalize(raw, truncated, scale, truncation_penalty), components)


def supervised_reference(q, pos, neg, truncated, *, consistency_weight=0.2, hard_weight=0.2,
                         scale=10.0, truncation_penalty=-1.0) -> RewardOutput:
    """q (B, D), pos (B, G, D) trained, neg (B, D) (one per triplet), truncated (B, G) ->
    rewards of pos rollouts: ``supervised_paper`` with M = 1."""
    if neg.dim() != 2:
        raise ValueError(f"the reference variant takes one negative per triplet, (B, D); got "
                         f"{tuple(neg.shape)} (use variant 'paper' for several)")
    return supervised_paper(q, pos, neg, truncated, consistency_weight=consistency_weight,
                            hard_weight=hard_weight, scale=scale,
                            truncation_penalty=truncation_penalty)


def supervised_paper(q, pos, neg, truncated, *, consistency_weight=0.2, hard_weight=0.2,
                     scale=10.0, truncation_penalty=-1.0) -> RewardOutput:
    """q (B, D), pos (B, G, D) trained, neg (B, M, D) (or (B, D) for M = 1), truncated (B, G)."""
    if neg.dim() == 2:
        neg = neg.unsqueeze(1)  # (B, 1, D)
    G = pos.shape[1]
    neg_sum = torch.einsum("bd,bmd->b", q, neg)  # (B,) sum over the M negatives
    contrastive = torch.einsum("bd,bgd->bg", q, pos) - neg_sum.unsqueeze(1)  # (B, G)
    hard = -_mean_over_others(torch.einsum("id,jld->ijl", q, pos).amax(-1))  # (B,)
    hard = hard.unsqueeze(1).expand(-1, G)  # (B, G)
    return _combine(contrastive, consistency(pos), hard, truncated,
                    consistency_weight, hard_weight, scale, truncation_penalty)


def _decoupled_side(x, other_centroid, neg):
    """Terms for the trained rollouts x (B, G, D) against the other side's centroids (B, D)."""
    contrastive = torch.einsum("bgd,bd->bg", x, other_centroid) - torch.einsum("bgd,bd->bg", x, neg)  # (B, G)
    hard = -_mean_over_others(torch.einsum("ikd,jd->ijk", x, other_centroid))  # (B, G)
    return contrastive, consistency(x), hard


def supervised_decoupled(q, pos, neg, truncated_q, truncated_pos, *, consistency_weight=0.2,
                         hard_weight=0.2, scale=10.0, truncation_penalty=-1.0) -> RewardOutput:
    """q (B, G, D) and pos (B, G, D) trained, neg (B, D) -> rows [query groups; positive groups]."""
    q_bar = F.normalize(q.mean(1), dim=-1)  # (B, D)
    p_bar = F.normalize(pos.mean(1), dim=-1)  # (B, D)
    q_terms = _decoupled_side(q, p_bar, neg)
    p_terms = _decoupled_side(pos, q_bar, neg)
    contrastive, consist, hard = (torch.cat(pair, 0) for pair in zip(q_terms, p_terms))  # each (2B, G)
    truncated = torch.cat([truncated_q, truncated_pos], 0)  # (2B, G)
    return _combine(contrastive, consist, hard, truncated,
                    consistency_weight, hard_weight, scale, truncation_penalty)


def unsupervised(anchor, rollouts, truncated, *, consistency_weight=0.2, hard_weight=0.2,
                 scale=10.0, truncation_penalty=-1.0) -> RewardOutput:
    """anchor (B, D) untrained, rollouts (B, G, D) trained, truncated (B, G)."""
    contrastive = torch.einsum("bd,bgd->bg", anchor, rollouts)  # (B, G)
    hard = -_mean_over_others(torch.einsum("ikd,jd->ijk", rollouts, anchor))  # (B, G)
    return _combine(contrastive, consistency(rollouts), hard, truncated,
                    consistency_weight, hard_weight, scale, truncation_penalty)


_UNSUP = (unsupervised, ("anchor", "rollouts"), ("rollouts",))
# (variant, mode) -> (function, embedding keys, truncation-mask keys), in argument order.
_DISPATCH = {
    ("reference", "supervised"): (supervised_reference, ("query", "positive", "negative"), ("positive",)),
    ("paper", "supervised"): (supervised_paper, ("query", "positive", "negative"), ("positive",)),
    ("decoupled", "supervised"): (supervised_decoupled, ("query", "positive", "negative"), ("query", "positive")),
    **{(v, "unsupervised"): _UNSUP for v in VARIANTS},
}


def compute_rewards(variant: str, mode: str, embeddings: dict, truncated: dict, **weights) -> RewardOutput:
    """Call the reward function for (variant, mode) with the tensors named in ``_DISPATCH``.

    ``weights`` are the keyword arguments of the reward functions (consistency_weight,
    hard_weight, scale, truncation_penalty).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r}; expected one of {VARIANTS}")
    if mode not in MODES:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {MODES}")
    fn, emb_keys, trunc_keys = _DISPATCH[(variant, mode)]
    missing = [k for k in emb_keys if k not in embeddings] + [k for k in trunc_keys if k not in truncated]
    if missing:
        raise ValueError(f"{variant}/{mode} rewards need {missing}")
    args = [embeddings[k] for k in emb_keys] + [truncated[k] for k in trunc_keys]
    return fn(*args, **weights)
