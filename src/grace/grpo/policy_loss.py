"""The GRPO policy loss, with verl's semantics (token log-probs: grace.models.logprobs).

Pure tensor functions. N = rollouts, T = response tokens. Mask convention:
``mask`` (N, T) is 1 on response tokens that count and 0 on padding / prompt; values at masked
positions are ignored (they must be finite).

Loss (verl ``compute_policy_loss``, "vanilla" PPO-clip with dual-clip):
    ratio  = exp(clamp(lp - old_lp, -20, 20))
    pg1    = -A * ratio
    pg2    = -A * clamp(ratio, 1 - clip_low, 1 + clip_high)
    pg     = max(pg1, pg2);  if A < 0: pg = min(pg, -A * dual_clip)   (dual-clip, c = 3)
    loss   = token-mean of pg over the mask (all tokens of the mini-batch, not per sequence)
    + kl_coef * token-mean of the k3 ("low_var_kl") estimator against a reference policy.
GRACE's reference run uses eps 0.2 on both sides, c = 3, kl_coef = 0 and no entropy bonus.
``masked_mean`` of an all-zero mask is 0 (verl divides by sum + 1e-8, also 0).
"""

import torch

from grace.models.pooling import masked_mean


def ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0):
    """logprobs, old_logprobs, mask (N, T); advantages (N,) or (N, T) -> (loss, stats)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)  # (N, 1), broadcast to every token
    log_ratio = torch.clamp(logprobs - old_logprobs, -20.0, 20.0)  # (N, T)
    ratio = torch.exp(log_ratio)  # (N, T)
    pg1 = -advantages * ratio  # (N, T)
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)  # (N, T)
    pg = torch.maximum(pg1, pg2)  # (N, T)
    dual_hit = torch.zeros_like(pg, dtype=torch.bool)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        pg3 = -advantages * dual_clip  # (N, T) or (N, 1)
        negative = (advantages < 0).expand_as(pg)  # (N, T)
        dual_hit = negative & (pg > pg3)  # (N, T)
        pg = torch.where(negative, torch.minimum(pg, pg3), pg)  # (N, T)
    loss = masked_mean(pg, mask)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((pg2 > pg1).float(), mask),
            "dual_clip_frac": masked_mean(dual_hit.float(), mask),
            "ratio_mean": masked_mean(ratio, mask),
            "approx_kl": masked_mean(-log_ratio, mask),
        }
    return loss, stats


def kl_low_var(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(policy || ref) per token (verl low_var_kl): exp(d) - d - 1, d = ref - lp."""
    d = torch.clamp(ref_logprobs - logprobs, -20.0, 20.0)  # (N, T)
    return torch.clamp(torch.exp(d) - d - 1, -10.0, 10.0)  # (N, T)


def policy_loss(logprobs, old_logprobs, advantages, mask, *, ref_logprobs=None, kl_coef=0.0,
                clip_low=0.2, clip_high=0.2, dual_clip=3.0):
    """PPO-clip loss plus kl_coef * token-mean low-variance KL; stats gain "kl"."""
    loss, stats = ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip_low, clip_high, dual_clip)
    if ref_logprobs is None:
        if kl_coef != 0.0:
            raise ValueError("kl_coef != 0 needs ref_logprobs")
        stats["kl"] = torch.zeros((), device=logprobs.device)
        return loss, stats
    kl = masked_mean(kl_low_var(logprobs, ref_logprobs), mask)
    stats["kl"] = kl.detach()
    return loss + kl_coef * kl, stats
