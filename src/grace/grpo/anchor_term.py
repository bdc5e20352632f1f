"""Beyond the paper: a language-model anchor (``optim.anchor_weight``).

The contrastive term (grace.grpo.contrastive_term) trains the last-layer hidden states, which
are also what the LM head reads: at weight 1 it moved held-out perplexity by +10% in 125 steps
(benchmarks/quality/results-budget.md). The anchor keeps the model's next-token distributions
on *ordinary text* where they started: each step, the KL divergence from the frozen initial
model to the policy on the step's own input texts (raw text, no chat template, no rationale),

    anchor = sum_t m_t KL(p_ref(. | x_<t) || p_theta(. | x_<t)) / sum_t m_t,

over every predicted token t of every text (m_t = 1 for a real token with a real token before
it), with the whole vocabulary: the exact divergence, not a sampled estimate. It joins the loss
of the step's first optimizer step times ``optim.anchor_weight``. The rationale tokens are left
alone (the policy loss moves them; ``optim.kl_coef`` is the KL on them), so the anchor asks for
a reader that changes how it pools, not how it speaks. It is InstructGPT's "PPO-ptx" idea
(keep the pretraining distribution while RL moves the policy) in its distillation form: the
target is the initial model's distribution, not the data's next token, so the anchor holds the
model where it was rather than fitting it to the training texts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``mask`` is 1 of KL(softmax(ref) || softmax(policy)).

    ``policy_logits``, ``ref_logits``: (N, L, V) next-token logits at each position; ``mask``:
    (N, L), 1 where a position's prediction counts. Returns a scalar (0 when the mask is empty).
    """
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    logp = F.log_softmax(policy_logits.float(), dim=-1)
    per_token = F.kl_div(logp, ref_logp, reduction="none", log_target=True).sum(-1)  # (N, L)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp(min=1)


def prediction_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(N, L) positions whose next-token prediction is scored in right-padded rows: a real token
    followed by a real token (the last real token predicts nothing)."""
    m = attention_mask.bool()
    out = torch.zeros_like(m)
    out[:, :-1] = m[:, :-1] & m[:, 1:]
    return out


def anchor_term(model, reference_logits, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The anchor on right-padded rows of raw text -> (loss with gradient, stats).

    ``reference_logits(input_ids, attention_mask)`` gives the initial model's (N, L, V) logits
    (no gradient: a frozen copy, or the policy with its LoRA adapter switched off).
    """
    with torch.no_grad():
        ref = reference_logits(input_ids, attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    mask = prediction_mask(attention_mask)
    loss = token_kl(logits, ref, mask)
    return loss, {"kl": float(loss.detach()), "tokens": int(mask.sum())}
