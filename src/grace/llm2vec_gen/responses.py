"""The backbone's own responses to the training queries (LLM2Vec-Gen paper, arXiv 2603.10913), kept in grace's one generation cache.

Each training query (the encoder's ``input_text``) is answered by the frozen backbone under the
tokenizer's chat template (grace.llm2vec_gen.inputs.chat_prompt), greedily by default, up to
``max_new_tokens``. A response is a generation like a rationale, so it is stored where
rationales are: the SQLite cache of grace.rollout.generation_cache (``llm2vec_gen.cache``, default
``$GRACE_CACHE/rationales.sqlite``), keyed by (backbone fingerprint, response settings, query),
holding the response's token ids (EOS last when the backbone ended by itself). Every generation
batch is committed at once: a killed run keeps every batch it finished, and the next run (or any
later run with the same backbone and settings) generates only what is missing.

``llm2vec_gen.responses_file``: a JSON-lines file of responses to train on instead (hand-written,
or another model's), read and never written: ``{"text": QUERY, "response": TEXT, "finished":
BOOL}`` per line, optionally after a first line ``{"settings": {...}}``; a file whose settings
differ from the run's is refused (a one-line error naming the file). Queries the file lacks are
generated into the cache.

Old caches: before this, a run's responses were cached in
``$GRACE_CACHE/llm2vec-gen/responses-<hash of the settings>.jsonl``. When that file exists for a
run's settings it is imported into the SQLite cache (its texts tokenised back to ids) and renamed
``*.jsonl.imported`` (kept, never read again).

Sampling (``temperature > 0``) is seeded per generation batch, so a resumed run does not repeat
the exact samples of an interrupted one; the cache keeps whatever was generated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from grace.data.length_sorted import length_sorted_batches
from grace.data.readers import json_lines
from grace.errors import GraceInputError
from grace.llm2vec_gen.inputs import chat_prompt
from grace.models.backbones import cache_dir, cast_copy, resolve_dtype
from grace.models.prompt import PromptBatch, left_pad
from grace.rollout.generation_cache import RationaleCache, settings_key


@dataclass(frozen=True)
class Response:
    text: str  # the backbone's answer, special tokens removed
    finished: bool  # ended with EOS (not cut at max_new_tokens)
    num_tokens: int  # generated tokens, EOS included


def response_settings(backbone: str, backbone_fingerprint: str, g) -> dict:
    """What a run's responses depend on (``g``: the ``LLM2VecGenConfig``): part of their cache
    key, and what a responses file's settings line must match."""
    settings = {"backbone": backbone, "backbone_fingerprint": backbone_fingerprint,
                "max_new_tokens": g.response_max_new_tokens, "temperature": g.response_temperature}
    if g.response_dtype != "auto":  # responses made in another dtype are other responses
        settings["dtype"] = g.response_dtype
    return settings


def default_cache_file() -> Path:
    """The generation cache a run uses without ``llm2vec_gen.cache``: the encoders' one."""
    return cache_dir() / "rationales.sqlite"


def legacy_responses_file(settings: dict) -> Path:
    """Where a run with these settings cached its responses before they moved to SQLite."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "llm2vec-gen" / f"responses-{digest}.jsonl"


def read_responses_file(path: str | Path, settings: dict | None = None) -> dict[str, Response]:
    """query -> Response from a responses file (module docstring); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise GraceInputError(f"llm2vec_gen.responses_file {path}: not found (the file is read, not "
                              "written: generated responses go to the generation cache, "
                              "llm2vec_gen.cache)")
    entries: dict[str, Response] = {}
    for number, (where, row) in enumerate(json_lines(path)):
        if not isinstance(row, dict):
            raise GraceInputError(f"{where}: expected a JSON object")
        if "settings" in row and number == 0:
            if settings is not None and row["settings"] != settings:
                raise GraceInputError(
                    f"{where}: these responses were generated with other settings "
                    f"({json.dumps(row['settings'], sort_keys=True)}); point "
                    "llm2vec_gen.responses_file to another file")
            continue
        for key in ("text", "response"):
            if not isinstance(row.get(key), str):
                raise GraceInputError(f"{where}: field '{key}' is missing or not a string")
        entries[row["text"]] = Response(row["response"], bool(row.get("finished", True)),
                                        int(row.get("num_tokens", 0)))
    return entries


class ResponseCache:
    """query -> ``Response``: a responses file (if given) over the SQLite generation cache
    (module docstring). ``add`` stores generated token ids in the SQLite cache."""

    KIND = "llm2vec-gen-response"  # marks these entries among the rationales of one cache file

    def __init__(self, tokenizer, settings: dict, cache: str | Path | RationaleCache | None = None,
                 responses_file: str | Path | None = None):
        self.tokenizer = tokenizer
        self.settings = settings
        self.store = cache if isinstance(cache, RationaleCache) else RationaleCache(
            cache or default_cache_file())
        self.fingerprint = settings.get("backbone_fingerprint", "")
        self.key = settings_key(kind=self.KIND, **{k: v for k, v in settings.items()
                                                    if k != "backbone_fingerprint"})
        self.imported = self._import_legacy()
        self.entries: dict[str, Response] = {
            text: self._response(ids)
            for text, ids in self.store.entries_of(self.fingerprint, self.key).items()}
        if responses_file is not None:
            self.entries.update(read_responses_file(responses_file, settings))

    @property
    def where(self) -> Path:
        return self.store.path

    def _response(self, ids: list[int]) -> Response:
        eos = self.tokenizer.eos_token_id
        finished = bool(ids) and ids[-1] == eos
        text = self.tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True).strip()
        return Response(text, finished, len(ids))

    def _import_legacy(self) -> int:
        """Import this run's old JSONL cache, if any (module docstring); how many responses."""
        legacy = legacy_responses_file(self.settings)
        if not legacy.is_file():
            return 0
        entries = read_responses_file(legacy, self.settings)
        eos = self.tokenizer.eos_token_id
        texts = list(entries)
        ids = [self.tokenizer(r.text, add_special_tokens=False)["input_ids"] + ([eos] if r.finished else [])
               for r in entries.values()]
        self.store.put_many(self.fingerprint, self.key, texts, ids)
        legacy.rename(legacy.with_name(legacy.name + ".imported"))
        return len(texts)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, text: str) -> bool:
        return text in self.entries

    def __getitem__(self, text: str) -> Response:
        return self.entries[text]

    def add(self, texts: list[str], ids: list[list[int]]) -> None:
        """Store one generation batch (committed at once)."""
        self.store.put_many(self.fingerprint, self.key, texts, ids)
        self.entries.update((t, self._response(i)) for t, i in zip(texts, ids))


def run_responses(tokenizer, spec, g) -> ResponseCache:
    """The responses of a run whose model has ``spec`` (an ``LLM2VecGenSpec``) and whose
    ``llm2vec_gen`` config is ``g``: its responses file (if any) over the generation cache."""
    settings = response_settings(spec.backbone, spec.backbone_fingerprint, g)
    return ResponseCache(tokenizer, settings, g.cache, g.responses_file)


def chat_prompt_batch(tokenizer, texts: list[str]) -> PromptBatch:
    """The chat prompts of ``texts``, left-padded, as a ``PromptBatch`` whose "system prefix"
    is the token prefix every prompt shares (the template's default system message, if any):
    grace.rollout.engine runs it once for the whole batch. Nothing is pooled from it."""
    ids = [tokenizer(chat_prompt(tokenizer, t), add_special_tokens=False)["input_ids"] for t in texts]
    shared = min(len(x) for x in ids) - 1  # every prompt keeps at least one token of its own
    for row in ids[1:]:
        shared = next((i for i in range(shared) if row[i] != ids[0][i]), shared)
    input_ids, mask = left_pad(ids, tokenizer.pad_token_id)  # (B, P)
    pad = input_ids.shape[1] - mask.sum(dim=1)  # (B,)
    return PromptBatch(input_ids, mask, pad + max(shared, 0), 0)


def generate_batch(backbone, tokenizer, texts: list[str], max_new_tokens: int,
                   temperature: float) -> list[list[int]]:
    """The token ids of the backbone's answers to ``texts`` (chat template; EOS last when it
    ended by itself), greedy at temperature 0, decoded by grace.rollout.engine (shared template
    prefix run once, early exit; no log-probs)."""
    from grace.rollout.engine import generate_and_score
    from grace.rollout.hf_path import response_token_lists

    scored = generate_and_score(backbone, tokenizer, chat_prompt_batch(tokenizer, texts),
                                num_samples=1, temperature=temperature,
                                max_new_tokens=max_new_tokens, batch_size=len(texts),
                                with_logprobs=False)
    return response_token_lists(scored.seqs)


def responder(backbone, response_dtype: str, needed: bool):
    """The model that answers: ``backbone``, or (``response_dtype`` differs from its dtype and
    there is something to generate) a copy in that dtype."""
    if needed and response_dtype != "auto" and resolve_dtype(response_dtype) != next(
            backbone.parameters()).dtype:
        return cast_copy(backbone, resolve_dtype(response_dtype))
    return backbone


def ensure_responses(backbone, tokenizer, texts: list[str], cache: ResponseCache, *,
                     max_new_tokens: int, temperature: float, batch_size: int, seed: int = 0,
                     show_progress: bool = True) -> int:
    """Generate (and append to ``cache``) the responses ``texts`` lack; return how many."""
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    batches = [[missing[i] for i in rows]  # similar lengths batch together
               for rows in length_sorted_batches([len(t) for t in missing], batch_size)]
    bar = tqdm(total=len(missing), desc="llm2vec-gen responses", disable=not show_progress or not missing)
    for index, batch in enumerate(batches):
        if temperature > 0:
            torch.manual_seed(seed * 1_000_003 + index)
        cache.add(batch, generate_batch(backbone, tokenizer, batch, max_new_tokens, temperature))
        bar.update(len(batch))
    bar.close()
    return len(missing)


def ensure_run_responses(backbone, tokenizer, texts: list[str], cache: ResponseCache, g,
                         seed: int = 0) -> int:
    """``ensure_responses`` with a run's response settings (``g``: its ``LLM2VecGenConfig``),
    from a copy in ``g.response_dtype`` when there is something to generate; how many."""
    model = responder(backbone, g.response_dtype, any(t not in cache for t in texts))
    return ensure_responses(model, tokenizer, texts, cache, max_new_tokens=g.response_max_new_tokens,
                            temperature=g.response_temperature, batch_size=g.response_batch_size,
                            seed=seed)
