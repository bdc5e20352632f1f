"""Embed texts with a GRACE policy: prompt -> rationale -> pooled, normalised hidden states.

Rationale modes:
- ``none``: no rationale, plain mean pooling over the prompt after the system prefix (the
  "base" baseline of the paper);
- ``greedy``: one deterministic greedy rationale per text (our default: the same text always
  gets the same embedding);
- ``sampled``: ``num_samples`` rationales at ``temperature``; their embeddings are averaged and
  renormalised.

Texts are processed in length-sorted batches and returned in input order. This is the small
functional core; the user-facing encoder class builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from grace.prompt import SYSTEM_PROMPT, build_prompts
from grace.rollout import decode_rationales, generate_sequences, prompt_only, score_sequences

RATIONALE_MODES = ("none", "greedy", "sampled")


@dataclass
class EncodeOptions:
    rationale: str = "greedy"  # none | greedy | sampled
    max_new_tokens: int = 64  # rationale length cap
    num_samples: int = 1  # rationales averaged in "sampled" mode
    temperature: float = 1.0  # sampling temperature in "sampled" mode
    batch_size: int = 16  # texts per generation batch
    max_prompt_tokens: int = 1024  # longer prompts are truncated (with a warning)
    system_prompt: str = SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if self.rationale not in RATIONALE_MODES:
            raise ValueError(f"rationale must be one of {RATIONALE_MODES}, got {self.rationale!r}")


def _encode_batch(model, tokenizer, texts: list[str], opts: EncodeOptions):
    prompts = build_prompts(tokenizer, texts, opts.system_prompt, opts.max_prompt_tokens)
    if opts.rationale == "none":
        scored = score_sequences(model, prompt_only(prompts), opts.batch_size, with_logprobs=False)
        return scored.embeddings, [""] * len(texts)
    n = 1 if opts.rationale == "greedy" else opts.num_samples
    temperature = 0.0 if opts.rationale == "greedy" else opts.temperature
    seqs = generate_sequences(
        model, tokenizer, prompts, num_samples=n, temperature=temperature,
        max_new_tokens=opts.max_new_tokens, batch_size=opts.batch_size * n,
    )
    scored = score_sequences(model, seqs, opts.batch_size, with_logprobs=False)
    emb = F.normalize(scored.embeddings.view(len(texts), n, -1).mean(1), dim=-1)  # (B, D)
    rationales = decode_rationales(tokenizer, seqs)[::n]
    return emb, rationales


def embed_texts(
    model, tokenizer, texts: list[str], options: EncodeOptions | None = None, show_progress: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Embeddings (N, D) float32 (L2-normalised) and the rationale of each text (first sample)."""
    opts = options or EncodeOptions()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    embeddings: list[torch.Tensor | None] = [None] * len(texts)
    rationales: list[str] = [""] * len(texts)
    batches = [order[i : i + opts.batch_size] for i in range(0, len(order), opts.batch_size)]
    for batch in tqdm(batches, desc=f"encode ({opts.rationale})", disable=not show_progress):
        emb, rat = _encode_batch(model, tokenizer, [texts[i] for i in batch], opts)
        for row, index in enumerate(batch):
            embeddings[index], rationales[index] = emb[row], rat[row]
    return torch.stack(embeddings).cpu().numpy(), rationales
