"""The typed batches of the rollout stage: ``Sequences`` (prompts + sampled rationales) and
``ScoredSequences`` (plus the scoring pass's embeddings and log-probs). GRACE's step batch, which
adds what the reward and update stages compute, is ``grace.grpo.rollout_batch.RolloutBatch``.

Conventions (one for every tensor here):
- prompts are left-padded, responses right-padded; ``P`` prompt width, ``R`` response width;
- ``response_mask`` (N, R) is 1 for rationale tokens up to and including the first EOS, and a
  log-prob tensor (N, R) is 0 wherever it is 0;
- ``truncated`` (N,) is True when a rationale hit ``max_new_tokens`` without EOS;
- rows of a group are contiguous (group-major: text 0's samples first).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Sequences:
    """Prompts with their sampled rationales; see the module docstring for conventions."""

    input_ids: torch.Tensor  # (N, P+R)
    attention_mask: torch.Tensor  # (N, P+R) prompt mask ++ response mask
    pool_mask: torch.Tensor  # (N, P+R) positions averaged into the embedding
    response_mask: torch.Tensor  # (N, R)
    truncated: torch.Tensor  # (N,) bool
    prompt_len: int  # P

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]  # (N, R)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows) -> "Sequences":
        """A subset of rows (a slice or an index tensor)."""
        return replace(
            self,
            input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows],
            pool_mask=self.pool_mask[rows],
            response_mask=self.response_mask[rows],
            truncated=self.truncated[rows],
        )


    def strip_left_padding(self) -> "Sequences":
        """Drop the leading columns that are padding in every row (e.g. after ``select``)."""
        pad = (self.attention_mask[:, : self.prompt_len] == 0).all(dim=0)  # (P,)
        k = int(pad.long().cumprod(dim=0).sum())
        if k == 0:
            return self
        return replace(self, input_ids=self.input_ids[:, k:], attention_mask=self.attention_mask[:, k:],
                       pool_mask=self.pool_mask[:, k:], prompt_len=self.prompt_len - k)


@dataclass
class ScoredSequences:
    """Sequences plus what the no-grad scoring pass computed for them."""

    seqs: Sequences
    embeddings: torch.Tensor  # (N, D) float32, L2-normalised
    logprobs: torch.Tensor  # (N, R) float32, 0 where response_mask is 0
