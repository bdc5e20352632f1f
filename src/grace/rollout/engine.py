"""The rollout/encode engine (issue 5): rationales and their embeddings in one generation pass.

Training rollouts and greedy/sampled encoding both need, for every prompt, sampled rationale
tokens, their log-probabilities and the pooled embedding of prompt + rationale (GRACE paper, arXiv 2510.04506).
The simple pipeline (``--rollout.engine simple``: grace.rollout.hf_path's ``generate_sequences``
then ``score_sequences``) runs ``generate`` and then a second full forward pass over prompt +
rationale. This engine does it in one pass:

- **shared system prefix**: every prompt starts with the same rendered system message, which
  pooling skips anyway; its KV cache is computed once (batch 1) and copied to every row, so the
  prefill only runs the user text and template (the prompts are re-laid out as
  ``[shared prefix | right-padded suffix]``, with explicit position ids; the padding holes are
  masked);
- **shared group prefill**: a prompt is prefilled once and its cache repeated for its G samples;
- **length-bucketed prefill**: suffixes of very different lengths run in buckets of similar
  length (``grace.rollout.buckets``: cut where the padding saved outweighs a decoder call), each
  padded only to its own longest, then placed in one cache laid out as a single call lays it
  (32 mixed Wikipedia prompts: 5.75 -> 3.06 s; the 8 prompts of a GRACE step: 0.97 -> 0.92 s);
- **pooling from the generation pass**: the prefill hidden states of the pooled prompt positions
  and the hidden state of every generated token (computed when that token is fed back) are
  summed into the masked mean on the fly; the log-prob of each sampled token at its row's
  sampling temperature (the PPO "old" log-prob) is read from the same logits that sampled it;
- **early exit**: a row stops once its EOS has been fed; finished rows are dropped from the
  batch and the cache when they make up a quarter of it (dropping copies the cache, so it is
  batched), and the loop stops when every row is done;
- **preallocated KV cache**: keys and values are written in place into buffers sized for the
  whole rollout, instead of ``torch.cat``-ing the whole cache at every decoding step.

The result is the ``ScoredSequences`` that the simple pipeline returns (same layout: left-padded
prompts ++ right-padded rationales), so the trainer's policy update and the encoder use it as is.
Embeddings match a separate forward pass to float32 rounding (tested).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from grace.models.backbones import decoder_and_head, end_token_ids
from grace.models.pooling import pool_sums, text_share
from grace.models.prompt import PromptBatch
from grace.rollout.batch import ScoredSequences
from grace.rollout.buckets import length_buckets
from grace.rollout.decode_step import head_logits
from grace.rollout.hf_path import sequences_from_response_tensor
from grace.rollout.kv_cache import PreallocatedLayer, cache_kwargs, fill_to, make_cache, place_rows, repeated_cache
from grace.rollout.sampling import sample_and_score


@dataclass
class _Layout:
    """Prompts re-laid out as a shared prefix (length S, possibly 0) plus right-padded suffixes."""

    prefix: torch.Tensor  # (1, S)
    suffix: torch.Tensor  # (b, L) right-padded
    suffix_mask: torch.Tensor  # (b, L)
    pool_mask: torch.Tensor  # (b, L) suffix positions that count in the mean
    lengths: torch.Tensor  # (b,) real suffix lengths


def split_shared_prefix(prompts: PromptBatch, pad_id: int, share: bool = True) -> _Layout:
    """Cut the system prefix that every row shares (the tokens before ``pool_start``) off the
    left-padded prompts. When rows disagree on it (or ``share`` is False) S is 0."""
    ids, mask, pool_start = prompts.input_ids, prompts.attention_mask, prompts.pool_start
    pad = ids.shape[1] - mask.sum(dim=1)  # (b,)
    rows = [ids[r, pad[r] :] for r in range(ids.shape[0])]
    n_prefix = (pool_start - pad).tolist()  # system-prefix tokens of each row
    S = n_prefix[0] if share and len(set(n_prefix)) == 1 else 0
    S = min(S, min(len(r) for r in rows) - 1)  # every row keeps at least one suffix token
    if S > 0 and not all(torch.equal(r[:S], rows[0][:S]) for r in rows[1:]):
        S = 0
    lengths = torch.tensor([len(r) - S for r in rows])  # (b,)
    L = int(lengths.max())
    suffix = torch.full((len(rows), L), pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        suffix[r, : lengths[r]] = row[S:]
    positions = torch.arange(L)[None, :]  # (1, L)
    suffix_mask = (positions < lengths[:, None]).long()  # (b, L)
    offsets = torch.tensor(n_prefix) - S  # (b,) pooling starts this far into the suffix
    pool_mask = suffix_mask.bool() & (positions >= offsets[:, None])
    return _Layout(rows[0][:S][None, :].clone(), suffix, suffix_mask, pool_mask, lengths)


@dataclass
class Prefilled:
    """State after the prefill of a chunk of prompts (b rows)."""

    cache: DynamicCache
    attn: torch.Tensor  # (b, S+L) attention mask of what the cache holds
    pool_sum: torch.Tensor  # (b, D) float32 sum of the pooled prompt hidden states
    pool_count: torch.Tensor  # (b,) float32 how many were summed
    last_hidden: torch.Tensor  # (b, D) hidden state of each prompt's last token
    next_pos: torch.Tensor  # (b,) position id of the first generated token


@torch.no_grad()
def prefill(model, prompts: PromptBatch, pad_id: int, share_prefix: bool, room: int) -> Prefilled:
    """Run the prompts (shared prefix once, then the suffixes) and pool their hidden states;
    the cache keeps ``room`` free positions for generation."""
    decoder, _ = decoder_and_head(model)
    device = next(model.parameters()).device
    lay = split_shared_prefix(prompts, pad_id, share_prefix)
    b, L = lay.suffix.shape
    S = lay.prefix.shape[1]
    cache = make_cache(model, S + L + room + 1)
    if S:
        decoder(input_ids=lay.prefix.to(device), position_ids=torch.arange(S, device=device)[None],
                **cache_kwargs(decoder, cache), use_cache=True)
    attn = torch.cat([torch.ones(b, S, dtype=torch.long), lay.suffix_mask], dim=1).to(device)  # (b, S+L)
    buckets = length_buckets(lay.lengths.tolist())
    if len(buckets) > 1 and S and all(isinstance(c, PreallocatedLayer) for c in cache.layers):
        cache, hidden = _bucketed_suffixes(decoder, cache, lay, buckets, attn, room)
    else:
        if S:
            cache.batch_repeat_interleave(b)
        hidden = decoder(input_ids=lay.suffix.to(device), attention_mask=attn,
                         position_ids=(S + torch.arange(L, device=device))[None].expand(b, L),
                         **cache_kwargs(decoder, cache), use_cache=True).last_hidden_state  # (b, L, D)
    weights = lay.pool_mask.to(device, torch.float32).unsqueeze(-1)  # (b, L, 1)
    return Prefilled(
        cache=cache,
        attn=attn,
        pool_sum=(hidden.float() * weights).sum(dim=1),
        pool_count=weights.sum(dim=1).squeeze(-1),
        last_hidden=hidden[torch.arange(b, device=device), lay.lengths.to(device) - 1],
        next_pos=(S + lay.lengths).to(device),
    )


def _bucketed_suffixes(decoder, prefix_cache, lay: _Layout, buckets, attn, room: int):
    """The suffixes run bucket by bucket (rows of similar length, each padded only to its own
    longest: ``grace.rollout.buckets``) on copies of the one-row ``prefix_cache``; their keys and
    values are placed in one cache of all b rows, laid out as the single batched call lays them
    (columns past a row's suffix: zeros, masked by ``attn``). -> (cache, hidden (b, L, D))."""
    device = attn.device
    b, L = lay.suffix.shape
    S = lay.prefix.shape[1]
    cache = repeated_cache(prefix_cache, b, S + L + room + 1)
    hidden = None
    for bucket in buckets:
        rows = torch.tensor(bucket, device=device)
        width = int(lay.lengths[bucket].max())
        part = repeated_cache(prefix_cache, len(bucket), S + width)
        out = decoder(input_ids=lay.suffix[bucket, :width].to(device), attention_mask=attn[rows, : S + width],
                      position_ids=(S + torch.arange(width, device=device))[None].expand(len(bucket), width),
                      **cache_kwargs(decoder, part), use_cache=True).last_hidden_state  # (rows, width, D)
        if hidden is None:
            hidden = out.new_zeros(b, L, out.shape[-1])
        hidden[rows, :width] = out
        place_rows(cache, part, rows, S)
    fill_to(cache, S + L)
    return cache, hidden


@torch.no_grad()
def _rollout_chunk(model, prompts: PromptBatch, *, counts, temperatures, top_p,
                   max_new_tokens, eos_ids, pad_id, share_prefix, with_logprobs, decode="auto",
                   pooling="mean", normalize=True):
    """Rationale tokens (N, T), their log-probs (N, T) and embeddings (N, D) for one chunk
    (L2-normalised unless ``normalize`` is False);
    prompt i gets ``counts[i]`` rows (group-major) sampled at ``temperatures[i]``; N = sum of
    counts; T <= max_new_tokens (early exit)."""
    decoder, head = decoder_and_head(model)
    device = next(model.parameters()).device
    pre = prefill(model, prompts, pad_id, share_prefix, max_new_tokens)
    cache, attn, pool_sum, pool_count, next_pos = (
        pre.cache, pre.attn, pre.pool_sum, pre.pool_count, pre.next_pos)
    step = _decode_step(model, cache, decode)
    logits = head_logits(head, pre.last_hidden)  # (b, V)
    counts = torch.as_tensor(counts, device=device)  # (b,)
    row_temps = torch.as_tensor(temperatures, dtype=torch.float32, device=device).repeat_interleave(counts)
    if bool((counts != 1).any()):  # one prefill per prompt, its cache copied to its rows
        if bool((counts == counts[0]).all()):
            cache.batch_repeat_interleave(int(counts[0]))
        else:
            cache.batch_select_indices(torch.arange(len(counts), device=device).repeat_interleave(counts))
        pool_sum, pool_count, logits, attn, next_pos = (
            t.repeat_interleave(counts, dim=0) for t in (pool_sum, pool_count, logits, attn, next_pos))
    prompt_sum, prompt_count = (pool_sum.clone(), pool_count.clone()) if pooling != "mean" else (None, None)
    N = int(counts.sum())
    ends = torch.as_tensor(eos_ids, dtype=torch.long, device=device)  # (E,) any of them ends a row
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(N, max_new_tokens, device=device)
    rows = torch.arange(N, device=device)  # full-batch row of each row in the cache
    done = torch.zeros(N, dtype=torch.bool, device=device)  # finished rows not yet dropped
    steps = 0
    for t in range(max_new_tokens):
        live = ~done
        tok, lp = sample_and_score(logits, row_temps[rows], top_p, with_logprobs)  # (n,), (n,)
        tok = tok.masked_fill(done, pad_id)
        tokens[rows[live], t] = tok[live]
        if with_logprobs:
            logprobs[rows[live], t] = lp[live]
        steps = t + 1
        attn = torch.cat([attn, live.long()[:, None]], dim=1)
        if step is not None:
            hidden = step(tok, next_pos, cache, attn.bool())  # (n, D): the fed token
        else:
            hidden = decoder(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                             **cache_kwargs(decoder, cache), use_cache=True).last_hidden_state[:, 0]
        pool_sum[rows[live]] += hidden[live].float()
        pool_count[rows[live]] += 1
        next_pos = next_pos + 1
        done = done | (live & torch.isin(tok, ends))
        if t == max_new_tokens - 1 or bool(done.all()):
            break
        if 4 * int(done.sum()) >= len(rows):  # drop finished rows once they are a quarter
            index = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(index)
            rows, attn, next_pos, hidden, done = rows[index], attn[index], next_pos[index], hidden[index], done[index]
        logits = head_logits(head, hidden)  # (n, V)
    if pooling == "mean":
        embeddings = pool_sum / pool_count.clamp(min=1)[:, None]  # (N, D)
        embeddings = F.normalize(embeddings, dim=-1) if normalize else embeddings
    else:  # the rationale's share is what decoding added to the prompt's sums
        embeddings = pool_sums(prompt_sum, prompt_count, pool_sum - prompt_sum,
                               pool_count - prompt_count, pooling, normalize)
    return tokens[:, :steps], logprobs[:, :steps], embeddings


DECODE_MODES = ("auto", "static", "compiled", "hf")
_FALLBACKS_SAID: set[str] = set()


def _decode_step(model, cache, decode: str):
    """The decoding step to use: grace.rollout.decode_step's static step where the model and
    cache allow it (``auto``, ``static``; ``compiled``: that step under torch.compile), else None
    (the HF decoder; ``hf``, or ``auto`` with a model it cannot run, said once per reason in
    the log)."""
    from grace.rollout.decode_step import StaticDecodeStep, unsupported

    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    if decode == "hf":
        return None
    reason = unsupported(model, cache)
    if reason is None:
        return StaticDecodeStep(model, compiled=decode == "compiled")
    if decode in ("static", "compiled"):
        raise ValueError(f"the static decode step cannot run this model: {reason}")
    if reason not in _FALLBACKS_SAID:
        _FALLBACKS_SAID.add(reason)
        logging.getLogger(__name__).info("rollouts decode through the HF decoder: %s", reason)
    return None


def _per_prompt(value, n: int, name: str) -> list:
    if isinstance(value, (int, float)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} prompts")
    return value


@torch.no_grad()
def generate_and_score(
    model,
    tokenizer,
    prompts: PromptBatch,
    *,
    num_samples=1,
    temperature=1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    share_prefix: bool = True,
    with_logprobs: bool = True,
    decode: str = "auto",
    pooling: str = "mean",
    normalize: bool = True,
) -> ScoredSequences:
    """Sample rationales and return them with their embeddings and log-probs at each row's
    sampling temperature (log softmax(logits / T); greedy rows at T = 1), as
    ``score_sequences(..., temperature=T)`` would.

    ``num_samples`` and ``temperature`` are numbers or one value per prompt (so one call can
    serve, e.g., a step's greedy-ish context rationales and its sampled groups together); a
    temperature of 0 is greedy. Rows are group-major (prompt 0's samples first). Prompts are
    decoded together up to ``batch_size`` rows (a group is never split); sort prompts by length
    beforehand for the least padding. ``decode``: ``auto`` (the static step of
    grace.rollout.decode_step where the model allows it, else the HF decoder), ``static``
    (that step or an error), ``compiled`` (that step under ``torch.compile``: 3-4 minutes to
    build once per process on 2 cores, and slower than uncompiled on our 2-core machine, 0.75x
    in benchmarks/speed/bench_rollout.py; it falls back uncompiled where compilation fails)
    or ``hf``. ``pooling``: ``mean`` (the paper: every pooled prompt and rationale token alike)
    or ``balanced`` (prompt mean and rationale mean with equal weight) or ``text:W`` (the prompt
    mean weighs W; grace.models.pooling.pool_sums). ``normalize=False``: the embeddings before their L2
    normalisation.
    """
    text_share(pooling)  # a ValueError names the poolings
    n_prompts = prompts.input_ids.shape[0]
    counts = _per_prompt(num_samples, n_prompts, "num_samples")
    temps = _per_prompt(temperature, n_prompts, "temperature")
    if min(counts, default=1) < 1:
        raise ValueError("num_samples must be >= 1")
    chunks, start = [], 0
    while start < n_prompts:  # greedy: as many prompts as fit in batch_size rows, at least one
        end, rows = start + 1, counts[start]
        while end < n_prompts and rows + counts[end] <= batch_size:
            rows += counts[end]
            end += 1
        chunks.append((start, end))
        start = end
    eos_ids = end_token_ids(model, tokenizer)  # a rollout ends at any of them (as HF generate)
    was_training = model.training
    model.eval()
    tokens, logprobs, embeddings = [], [], []
    for start, end in chunks:
        part = prompts.select(slice(start, end))
        tok, lp, emb = _rollout_chunk(
            model, part, counts=counts[start:end], temperatures=temps[start:end], top_p=top_p,
            max_new_tokens=max_new_tokens, eos_ids=eos_ids,
            pad_id=tokenizer.pad_token_id, share_prefix=share_prefix, with_logprobs=with_logprobs,
            decode=decode, pooling=pooling, normalize=normalize,
        )
        tokens.append(tok)
        logprobs.append(lp)
        embeddings.append(emb)
    model.train(was_training)
    width = max(t.shape[1] for t in tokens)
    response = torch.cat([F.pad(t, (0, width - t.shape[1]), value=tokenizer.pad_token_id) for t in tokens])
    seqs = sequences_from_response_tensor(prompts, torch.tensor(counts), response, eos_ids)
    lp = torch.cat([F.pad(x, (0, width - x.shape[1])) for x in logprobs]) * seqs.response_mask
    return ScoredSequences(seqs, torch.cat(embeddings), lp if with_logprobs else torch.zeros_like(lp))


@torch.no_grad()
def pool_prompts(model, tokenizer, prompts: PromptBatch, *, batch_size: int = 64,
                 share_prefix: bool = True, normalize: bool = True) -> torch.Tensor:
    """Embeddings of the prompts alone (no rationale: the "base" mode), the shared system
    prefix run once per chunk. -> (N, D) float32, L2-normalised unless ``normalize`` is False."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, prompts.input_ids.shape[0], batch_size):
        pre = prefill(model, prompts.select(slice(start, start + batch_size)), tokenizer.pad_token_id, share_prefix, room=0)
        mean = pre.pool_sum / pre.pool_count.clamp(min=1)[:, None]  # (n, D)
        out.append(F.normalize(mean, dim=-1) if normalize else mean)
    model.train(was_training)
    return torch.cat(out)
