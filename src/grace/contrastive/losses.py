"""Contrastive losses of the baselines (GRACE paper, arXiv 2510.04506): supervised InfoNCE and unsupervised SimCSE.

Pure tensor functions: embeddings in, ``(loss, stats)`` out; no model, optimizer or data.
Inputs are L2-normalised here (again, if they already are), so every score is a cosine.

InfoNCE (E5 / SimCSE-supervised style), for a batch of B (query, positive, hard negatives):

    candidates = [p_1 .. p_B ; n_1,1 .. n_1,M ; ... ; n_B,1 .. n_B,M]       (B + B*M rows)
    loss_i     = -log softmax_j( cos(q_i, c_j) / tau )[j = i]
    loss       = mean_i loss_i

so each query is scored against its own positive (the target), the positives of every other
row (in-batch negatives) and the hard negatives of EVERY row, its own and the others'. The
direction is query -> candidates only (no symmetric document -> query term), as in E5 and
SimCSE-sup. tau = 0.05 (E5; SimCSE).

SimCSE unsupervised: two dropout views z, z' of the same B texts;
``loss = mean_i -log softmax_j(cos(z_i, z'_j) / tau)[j = i]``, ONE direction (z -> z'), as in
the SimCSE reference code; it is InfoNCE with the second views as positives and no hard
negatives.

``memory`` (K, D), optional: earlier positives (detached, grace.contrastive.memory) appended
to every query's candidates as extra negatives, so each query is scored against B + B*M + K
candidates; the target is still its own positive (a cross-batch memory, XBM: Wang et al. 2020).

``stats`` (python floats, for logging): ``accuracy`` (the positive is the top candidate),
``pos_cos`` (mean cos(q_i, p_i)), ``neg_cos`` (mean over every other candidate of every query)
and, with hard negatives, ``hard_neg_cos`` (mean cos(q_i, n_i,m) of a query's own negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.05,
    memory: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """InfoNCE with in-batch, hard and memory negatives; see the module docstring.

    ``query`` (B, D), ``positive`` (B, D), ``negatives`` (B, M, D) or None, ``memory`` (K, D) or
    None -> (scalar loss, stats).
    """
    B = query.shape[0]
    q = F.normalize(query.float(), dim=-1)  # (B, D)
    candidates = [F.normalize(positive.float(), dim=-1)]  # [(B, D)]
    if negatives is not None:
        M = negatives.shape[1]
        candidates.append(F.normalize(negatives.float(), dim=-1).reshape(B * M, -1))  # (B*M, D)
    if memory is not None and len(memory):
        candidates.append(F.normalize(memory.detach().float(), dim=-1))  # (K, D)
    cos = q @ torch.cat(candidates).T  # (B, B + B*M [+ K])
    target = torch.arange(B, device=cos.device)  # (B,) row i's positive is candidate i
    loss = F.cross_entropy(cos / temperature, target)
    with torch.no_grad():
        is_target = F.one_hot(target, cos.shape[1]).bool()  # (B, B + B*M [+ K])
        stats = {
            "accuracy": float((cos.argmax(dim=1) == target).float().mean()),
            "pos_cos": float(cos[is_target].mean()),
            "neg_cos": float(cos[~is_target].mean()) if cos.shape[1] > 1 else float("nan"),
        }
        if negatives is not None:
            own = cos[:, B:B + B * M].view(B, B, M)[target, target]  # (B, M) cos(q_i, n_i,m)
            stats["hard_neg_cos"] = float(own.mean())
    return loss, stats


def simcse_unsup(
    view1: torch.Tensor, view2: torch.Tensor, temperature: float = 0.05
) -> tuple[torch.Tensor, dict]:
    """Unsupervised SimCSE, one direction (view1 -> view2). (B, D), (B, D) -> (loss, stats)."""
    return info_nce(view1, view2, None, temperature)
