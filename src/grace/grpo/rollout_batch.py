"""``RolloutBatch``: one GRACE step's rollouts and what the reward and update stages add to
them, the one typed batch that the policy loss and the logger read (grace.grpo.trainer fills it
stage by stage). Its sequences follow grace.rollout.batch's conventions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grace.grpo.rewards import RewardOutput
from grace.rollout.batch import ScoredSequences
from grace.rollout.roles import RolloutPlan


@dataclass
class RolloutBatch:
    """One GRACE step's rollouts and everything computed on them: what the policy loss and the
    logger read (grace.grpo.trainer fills it stage by stage: rollout, reward, update, log).

    Rows of ``trained`` are group-major (text 0's G rollouts first). Every (N, R) log-prob
    tensor is 0 where ``trained.seqs.response_mask`` is 0; ``advantages`` (N,) holds one value
    per rollout, which the loss broadcasts to its rationale tokens.
    """

    plan: RolloutPlan  # which texts were rolled out, in which role
    context: ScoredSequences  # one untrained context rationale per context text
    trained: ScoredSequences  # G rollouts per trained text, with the sampler's log-probs
    prompts_truncated: int  # prompts cut to data.max_prompt_tokens
    rollout_seconds: float  # time spent generating and scoring
    ref_logprobs: torch.Tensor | None = None  # (N, R) under the KL reference (kl_coef > 0)
    rewards: RewardOutput | None = None  # the rewards of every process's rollouts
    local_rewards: torch.Tensor | None = None  # (groups, G) this process's rewards (after penalties)
    penalties: dict[str, torch.Tensor] | None = None  # name -> (N,): what reward.<name>_penalty took off each rollout
    template_rates: torch.Tensor | None = None  # (N,) grace.rollout.quality.template_rates of each rollout
    advantages: torch.Tensor | None = None  # (N,) group-centred rewards
    old_logprobs: torch.Tensor | None = None  # (N, R) the policy's own (PPO's "old")
