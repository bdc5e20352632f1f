"""Sequences through the plain Hugging Face model: HF ``generate``, then one no-grad scoring
pass (GRACE paper, arXiv 2510.04506). It is the simple pipeline (``--rollout.engine simple``)
that the fast engine (grace.rollout.engine) replaces, and the forward passes every path shares.

``generate_sequences`` samples rationales for a batch of prompts (``num_samples`` per prompt,
rows group-major: prompt 0's samples first). ``score_sequences`` runs the policy once over
prompt + rationale (no gradient, as in GRACE's public code) and returns both the pooled,
normalised embeddings and the per-token log-probabilities of the rationale under the policy
(the "old" log-probs of PPO). ``response_logprobs`` is the same log-prob computation with
gradient, used by the policy update; ``forward_hidden`` the last-layer states of a batch
(explanations read them). ``sequences_from_responses`` rebuilds sequences from known rationale
ids (a cache hit, the echo mode).

Conventions (one for every tensor here; grace.rollout.batch):
- prompts are left-padded, responses right-padded; ``P`` prompt width, ``R`` response width;
- ``response_mask`` (N, R) is 1 for rationale tokens up to and including the first EOS;
- ``truncated`` (N,) is True when a rationale hit ``max_new_tokens`` without EOS;
- log-probs are at the ``temperature`` passed (default 1: log softmax(logits / T)).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from grace.models.backbones import decoder_and_head, end_token_ids
from grace.models.logprobs import token_logprobs
from grace.models.pooling import pool_split, pooling_mask, position_ids_from_mask
from grace.models.prompt import PromptBatch
from grace.rollout.batch import ScoredSequences, Sequences


def _is_end(ids: torch.Tensor, eos_ids) -> torch.Tensor:
    """ids (any shape) == one of ``eos_ids`` (an id or a list of ids)."""
    return torch.isin(ids, torch.as_tensor(eos_ids, dtype=ids.dtype, device=ids.device))


def response_mask_from_ids(response_ids: torch.Tensor, eos_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of tokens up to and including the first end token (any of ``eos_ids``: an id or a
    list, grace.models.backbones.end_token_ids), and the truncation flag. (N, R)."""
    is_eos = _is_end(response_ids, eos_ids)  # (N, R)
    seen_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # (N, R) an EOS came earlier
    return (~seen_before).long(), ~is_eos.any(dim=1)


def _pad_right(t: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    pad = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype, device=t.device)
    return torch.cat([t, pad], dim=1)


@torch.no_grad()
def generate_sequences(
    model,
    tokenizer,
    prompts: PromptBatch,
    *,
    num_samples: int,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
) -> Sequences:
    """Sample ``num_samples`` rationales per prompt (greedy when ``temperature`` is 0), from the
    model's plain distribution at ``temperature``/``top_p``: the model's own generation_config
    (a repetition penalty, suppressed tokens, n-gram bans ...) is set aside for the call, since
    ``generate`` merges it even into an explicit config, and samples drawn under it would not
    come from the distribution whose log-probs are trained."""
    device = next(model.parameters()).device
    ids = prompts.input_ids.repeat_interleave(num_samples, dim=0).to(device)  # (N, P)
    mask = prompts.attention_mask.repeat_interleave(num_samples, dim=0).to(device)  # (N, P)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    if temperature <= 0:
        sampling = dict(do_sample=False)
    eos_ids = end_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    outputs = []
    owner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the inner model
    own = owner.generation_config
    owner.generation_config = GenerationConfig(bos_token_id=getattr(own, "bos_token_id", None),
                                               eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id)
    try:
        outputs = _generate_chunks(model, tokenizer, ids, mask, batch_size, max_new_tokens,
                                   eos_ids, sampling)
    finally:
        owner.generation_config = own
    model.train(was_training)
    width = max(o.shape[1] for o in outputs)
    response = torch.cat([_pad_right(o, width, tokenizer.pad_token_id) for o in outputs])  # (N, R)
    return sequences_from_response_tensor(prompts, num_samples, response, eos_ids)


def _generate_chunks(model, tokenizer, ids, mask, batch_size, max_new_tokens, eos_ids, sampling):
    outputs = []
    for start in range(0, ids.shape[0], batch_size):
        out = model.generate(
            input_ids=ids[start : start + batch_size],
            attention_mask=mask[start : start + batch_size],
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
        outputs.append(out[:, ids.shape[1] :])  # (n, R_chunk)
    return outputs


def sequences_from_response_tensor(prompts: PromptBatch, num_samples, response: torch.Tensor,
                                   eos_ids) -> Sequences:
    """Sequences from prompts (repeated ``num_samples`` times, group-major; an int or a (P,)
    tensor of counts) and the sampled rationale tokens ``response`` (N, R), right-padded after
    EOS or cut at R."""
    device = response.device
    if torch.is_tensor(num_samples):
        num_samples = num_samples.to(prompts.input_ids.device)
    ids = prompts.input_ids.repeat_interleave(num_samples, dim=0).to(device)  # (N, P)
    mask = prompts.attention_mask.repeat_interleave(num_samples, dim=0).to(device)  # (N, P)
    response_mask, truncated = response_mask_from_ids(response, eos_ids)
    attention_mask = torch.cat([mask, response_mask], dim=1)  # (N, P+R)
    pool_start = prompts.pool_start.repeat_interleave(num_samples).to(device)  # (N,)
    return Sequences(
        input_ids=torch.cat([ids, response], dim=1),
        attention_mask=attention_mask,
        pool_mask=pooling_mask(attention_mask, pool_start).long(),
        response_mask=response_mask,
        truncated=truncated,
        prompt_len=ids.shape[1],
    )


def forward_hidden(model, seqs: Sequences) -> torch.Tensor:
    """Last-layer hidden states (N, P+R, D) of ``seqs`` (after the final norm), no head."""
    decoder, _ = decoder_and_head(model)
    out = decoder(
        input_ids=seqs.input_ids,
        attention_mask=seqs.attention_mask,
        position_ids=position_ids_from_mask(seqs.attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state  # (N, P+R, D), after the final norm


@torch.no_grad()
def score_sequences(
    model, seqs: Sequences, micro_batch_size: int = 16, with_logprobs: bool = True,
    temperature: float = 1.0, pooling: str = "mean", normalize: bool = True,
) -> ScoredSequences:
    """One no-grad pass: pooled embeddings (``pooling``: grace.models.pooling.pool_sums;
    L2-normalised unless ``normalize`` is False) and
    (optionally) rationale log-probs at ``temperature`` (log softmax(logits / temperature), the
    distribution the rollouts were sampled from, as verl computes them)."""
    _, head = decoder_and_head(model)
    was_training = model.training
    model.eval()
    embeddings, logprobs = [], []
    for start in range(0, len(seqs), micro_batch_size):
        part = seqs.select(slice(start, start + micro_batch_size))
        hidden = forward_hidden(model, part)  # (n, P+R, D)
        embeddings.append(pool_split(hidden, part.pool_mask, part.prompt_len, pooling, normalize))  # (n, D)
        if with_logprobs:
            logits = head(hidden[:, part.prompt_len - 1 : -1])  # (n, R, V) predicts the rationale
            lp = token_logprobs(logits / temperature, part.response_ids) * part.response_mask  # (n, R)
            logprobs.append(lp.float())
    model.train(was_training)
    lp = torch.cat(logprobs) if logprobs else torch.zeros(len(seqs), 0)
    return ScoredSequences(seqs, torch.cat(embeddings), lp)


def prompt_only(prompts: PromptBatch) -> Sequences:
    """Prompts with an empty rationale (the "base" embedding: plain mean pooling)."""
    n = prompts.input_ids.shape[0]
    return Sequences(
        input_ids=prompts.input_ids,
        attention_mask=prompts.attention_mask,
        pool_mask=pooling_mask(prompts.attention_mask, prompts.pool_start).long(),
        response_mask=torch.zeros(n, 0, dtype=torch.long),
        truncated=torch.zeros(n, dtype=torch.bool),
        prompt_len=prompts.input_ids.shape[1],
    )


def response_logprobs(model, seqs: Sequences, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of the rationale tokens with gradient (policy update), at ``temperature`` (the
    trained rollouts' sampling temperature, as the old log-probs). -> (N, R) float32.

    Calls the (possibly DDP/FSDP-wrapped) model itself so distributed gradient hooks run, and
    asks for logits of the last R+1 positions only.
    """
    R = seqs.response_ids.shape[1]
    out = model(
        input_ids=seqs.input_ids,
        attention_mask=seqs.attention_mask,
        position_ids=position_ids_from_mask(seqs.attention_mask),
        use_cache=False,
        logits_to_keep=R + 1,
    )
    logits = out.logits[:, :-1]  # (N, R, V)
    return token_logprobs(logits / temperature, seqs.response_ids) * seqs.response_mask  # (N, R)


def decode_rationales(tokenizer, seqs: Sequences) -> list[str]:
    """The text of each rationale (special tokens dropped)."""
    rows = []
    for ids, mask in zip(seqs.response_ids, seqs.response_mask):
        rows.append(tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip())
    return rows


def sequences_from_responses(prompts: PromptBatch, responses: list[list[int]], pad_id: int,
                             eos_ids) -> Sequences:
    """Rebuild sequences from prompts (N rows) and known rationale token ids (N lists), e.g.
    rationales served from a cache. A rationale that does not end in an end token (any of
    ``eos_ids``) counts as truncated."""
    width = max([len(r) for r in responses] + [1])
    response = torch.full((len(responses), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(responses):
        response[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in responses])  # (N,)
    within = torch.arange(width)[None, :] < lengths[:, None]  # (N, R)
    eos_mask, _ = response_mask_from_ids(response, eos_ids)
    response_mask = (eos_mask.bool() & within).long()  # (N, R)
    ends = set(eos_ids) if isinstance(eos_ids, (list, tuple)) else {eos_ids}
    ends_with_eos = torch.tensor([bool(r) and r[-1] in ends for r in responses])
    attention_mask = torch.cat([prompts.attention_mask, response_mask], dim=1)  # (N, P+R)
    return Sequences(
        input_ids=torch.cat([prompts.input_ids, response], dim=1),
        attention_mask=attention_mask,
        pool_mask=pooling_mask(attention_mask, prompts.pool_start).long(),
        response_mask=response_mask,
        truncated=~ends_with_eos,
        prompt_len=prompts.input_ids.shape[1],
    )


def response_token_lists(seqs: Sequences) -> list[list[int]]:
    """The rationale token ids of each row (up to and including EOS), as Python lists."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(seqs.response_ids, seqs.response_mask)]
