"""The two LLM2Vec-Gen losses (LLM2Vec-Gen paper, arXiv 2603.10913) as pure tensor functions: no model, no optimizer.

    L = w_recon * L_recon + w_align * L_align

- ``alignment_loss``: MSE between the embedding e = mean_k z_k (the mean of the K aligned
  vectors, unnormalised) and the teacher's embedding t of the response, averaged over the batch
  and the teacher dimensions (``torch.nn.functional.mse_loss``'s "mean").
- ``reconstruction_loss``: next-token cross-entropy of the frozen LM over the response tokens,
  token-mean over the real (mask 1) tokens. The logits are already aligned with the targets:
  ``logits[:, t]`` is the prediction for ``response_ids[:, t]`` (the model shifts them; see
  grace.llm2vec_gen.model).

Mask convention (as everywhere in grace): 1 marks a position that counts, 0 one that is ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_embedding(aligned: torch.Tensor) -> torch.Tensor:
    """The embedding of a text: the mean of its K aligned vectors. (B, K, D) -> (B, D)."""
    return aligned.mean(dim=1)


def alignment_loss(embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE(e, t), mean over the batch and the dimensions. (B, D), (B, D) -> scalar."""
    if embedding.shape != target.shape:
        raise ValueError(f"embedding {tuple(embedding.shape)} and teacher target "
                         f"{tuple(target.shape)} differ in shape")
    return F.mse_loss(embedding.float(), target.float())


def reconstruction_loss(logits: torch.Tensor, response_ids: torch.Tensor,
                        response_mask: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy over the masked response tokens.

    logits (B, T, V) with ``logits[:, t]`` predicting ``response_ids[:, t]`` (B, T); mask (B, T).
    """
    mask = response_mask.bool()  # (B, T)
    picked = logits[mask].float()  # (N, V) the real tokens only
    if picked.shape[0] == 0:
        raise ValueError("reconstruction_loss needs at least one response token")
    return F.cross_entropy(picked, response_ids[mask])


def token_accuracy(logits: torch.Tensor, response_ids: torch.Tensor,
                   response_mask: torch.Tensor) -> torch.Tensor:
    """Share of masked response tokens whose argmax logit is the target (teacher forcing)."""
    mask = response_mask.bool()  # (B, T)
    hits = (logits.argmax(dim=-1) == response_ids) & mask  # (B, T)
    return hits.sum().float() / mask.sum().clamp(min=1)
