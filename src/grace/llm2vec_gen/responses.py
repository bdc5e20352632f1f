"""The backbone's own responses to the training queries (LLM2Vec-Gen paper, arXiv 2603.10913), cached in a JSONL file.

Each training query (the encoder's ``input_text``) is answered by the frozen backbone under the
tokenizer's chat template (grace.llm2vec_gen.inputs.chat_prompt), greedily by default, up to
``max_new_tokens``. Answers are appended to a JSONL file, one line per query, flushed after
every generation batch: a killed run keeps every batch it finished (a line cut by the kill is
dropped when the file is next opened) and the next run generates only what is missing; later
runs with the same backbone and settings reuse the file.

File format:
- optional first line ``{"settings": {...}}``: the backbone fingerprint and generation settings
  the responses were made with. A file whose settings differ from the run's is refused (a
  one-line error naming the file); a file without that line (for example hand-written) is used
  as it is.
- then one line per query: ``{"text": QUERY, "response": TEXT, "finished": BOOL, "num_tokens": N}``
  (``finished``: the backbone ended with EOS before ``max_new_tokens``; only finished responses
  get EOS as their last reconstruction target).

The default file is ``$GRACE_CACHE/llm2vec-gen/responses-<hash of the settings>.jsonl``.
Sampling (``temperature > 0``) is seeded per generation batch, so a resumed run does not repeat
the exact samples of an interrupted one; the file keeps whatever was generated.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from grace.data.batching import length_sorted_batches
from grace.data.readers import json_lines
from grace.errors import GraceInputError
from grace.llm2vec_gen.inputs import chat_prompt
from grace.models.backbones import cache_dir, cast_copy, resolve_dtype
from grace.models.prompt import PromptBatch, left_pad


@dataclass(frozen=True)
class Response:
    text: str  # the backbone's answer, special tokens removed
    finished: bool  # ended with EOS (not cut at max_new_tokens)
    num_tokens: int  # generated tokens, EOS included


def response_settings(backbone: str, backbone_fingerprint: str, g) -> dict:
    """What a run's responses depend on (``g``: the ``LLM2VecGenConfig``): the key of the
    default responses file and the settings line the cache checks."""
    settings = {"backbone": backbone, "backbone_fingerprint": backbone_fingerprint,
                "max_new_tokens": g.response_max_new_tokens, "temperature": g.response_temperature}
    if g.response_dtype != "auto":  # responses made in another dtype are other responses
        settings["dtype"] = g.response_dtype
    return settings


def default_responses_file(settings: dict) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "llm2vec-gen" / f"responses-{digest}.jsonl"


def _drop_cut_tail(path: Path) -> None:
    """Cut a last line that a kill left without its newline (append-only file)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


class ResponseCache:
    """query text -> ``Response``, backed by an append-only JSONL file (module docstring)."""

    def __init__(self, path: str | Path, settings: dict | None = None):
        self.path = Path(path)
        self.settings = settings
        self.entries: dict[str, Response] = {}
        if self.path.is_file():
            _drop_cut_tail(self.path)
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w") as handle:
                if settings is not None:
                    handle.write(json.dumps({"settings": settings}, sort_keys=True) + "\n")

    def _read(self) -> None:
        for number, (where, row) in enumerate(json_lines(self.path)):
            if not isinstance(row, dict):
                raise GraceInputError(f"{where}: expected a JSON object")
            if "settings" in row and number == 0:
                if self.settings is not None and row["settings"] != self.settings:
                    raise GraceInputError(
                        f"{where}: these responses were generated with other settings "
                        f"({json.dumps(row['settings'], sort_keys=True)}); point "
                        "llm2vec_gen.responses_file to another file")
                continue
            for key in ("text", "response"):
                if not isinstance(row.get(key), str):
                    raise GraceInputError(f"{where}: field '{key}' is missing or not a string")
            self.entries[row["text"]] = Response(row["response"], bool(row.get("finished", True)),
                                                 int(row.get("num_tokens", 0)))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, text: str) -> bool:
        return text in self.entries

    def __getitem__(self, text: str) -> Response:
        return self.entries[text]

    def add(self, items: list[tuple[str, Response]]) -> None:
        """Append and flush (one batch)."""
        with self.path.open("a", encoding="utf-8") as handle:
            for text, r in items:
                handle.write(json.dumps({"text": text, "response": r.text, "finished": r.finished,
                                         "num_tokens": r.num_tokens}, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries.update(items)


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
                   temperature: float) -> list[Response]:
    """The backbone's answers to ``texts`` (chat template), greedy at temperature 0, decoded by
    grace.rollout.engine (shared template prefix run once, early exit; no log-probs)."""
    from grace.rollout.engine import rollout

    scored = rollout(backbone, tokenizer, chat_prompt_batch(tokenizer, texts), num_samples=1,
                     temperature=temperature, max_new_tokens=max_new_tokens,
                     batch_size=len(texts), with_logprobs=False)
    seqs = scored.seqs
    responses = []
    for row, length in zip(seqs.response_ids.tolist(), seqs.response_mask.sum(dim=1).tolist()):
        ids = row[:length]
        finished = bool(ids) and ids[-1] == tokenizer.eos_token_id
        text = tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True).strip()
        responses.append(Response(text, finished, len(ids)))
    return responses


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
        cache.add(list(zip(batch, generate_batch(backbone, tokenizer, batch, max_new_tokens,
                                                 temperature))))
        bar.update(len(batch))
    bar.close()
    return len(missing)
