"""Rationale log-probs with each prompt run once: the G rollouts of a text share their prompt.

The plain layout (``hf_path.response_logprobs``) gives every rollout row its own copy of the
prompt, so a forward over G rollouts of a P-token prompt with R-token rationales costs
G (P + R) token positions. Here the rows of a micro-batch that carry the same prompt become one
*packed* row, ``prompt ++ rationale_1 ++ ... ++ rationale_k`` (P + k R positions), with a block
attention mask: the prompt is causal, each rationale sees the whole prompt and itself (causally),
never another rationale, and its positions continue from the prompt's as they would alone. So the
log-probs are those of the plain layout, up to float rounding (tested), and the gradient of the
prompt's states is the sum over its rationales, as when each row carried its own copy.

A packed row's attention computes all of its (P + k R)^2 query-key pairs, masked or not, so
many long rationales are not packed in one row: ``slots_per_row`` picks k from a cost model
(a position's projections vs a pair's attention, from the model's shapes).

Pure layout (``shared_prompt_layout``) plus one forward (``shared_prompt_logprobs``); the model
is called once, so DDP/FSDP hooks run as for the plain layout. The block mask needs an
attention implementation that takes a 4D mask: ``sdpa`` (boolean) and ``eager`` (additive);
``supports_shared_prompt`` says whether a model qualifies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grace.models.logprobs import token_logprobs
from grace.rollout.batch import Sequences

MASKED_ATTENTION = ("sdpa", "eager")


@dataclass
class SharedPromptLayout:
    """Packed rows for a set of rollout rows (m of them, U distinct prompts, k slots each).

    input_ids (U, P + k R), position_ids (U, P + k R), attention (U, 1, L, L) bool (True:
    attend), row_of (m,) the packed row of each rollout row, predict (m, R) the position whose
    logits predict each rationale token, counted from P - 1 (the last prompt position).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention: torch.Tensor
    row_of: torch.Tensor
    predict: torch.Tensor
    slots: int  # k: rollouts per packed row (its slots)


def slots_per_row(prompt_len: int, response_len: int, rollouts: int, pair_cost: float) -> int:
    """How many rollouts of one prompt to pack per row: the k in 1..``rollouts`` with the least
    estimated cost ceil(G/k) (L + pair_cost L^2), L = P + k R. A position costs 1 (its
    projections), a (query, key) pair ``pair_cost`` (the attention computes every pair of a
    row, masked or not), so long rationales of many rollouts are packed in smaller rows."""
    best, best_cost = 1, float("inf")
    for k in range(1, max(rollouts, 1) + 1):
        L = prompt_len + k * response_len
        cost = -(-rollouts // k) * (L + pair_cost * L * L)
        if cost <= best_cost:
            best, best_cost = k, cost
    return best


def pair_cost(config) -> float:
    """FLOPs of one attention (query, key) pair per layer (QK^T and AV: 4 x heads x head_dim)
    over the FLOPs of one position's projections (2 x a layer's linear weights)."""
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // heads
    D, inter = config.hidden_size, config.intermediate_size
    linear = D * heads * hd * 2 + 2 * D * kv * hd + 3 * D * inter
    return 4 * heads * hd / (2 * linear)


def _group_rows(seqs: Sequences, max_slots: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(packed row (m,), slot (m,), U): rows with identical (masked) prompts share a packed row,
    at most ``max_slots`` of them (then the next row of that prompt starts another); slots count
    a prompt's rows in row order."""
    P = seqs.prompt_len
    prompt = torch.where(seqs.attention_mask[:, :P].bool(), seqs.input_ids[:, :P], -1)  # (m, P)
    _, group = torch.unique(prompt, dim=0, return_inverse=True)  # (m,)
    same = group[:, None] == group[None, :]  # (m, m)
    earlier = torch.ones_like(same).tril(-1)  # (m, m) strictly earlier rows
    rank = (same & earlier).sum(1)  # (m,) rank of a row among its prompt's rows
    k = int(rank.max()) + 1 if max_slots is None else max_slots
    _, packed = torch.unique(group * len(seqs) + rank // k, return_inverse=True)  # dense ids
    return packed, rank % k, int(packed.max()) + 1


def shared_prompt_layout(seqs: Sequences, max_slots: int | None = None) -> SharedPromptLayout:
    """The packed rows of ``seqs`` (any rows; those with the same prompt are packed together,
    ``max_slots`` per row at most; None: all of them)."""
    P = seqs.prompt_len
    R = seqs.response_ids.shape[1]
    m = len(seqs)
    group, slot, U = _group_rows(seqs, max_slots)
    k = int(slot.max()) + 1
    L = P + k * R
    device = seqs.input_ids.device
    first = torch.full((U,), m, dtype=torch.long, device=device).scatter_reduce(
        0, group, torch.arange(m, device=device), reduce="amin")  # (U,) first row of each group
    prompt_valid = seqs.attention_mask[first, :P].bool()  # (U, P)

    ids = torch.zeros(U, k, R, dtype=seqs.input_ids.dtype, device=device)
    valid = torch.zeros(U, k, R, dtype=torch.bool, device=device)
    ids[group, slot] = seqs.response_ids
    valid[group, slot] = seqs.attention_mask[:, P:].bool()
    input_ids = torch.cat([seqs.input_ids[first, :P], ids.reshape(U, k * R)], dim=1)  # (U, L)
    valid = torch.cat([prompt_valid, valid.reshape(U, k * R)], dim=1)  # (U, L)

    prompt_pos = (prompt_valid.long().cumsum(1) - 1).clamp(min=0)  # (U, P) as position_ids_from_mask
    n_prompt = prompt_valid.sum(1, keepdim=True)  # (U, 1)
    offset = torch.arange(R, device=device).repeat(k)  # (k R,) position within a slot
    position_ids = torch.cat([prompt_pos, n_prompt + offset[None, :]], dim=1)  # (U, L)

    region = torch.cat([torch.full((P,), -1, device=device),
                        torch.arange(k, device=device).repeat_interleave(R)])  # (L,) -1: prompt
    pos = torch.arange(L, device=device)
    causal = pos[None, :] <= pos[:, None]  # (L, L) [query, key]
    same_block = (region[None, :] == -1) | (region[None, :] == region[:, None])  # key in prompt or own slot
    attention = (causal & same_block)[None] & valid[:, None, :]  # (U, L, L)
    attention = attention | torch.eye(L, dtype=torch.bool, device=device)[None]  # no empty row (padding)

    j = torch.arange(R, device=device)  # rationale token j of slot s is predicted at
    predict = torch.where(j[None, :] == 0, 0, 1 + slot[:, None] * R + j[None, :] - 1)  # (m, R) from P-1
    return SharedPromptLayout(input_ids, position_ids, attention[:, None], group, predict, k)


def supports_shared_prompt(model) -> bool:
    """Whether ``model`` (plain, peft- or DDP-wrapped HF causal LM) takes a 4D attention mask."""
    inner = getattr(model, "module", model)  # DDP / FSDP wrappers
    config = getattr(inner, "config", None)
    return getattr(config, "_attn_implementation", None) in MASKED_ATTENTION


def _mask_for(model, attention: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    inner = getattr(model, "module", model)
    if inner.config._attn_implementation == "sdpa":
        return attention  # boolean, True = attend
    return torch.zeros(attention.shape, dtype=dtype).masked_fill(~attention, torch.finfo(dtype).min)


def shared_prompt_logprobs(model, seqs: Sequences, temperature: float = 1.0) -> torch.Tensor:
    """``hf_path.response_logprobs`` with each distinct prompt run once. -> (N, R) float32."""
    R = seqs.response_ids.shape[1]
    inner = getattr(model, "module", model)
    config = inner.get_base_model().config if hasattr(inner, "get_base_model") else inner.config
    most = int(torch.unique(seqs.input_ids[:, : seqs.prompt_len], dim=0, return_counts=True)[1].max())
    layout = shared_prompt_layout(seqs, slots_per_row(seqs.prompt_len, R, most, pair_cost(config)))
    kept = layout.slots * R + 1  # positions P - 1 .. P + k R - 1
    param = next(model.parameters())
    out = model(
        input_ids=layout.input_ids,
        attention_mask=_mask_for(model, layout.attention, param.dtype),
        position_ids=layout.position_ids,
        use_cache=False,
        logits_to_keep=kept,
    )
    logits = out.logits[layout.row_of[:, None], layout.predict]  # (N, R, V)
    return token_logprobs(logits / temperature, seqs.response_ids) * seqs.response_mask  # (N, R)
