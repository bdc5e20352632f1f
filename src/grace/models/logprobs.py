"""Token log-probabilities: a pure tensor function every stage that scores tokens shares (the
rollout's scoring pass, the policy update, the capability probe).

N = rows, T = tokens, V = vocabulary.
"""

import torch


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (N, T, V), labels (N, T) valid token ids -> log p(label) (N, T), in float32.

    log_softmax(x)[y] = x[y] - logsumexp(x): avoids materialising a second (N, T, V) tensor.
    """
    logits = logits.float()  # (N, T, V)
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (N, T)
    return picked - torch.logsumexp(logits, dim=-1)  # (N, T)
