"""Embed texts with a GRACE policy: prompt -> rationale -> pooled, normalised hidden states.

Rationale modes:
- ``none``: no rationale, plain mean pooling over the prompt after the system prefix (the
  "base" baseline of the paper);
- ``greedy``: one deterministic greedy rationale per text (our default: the same text always
  gets the same embedding);
- ``sampled``: ``num_samples`` rationales at ``temperature``; their embeddings are averaged and
  renormalised. With a cache, sample k of a text is stored and reused, so re-encoding returns
  the same embedding;
- ``echo``: no generation: the "rationale" is the text itself (its first ``max_new_tokens``
  tokens), placed where a rationale goes and pooled like one, in one forward pass. Copying
  the input is what echo embeddings do (Springer et al. 2024, arXiv 2402.15449); it is the
  baseline that says whether a generated rationale adds more than a copy would.

Texts are processed in length-sorted batches and returned in input order. Generation runs on
``grace.rollout.engine`` (one pass: rationale and pooled embedding together, the system prefix shared).
Rationales and their embeddings come from the ``RationaleCache`` when one is given and holds
them; only the missing ones are generated, and every batch's new entries are stored before the
next batch starts.

Embeddings are L2-normalised unless ``normalize=False``, which returns the raw pooled vectors
(in ``sampled`` mode the mean of the samples' raw vectors; the normalised embedding stays the
renormalised mean of their unit vectors). The cache stores raw vectors and normalises on read,
so one entry serves both. Entries written before raw vectors were stored hold unit vectors
under the key without ``"embedding": "raw"`` (``EncodeOptions.generation_key(legacy=True)``):
their rationales are reused (nothing is generated again) and their vectors are recomputed by one
scoring pass, then stored in the new form. The same holds across poolings: the pooling changes
the stored vector, not the rationale, so reading a model with a second pooling reuses the first
one's rationales (``EncodeOptions.rationale_keys``) and runs only the scoring pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from grace.data.length_sorted import length_sorted_batches
from grace.models.backbones import end_token_ids
from grace.models.pooling import POOLINGS, text_share
from grace.models.prompt import SYSTEM_PROMPT, PromptBatch, build_prompts
from grace.rollout.engine import generate_and_score, pool_prompts
from grace.rollout.generation_cache import RationaleCache, settings_key
from grace.rollout.hf_path import response_token_lists, score_sequences, sequences_from_responses

RATIONALE_MODES = ("none", "greedy", "sampled", "echo")


@dataclass
class EncodeOptions:
    rationale: str = "greedy"  # none | greedy | sampled | echo
    max_new_tokens: int = 64  # rationale length cap
    num_samples: int = 1  # rationales averaged in "sampled" mode
    temperature: float = 1.0  # sampling temperature in "sampled" mode
    top_p: float = 1.0  # nucleus sampling in "sampled" mode
    batch_size: int = 32  # texts per generation / forward batch (decoding is faster in bigger batches)
    max_prompt_tokens: int = 1024  # longer prompts are truncated (with a warning)
    system_prompt: str = SYSTEM_PROMPT
    pooling: str = "mean"  # mean (paper: every text and rationale token alike) | balanced (text
    # mean and rationale mean with equal weight) | text:W (the text mean weighs W, the rationale
    # mean 1 - W; grace.models.pooling.pool_sums)

    def __post_init__(self) -> None:
        if self.rationale not in RATIONALE_MODES:
            raise ValueError(f"rationale must be one of {RATIONALE_MODES}, got {self.rationale!r}")
        text_share(self.pooling)  # a ValueError names the poolings
        if self.num_samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("num_samples, max_new_tokens and batch_size must be >= 1")

    @property
    def samples(self) -> int:
        return self.num_samples if self.rationale == "sampled" else 1

    def generation_key(self, legacy: bool = False) -> str:
        """The cache key's settings part: what changes a rationale, and what changes the
        embedding stored with it (the pooling; its form, ``"embedding": "raw"``). ``legacy``:
        the key of the entries written before raw vectors were stored (module docstring)."""
        keep = ("rationale", "max_new_tokens", "max_prompt_tokens", "system_prompt")
        if self.rationale == "sampled":
            keep += ("temperature", "top_p")
        if self.pooling != "mean":  # the cache holds embeddings too (mean: keys as before)
            keep += ("pooling",)
        settings = {k: v for k, v in asdict(self).items() if k in keep}
        return settings_key(**settings) if legacy else settings_key(**settings, embedding="raw")

    def rationale_keys(self) -> tuple[str, ...]:
        """The other cache keys whose entries hold the very rationales of these settings (the
        pooling only changes the stored embedding): this key's legacy form, then each other
        named pooling's key and its legacy form (a ``text:W`` reading finds the rationales
        that a mean or balanced reading stored). A hit under one of them reuses the rationale and
        recomputes only the embedding, so reading a model with a second pooling generates
        nothing again."""
        others = [replace(self, pooling=p) for p in POOLINGS if p != self.pooling]
        return (self.generation_key(legacy=True),
                *(k for o in others for k in (o.generation_key(), o.generation_key(legacy=True))))


def _generate(model, tokenizer, prompts: PromptBatch, opts: EncodeOptions):
    """Rationale ids and raw embeddings of ``samples`` rollouts per prompt, from one engine pass."""
    n = opts.samples
    scored = generate_and_score(
        model, tokenizer, prompts, num_samples=n,
        temperature=0.0 if opts.rationale == "greedy" else opts.temperature, top_p=opts.top_p,
        max_new_tokens=opts.max_new_tokens, batch_size=prompts.input_ids.shape[0] * n,
        with_logprobs=False, pooling=opts.pooling, normalize=False,
    )
    return response_token_lists(scored.seqs), scored.embeddings.float().cpu().numpy()


def _echo(model, tokenizer, texts: list[str], prompts: PromptBatch, opts: EncodeOptions,
          normalize: bool = True):
    """The ``echo`` mode: each text's own first ``max_new_tokens`` tokens as its rationale."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][: opts.max_new_tokens] for t in texts]
    seqs = sequences_from_responses(prompts, ids, tokenizer.pad_token_id, end_token_ids(model, tokenizer))
    emb = score_sequences(model, seqs, opts.batch_size, with_logprobs=False, pooling=opts.pooling,
                          normalize=normalize).embeddings.float().cpu()
    rationales = [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
    return emb, rationales, ids


def encode_batch(model, tokenizer, texts: list[str], opts: EncodeOptions, cache, fingerprint,
                 normalize: bool = True):
    """(embeddings (B, D), rationale texts, rationale token ids of the first sample); the
    embeddings L2-normalised unless ``normalize`` is False (module docstring)."""
    prompts = build_prompts(tokenizer, texts, opts.system_prompt, opts.max_prompt_tokens)
    if opts.rationale == "none":
        emb = pool_prompts(model, tokenizer, prompts, batch_size=opts.batch_size, normalize=normalize)
        return emb, [""] * len(texts), [[] for _ in texts]
    if opts.rationale == "echo":
        return _echo(model, tokenizer, texts, prompts, opts, normalize)
    n, key, fallback = opts.samples, opts.generation_key(), opts.rationale_keys()
    # entries[k][i]: (rationale ids, raw embedding or None) of sample k of text i, None if unknown
    entries = [cache.get_entries(fingerprint, key, texts, k, fallback=fallback) if cache is not None
               else [None] * len(texts) for k in range(n)]
    missing = [i for i in range(len(texts)) if any(entries[k][i] is None for k in range(n))]
    if missing:
        ids, emb = _generate(model, tokenizer, prompts.select(missing), opts)
        for k in range(n):
            rows = [j * n + k for j in range(len(missing))]
            for j, i in enumerate(missing):
                entries[k][i] = (ids[j * n + k], emb[j * n + k])
            if cache is not None:
                cache.put_many(fingerprint, key, [texts[i] for i in missing], [ids[r] for r in rows],
                               k, emb[rows])
    stale = [(k, i) for k in range(n) for i in range(len(texts)) if entries[k][i][1] is None]
    if stale:  # cached rationales without this key's raw embedding (older cache files, another
        # pooling): one scoring pass
        rows = prompts.select([i for _, i in stale])
        seqs = sequences_from_responses(rows, [entries[k][i][0] for k, i in stale],
                                        tokenizer.pad_token_id, end_token_ids(model, tokenizer))
        emb = score_sequences(model, seqs, opts.batch_size, with_logprobs=False,
                              pooling=opts.pooling, normalize=False).embeddings.cpu().numpy()
        for (k, i), e in zip(stale, emb):
            entries[k][i] = (entries[k][i][0], e)
        for k in range(n):  # store the embeddings (only a cache can hold stale entries)
            done = [i for kk, i in stale if kk == k]
            if done:
                cache.put_many(fingerprint, key, [texts[i] for i in done],
                               [entries[k][i][0] for i in done], k, [entries[k][i][1] for i in done])
    stacked = torch.from_numpy(np.stack([[entries[k][i][1] for k in range(n)] for i in range(len(texts))]))  # (B, n, D) raw
    if normalize:  # (B, D) the samples' unit vectors averaged, renormalised
        emb = F.normalize(F.normalize(stacked, dim=-1).mean(dim=1), dim=-1)
    else:  # (B, D) the samples' raw vectors averaged
        emb = stacked.mean(dim=1)
    ids = [list(entries[0][i][0]) for i in range(len(texts))]  # first sample's rationale tokens
    rationales = [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
    return emb, rationales, ids


def embed_texts(
    model,
    tokenizer,
    texts: list[str],
    options: EncodeOptions | None = None,
    show_progress: bool = False,
    cache: RationaleCache | None = None,
    fingerprint: str | None = None,
    return_ids: bool = False,
    normalize: bool = True,
):
    """Embeddings (N, D) float32 (L2-normalised unless ``normalize`` is False) and the rationale
    of each text (first sample);
    with ``return_ids`` also each text's rationale token ids (first sample, up to and including
    the end token: what the quality figures of grace.rollout.quality read).

    ``cache`` and ``fingerprint`` (``grace.models.fingerprint.model_fingerprint(model)``) go
    together: rationales are looked up and stored under that model's fingerprint.
    """
    opts = options or EncodeOptions()
    if cache is not None and fingerprint is None:
        raise ValueError("a rationale cache needs the model fingerprint")
    embeddings: list[torch.Tensor | None] = [None] * len(texts)
    rationales: list[str] = [""] * len(texts)
    rationale_ids: list[list[int]] = [[] for _ in texts]
    batches = length_sorted_batches([len(t) for t in texts], opts.batch_size)
    for batch in tqdm(batches, desc=f"encode ({opts.rationale})", disable=not show_progress):
        emb, rat, ids = encode_batch(model, tokenizer, [texts[i] for i in batch], opts, cache,
                                     fingerprint, normalize)
        for row, index in enumerate(batch):
            embeddings[index], rationales[index] = emb[row], rat[row]
            rationale_ids[index] = list(ids[row])
    if texts:
        out = torch.stack(embeddings).cpu().numpy()  # (N, D)
    else:
        out = np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return (out, rationales, rationale_ids) if return_ids else (out, rationales)
