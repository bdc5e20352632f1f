"""Pooling (GRACE paper, arXiv 2510.04506): masked mean of last-layer hidden states, then L2 normalisation.

``normalize=False`` (every pooling function) skips the normalisation: the raw pooled vector,
what ``encode(normalize_embeddings=False)`` returns and what the rationale cache stores.

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


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is set: over everything (``dim=None``: a
    loss's token-mean) or along ``dim``. ``mask`` may have fewer dims than ``x``; the trailing
    ones broadcast (hidden (N, T, D) with mask (N, T), ``dim=1`` -> (N, D)). An empty mask gives
    0 (verl divides by sum + 1e-8: also 0)."""
    m = mask.to(x.dtype)
    m = m.reshape(m.shape + (1,) * (x.dim() - m.dim())).expand_as(x)  # broadcast over trailing dims
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1e-8)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1e-8)


def pool(hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Masked mean in float32, L2-normalised: the embedding. (N, T, D), (N, T) -> (N, D)."""
    mean = masked_mean(hidden.float(), mask, dim=1)  # (N, D)
    return F.normalize(mean, dim=-1) if normalize else mean


POOLINGS = ("mean", "balanced")  # the named poolings; ``text:W`` is the general form (text_share)


def text_share(pooling: str) -> float | None:
    """The share of the embedding that ``pooling`` gives the text's mean (the rationale's mean gets
    the rest): None for ``mean`` (the paper: no shares, every pooled token alike), 0.5 for
    ``balanced``, W for ``text:W`` with 0 < W < 1 (``text:0.7``: the text's mean weighs 0.7 and
    the rationale's 0.3). A ValueError names the forms for anything else."""
    if pooling == "mean":
        return None
    if pooling == "balanced":
        return 0.5
    if isinstance(pooling, str) and pooling.startswith("text:"):
        try:
            share = float(pooling[len("text:"):])
        except ValueError:
            share = None
        if share is not None and 0 < share < 1:
            return share
    raise ValueError(f"pooling must be one of {POOLINGS} or text:W with 0 < W < 1 (the text's share, "
                     f"e.g. text:0.7), got {pooling!r}")


def is_pooling(pooling) -> bool:
    """Whether ``pooling`` is a pooling ``pool_sums`` knows (``text_share`` without the error)."""
    try:
        text_share(pooling)
    except ValueError:
        return False
    return True


def pool_sums(prompt_sum: torch.Tensor, prompt_count: torch.Tensor, rationale_sum: torch.Tensor,
              rationale_count: torch.Tensor, pooling: str = "mean", normalize: bool = True) -> torch.Tensor:
    """The embedding from the sums of the pooled prompt and rationale hidden states (float32),
    L2-normalised (unless ``normalize`` is False). (N, D), (N,), (N, D), (N,) -> (N, D).

    ``mean`` (the paper): the mean over every pooled token, prompt and rationale alike, so a
    200-token text outweighs a 32-token rationale six to one. ``balanced`` (beyond the paper):
    the prompt's mean and the rationale's mean with equal weight, whatever their lengths;
    ``text:W`` (beyond the paper): the prompt's mean with weight W and the rationale's with
    1 - W (``balanced`` is ``text:0.5``). A row without rationale tokens is its prompt's mean.
    """
    share = text_share(pooling)
    if share is None:
        total = prompt_count + rationale_count
        pooled = (prompt_sum + rationale_sum) / total.clamp(min=1)[:, None]  # (N, D)
    else:
        text = prompt_sum / prompt_count.clamp(min=1)[:, None]
        rationale = rationale_sum / rationale_count.clamp(min=1)[:, None]
        rest = (1 - share) * (rationale_count > 0).to(text.dtype)[:, None]  # the rationale's weight
        pooled = text * (1 - rest) + rationale * rest  # (N, D)
    return F.normalize(pooled, dim=-1) if normalize else pooled


def read_pooling(rollout) -> str | None:
    """The pooling a trained model is read with, from its config's ``rollout`` section (a dict,
    e.g. ``grace_config.yaml``'s): ``encode_pooling``, else ``pooling`` (the one its rewards
    used); None when it names neither (or is not a mapping)."""
    if not isinstance(rollout, dict):
        return None
    pooling = rollout.get("encode_pooling") or rollout.get("pooling")
    return pooling if isinstance(pooling, str) else None


def token_weights(is_rationale: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Each pooled token's weight in ``pool_sums``' embedding of one text (before the L2
    normalisation): (n,) bool, True where the token is a rationale token -> (n,) float64 that
    sums to 1. ``mean``: 1/n each; ``balanced``: 1/2 shared by the text tokens and 1/2 by the
    rationale tokens (``text:W``: W by the text tokens, 1 - W by the rationale tokens). A text of
    one part only (no rationale token, or, unlike any encoder's text, no text token) gets 1/n
    each: ``pool_sums`` gives it the same direction (its length differs, which no share of a
    cosine sees)."""
    share = text_share(pooling)
    r = is_rationale.bool()
    n, n_r = r.numel(), int(r.sum())
    if share is None or n_r == 0 or n_r == n:  # one part only: its mean (up to scale)
        return torch.full((n,), 1.0 / max(n, 1), dtype=torch.float64)
    return torch.full((n,), share / (n - n_r), dtype=torch.float64).masked_fill(r, (1 - share) / n_r)


def pool_split(hidden: torch.Tensor, mask: torch.Tensor, split: int, pooling: str = "mean",
               normalize: bool = True) -> torch.Tensor:
    """``pool`` with the positions before ``split`` as the prompt and the rest as the rationale
    (``pool_sums``' pooling). (N, T, D), (N, T) -> (N, D)."""
    if text_share(pooling) is None:
        return pool(hidden, mask, normalize)
    m = mask.to(torch.float32)
    h = hidden.float()
    prompt, rationale = m[:, :split], m[:, split:]
    return pool_sums((h[:, :split] * prompt[..., None]).sum(1), prompt.sum(1),
                     (h[:, split:] * rationale[..., None]).sum(1), rationale.sum(1), pooling, normalize)
