"""Beyond the paper: a contrastive term on GRACE's own embeddings (``optim.contrastive_weight``).

GRPO trains the policy only through the log-probs of its rationale tokens; the embedding (the
masked mean of the last-layer hidden states over text + rationale) moves as a side effect. The
contrastive baselines train those hidden states directly, and at our budgets they gain more
(benchmarks/quality/results-budget.md). With ``optim.contrastive_weight`` > 0 each step also
embeds its texts *with* the rationales it has just sampled, with gradient, and adds
``contrastive_weight`` x InfoNCE (grace.contrastive.losses.info_nce: in-batch and hard negatives,
temperature ``optim.contrastive_temperature``) to the loss of the step's first optimizer step.
The rationales are fixed samples (no gradient through the sampling): the term trains how the
model reads text + rationale, the policy loss what it writes.

The views are rows of the step's sequences, one rollout per group (its first, a random sample):

| mode / variant | query | positive | hard negative |
|---|---|---|---|
| unsupervised | x_i + its context rationale | x_i + rollout 0 | none (in-batch only, as SimCSE) |
| supervised reference, paper | q_i + context rationale | d+_i + rollout 0 | d-_i + context rationale |
| supervised decoupled | q_i + rollout 0 | d+_i + rollout 0 | d-_i + context rationale |

Several processes: each view is gathered with gradient into the global batch
(grace.contrastive.trainers.gather_with_grad) and the loss is multiplied by the process count,
as the InfoNCE baseline does, so the update is the global batch's gradient. The forward pass
calls the (possibly wrapped) model itself with ``logits_to_keep=1``; the one kept logit enters
the loss times 0, which keeps an untied LM head in the backward (DDP). All views go through
at once, without micro-batching (as the baselines; memory grows with the batch).
"""

from __future__ import annotations

import torch

from grace.contrastive.losses import info_nce
from grace.contrastive.memory import EmbeddingMemory
from grace.contrastive.trainers import embed_rows_with_grad
from grace.rollout.batch import Sequences
from grace.rollout.roles import num_groups_per_instance


def view_rows(mode: str, variant: str, batch: int, num_rollouts: int) -> dict[str, tuple[str, torch.Tensor]]:
    """Where each view lives: role -> ("context" | "trained", row indices (batch,)), for a step
    of ``batch`` records (grace.rollout.roles' layouts: context rows instance-major per role
    block, trained rows group-major)."""
    B, G = batch, num_rollouts
    first = torch.arange(B) * G  # rollout 0 of groups 0..B-1
    if mode == "unsupervised":
        return {"query": ("context", torch.arange(B)), "positive": ("trained", first)}
    if variant == "decoupled":  # context [d-]; trained [q groups; d+ groups]
        return {"query": ("trained", first), "positive": ("trained", first + B * G),
                "negative": ("context", torch.arange(B))}
    return {"query": ("context", torch.arange(B)), "positive": ("trained", first),  # context [q; d-]
            "negative": ("context", torch.arange(B, 2 * B))}


def embed_with_grad(model, seqs: Sequences, pooling: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled, normalised embeddings of prompt + rationale rows, with gradient -> (N, D), and a
    zero scalar tied to the LM head (grace.contrastive.trainers.embed_rows_with_grad)."""
    return embed_rows_with_grad(model, seqs.input_ids, seqs.attention_mask, seqs.pool_mask,
                                seqs.prompt_len, pooling)


def contrastive_term(model, context: Sequences, trained: Sequences, *, mode: str, variant: str,
                     num_rollouts: int, pooling: str, temperature: float,
                     gather=lambda x: x, memory: EmbeddingMemory | None = None
                     ) -> tuple[torch.Tensor, dict]:
    """InfoNCE over this step's views (``view_rows``) -> (loss to backpropagate, stats); the loss
    carries the LM-head tie (0). ``gather`` turns this process's rows into the global batch's,
    keeping their gradient. ``memory`` (``optim.contrastive_memory``): the positives of earlier
    steps score as extra negatives, and this step's (global) positives are pushed after."""
    batch = len(trained) // (num_rollouts * num_groups_per_instance(mode, variant))
    rows = view_rows(mode, variant, batch, num_rollouts)
    blocks = {"context": context, "trained": trained}
    views, ties = {}, []
    for block in ("context", "trained"):  # one forward per block: their widths differ
        wanted = [(role, idx) for role, (b, idx) in rows.items() if b == block]
        if not wanted:
            continue
        rows_of_block = blocks[block].select(torch.cat([i for _, i in wanted])).strip_left_padding()
        emb, t = embed_with_grad(model, rows_of_block, pooling)
        ties.append(t)
        for k, (role, _) in enumerate(wanted):
            views[role] = gather(emb[k * batch:(k + 1) * batch])  # (global B, D)
    negatives = views["negative"][:, None] if "negative" in views else None  # (B, 1, D)
    kept = None if memory is None else memory.rows()
    loss, stats = info_nce(views["query"], views["positive"], negatives, temperature, memory=kept)
    if memory is not None:
        memory.push(views["positive"])
        stats["memory"] = float(0 if kept is None else len(kept))
    return loss + sum(ties), stats
