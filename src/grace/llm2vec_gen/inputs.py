"""What the LLM2Vec-Gen model reads (LLM2Vec-Gen paper, arXiv 2603.10913), as token tensors.

- Encoder input: ``instruction + " " + text`` (just ``text`` when the instruction is empty),
  tokenised WITHOUT a chat template, left-padded; the K soft-token slots follow it (they are
  embeddings, not token ids: see grace.llm2vec_gen.model), so with left padding the last K
  positions of every row are the soft tokens. Over-long texts lose their tail, with a warning
  that counts them.
- Response prompt: the same ``input_text`` as the user message of the tokenizer's chat template
  (``add_generation_prompt=True``); a tokenizer without a template gets ``User: ...`` /
  ``Assistant:``. The backbone answers it to make the training responses.
- Reconstruction target: the response's tokens, plus EOS when the response was finished (so the
  decoder learns where to stop), right-padded (the soft prompts come first and all rows hold
  exactly K of them, so right padding keeps every position aligned).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from grace.models.prompt import left_pad


def input_text(instruction: str, text: str) -> str:
    """``instruction + " " + text``, or ``text`` alone for an empty instruction."""
    return f"{instruction} {text}" if instruction else text


@dataclass
class EncoderInputs:
    input_ids: torch.Tensor  # (B, L) left-padded text tokens; the K soft tokens come after them
    attention_mask: torch.Tensor  # (B, L) 1 for real tokens
    num_truncated: int  # texts cut to fit max_tokens


def build_encoder_inputs(tokenizer, texts: list[str], instruction: str, max_tokens: int,
                         num_soft_tokens: int) -> EncoderInputs:
    """Tokenise ``instruction + " " + text`` for each text; keep at most ``max_tokens -
    num_soft_tokens`` tokens of each (the tail is cut) so that text + soft tokens fit."""
    room = max_tokens - num_soft_tokens
    if room < 1:
        raise ValueError(f"max_input_tokens={max_tokens} leaves no room for the text next to "
                         f"the {num_soft_tokens} soft tokens")
    ids = [tokenizer(input_text(instruction, t))["input_ids"] for t in texts]
    truncated = sum(len(x) > room for x in ids)
    if truncated:
        warnings.warn(f"{truncated} of {len(texts)} texts were truncated to fit "
                      f"max_input_tokens={max_tokens} (with the {num_soft_tokens} soft tokens)",
                      stacklevel=2)
    ids = [x[:room] if x else [tokenizer.pad_token_id] for x in ids]  # an empty text: one pad
    input_ids, mask = left_pad(ids, tokenizer.pad_token_id)  # (B, L)
    return EncoderInputs(input_ids, mask, truncated)


def chat_prompt(tokenizer, text: str) -> str:
    """The prompt the backbone answers to make a training response."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return f"User: {text}\n\nAssistant:"


def build_response_targets(tokenizer, responses: list[str], finished: list[bool],
                           max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded response token ids (EOS appended to finished ones) and their mask, (B, T)."""
    rows = []
    for text, done in zip(responses, finished):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_tokens is not None:
            ids = ids[: max_tokens - 1 if done else max_tokens]
        rows.append(ids + [tokenizer.eos_token_id] if done else ids or [tokenizer.eos_token_id])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, seq in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
