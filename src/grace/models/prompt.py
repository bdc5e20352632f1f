"""Prompts (GRACE paper, arXiv 2510.04506) and where pooling starts in them (GRACE paper, arXiv 2510.04506).

Every input -- query, document, unsupervised text, evaluation text -- gets the same system
prompt; the user message is the raw text; the tokenizer's chat template is applied with
``add_generation_prompt=True``. A tokenizer without a chat template gets a plain fallback
format (``System: ...`` / ``User: ...`` / ``Assistant:``).

Pooling starts at the user text itself and covers it, the template tokens after it (end of the
user turn, the assistant header) and then the rationale; the system message and the user
header before the text (``<|im_start|>user\n`` in ChatML) are excluded. This is what the
public reference code pools (GasolSun36/GRACE, reward_manager/grace.py: everything before the
user text is masked out); until this version grace also pooled the user header, three tokens
that are the same for every text and only pull all embeddings towards one point. An empty text
pools from the end of the system message.

Prompts are capped at ``max_prompt_tokens``: an over-long text is truncated (its tail is cut, the
template stays intact) and counted, never dropped silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from grace.errors import GraceInputError

SYSTEM_PROMPT = (
    "Read and analyze the following text, then you need to provide your reasoning within "
    "<think></think> tags. Finally, generate a comprehensive understanding of this text."
)


@dataclass
class PromptBatch:
    """Left-padded prompts ready for generation."""

    input_ids: torch.Tensor  # (N, P) left-padded
    attention_mask: torch.Tensor  # (N, P) 1 for real tokens
    pool_start: torch.Tensor  # (N,) first pooled position, in padded coordinates
    num_truncated: int  # texts cut to fit max_prompt_tokens

    def select(self, rows) -> "PromptBatch":
        """A subset of rows (a slice, an index list or tensor); its ``num_truncated`` is 0."""
        return PromptBatch(self.input_ids[rows], self.attention_mask[rows], self.pool_start[rows], 0)


def render_prompt(tokenizer, text: str, system_prompt: str = SYSTEM_PROMPT) -> tuple[str, int]:
    """Return the prompt string and the character offset where pooling starts."""
    if getattr(tokenizer, "chat_template", None):
        system = [{"role": "system", "content": system_prompt}]
        full = tokenizer.apply_chat_template(
            system + [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        if text:
            return full, full.rindex(text)  # the user text itself (the reference code's choice)
        prefix = tokenizer.apply_chat_template(system, tokenize=False, add_generation_prompt=False)
        return full, len(prefix) if full.startswith(prefix) else len(full)
    prefix = f"System: {system_prompt}\n\nUser:"  # the text's first token holds its space
    return f"{prefix} {text}\n\nAssistant:", len(prefix)


def _count_prefix_tokens(tokenizer, prompt: str, prefix_chars: int) -> tuple[list[int], int]:
    """Token ids of ``prompt`` and how many of them lie inside the first ``prefix_chars``."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        n_prefix = sum(1 for start, _ in enc["offset_mapping"] if start < prefix_chars)
        return enc["input_ids"], n_prefix
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    n_prefix = len(tokenizer(prompt[:prefix_chars], add_special_tokens=False)["input_ids"])
    return ids, n_prefix


def tokenize_prompt(tokenizer, text: str, system_prompt: str, max_prompt_tokens: int):
    """Token ids of one prompt, the number of system-prefix tokens, and whether it was cut."""
    prompt, prefix_chars = render_prompt(tokenizer, text, system_prompt)
    ids, n_prefix = _count_prefix_tokens(tokenizer, prompt, prefix_chars)
    truncated = False
    while len(ids) > max_prompt_tokens and text:
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        keep = len(text_ids) - (len(ids) - max_prompt_tokens) - 1
        if keep <= 0:
            raise GraceInputError(
                f"max_prompt_tokens={max_prompt_tokens} leaves no room for the text: "
                "the template alone is longer"
            )
        text = tokenizer.decode(text_ids[:keep])
        prompt, prefix_chars = render_prompt(tokenizer, text, system_prompt)
        ids, n_prefix = _count_prefix_tokens(tokenizer, prompt, prefix_chars)
        truncated = True
    return ids, n_prefix, truncated


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(ids, mask)``, both (N, max_len)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def build_prompts(
    tokenizer, texts: list[str], system_prompt: str = SYSTEM_PROMPT, max_prompt_tokens: int = 1024
) -> PromptBatch:
    """Tokenise and left-pad the prompts of ``texts``; warn once with the number truncated."""
    encoded = [tokenize_prompt(tokenizer, t, system_prompt, max_prompt_tokens) for t in texts]
    ids, mask = left_pad([e[0] for e in encoded], tokenizer.pad_token_id)
    pad = ids.shape[1] - mask.sum(dim=1)  # (N,)
    pool_start = pad + torch.tensor([e[1] for e in encoded], dtype=torch.long)  # (N,)
    num_truncated = sum(e[2] for e in encoded)
    if num_truncated:
        warnings.warn(
            f"{num_truncated} of {len(texts)} texts were truncated to fit "
            f"max_prompt_tokens={max_prompt_tokens}",
            stacklevel=2,
        )
    return PromptBatch(ids, mask, pool_start, num_truncated)
