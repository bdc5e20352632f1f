"""General abilities of the LM itself (GRACE paper, arXiv 2510.04506): does it survive embedding training?

GRACE trains the policy with a policy gradient on its own rationales, so the model should stay a
working language model; InfoNCE fine-tuning collapses it (paper Table 5). Two cheap probes,
computed before and after training, show which happened:

ARC-Easy accuracy (``arc_easy_accuracy``), zero-shot multiple choice by log-likelihood as
lm-evaluation-harness scores its ``arc_easy`` task:

- context ``"Question: {question}\\nAnswer:"``, continuation ``" " + choice``; the score of a
  choice is ``sum_t log p(continuation token t | context, earlier continuation tokens)``.
- ``acc``: the argmax of that sum is the answer. ``acc_norm``: the argmax of the sum divided by
  the number of CHARACTERS of the choice text (without the leading space), which is what
  lm-eval computes (``len(choice)`` on a Python string, described there as byte-length
  normalisation; the two agree on ASCII text, which ARC-Easy nearly all is). Ties go to the
  first choice (``argmax``).
- No chat template by default: this is the standard zero-shot harness format for base and
  instruct models alike, so figures compare with published ones and with the base model, and a
  change of score is a change of the model, not of the prompt. ``chat_template=True`` puts the
  same ``"Question: ...\\nAnswer:"`` text in a user turn of the tokenizer's chat template (with
  the generation prompt) and scores the choice text, without a leading space, as the start of
  the assistant's reply.
- Tokenisation: the context (with the tokenizer's default special tokens; SmolLM2 adds none) and
  the continuation (no special tokens) are tokenised SEPARATELY and their ids concatenated. So
  the context is an exact token prefix shared by every choice and the scored tokens are exactly
  the continuation's. lm-eval instead tokenises context+continuation jointly and splits at the
  context length; with byte-level BPE whose pre-tokeniser starts a new piece at the space
  (SmolLM2, GPT-2, Llama-3, Qwen) the two give the same ids for this format.
- ``max_questions`` questions drawn without replacement with ``random.Random(seed)`` and scored
  in file order; the CLI default is ``DEFAULT_ARC_QUESTIONS`` (300); ``full`` scores all 2,376.

Perplexity (``perplexity``) on held-out text: ``exp(mean NLL)`` over every predicted token of
every text (a token-level micro average, not a mean of per-text perplexities). No chat template.
BOS: each text is tokenised with the tokenizer's default special tokens and nothing else is
prepended; the first token of a sequence has no context and is not scored, every later one is.
(SmolLM2's tokenizer adds no BOS, so the first word of each text goes unscored; a tokenizer that
adds a BOS gets every text token scored, conditioned on it.) Texts longer than ``max_length``
tokens are truncated (and counted in ``num_truncated``).

Held-out text: the gensim wheel's ``pang_lee_polarity.cor``, 200 movie-review sentences
(Pang & Lee sentence polarity), one per line with a fastText label prefix (``__label__pos``),
which is removed. The file is Windows-1252 (0x97 is an em dash; Latin-1 would turn it into a C1
control character). The text is lower-cased and tokenised with spaces around punctuation, so its
perplexity is higher than that of ordinary prose and is only meant for before/after comparison.
No training config of the project reads this file. ``DEFAULT_HELDOUT_TEXTS`` (200) texts are
drawn with ``random.Random(seed)``; the file has exactly 200, so the default is all of them.

Both probes share one vectorised scorer (``continuation_logprobs``): sequences sorted by length,
right-padded (so every real token keeps the positions it has unbatched and no real token can
attend to padding), one forward of the decoder per batch, the LM head applied only at the
positions that predict a scored token, and per-sequence sums by ``index_add``.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from grace.data.length_sorted import length_sorted_batches
from grace.data.readers import gensim_test_file, json_lines
from grace.errors import GraceInputError
from grace.models.backbones import decoder_and_head
from grace.models.logprobs import token_logprobs

ARC_EASY_FILE = "capability/arc-easy-test.jsonl"  # relative to the shared data folder
DEFAULT_ARC_QUESTIONS = 300  # seeded subsample used unless ``full``
HELDOUT_FILE = "pang_lee_polarity.cor"  # in the gensim wheel's test data
HELDOUT_ENCODING = "cp1252"
DEFAULT_HELDOUT_TEXTS = 200  # seeded subsample used unless ``full`` (the file has 200 lines)


@dataclass(frozen=True)
class MultipleChoice:
    """One multiple-choice question."""

    question: str
    choices: list[str]
    answer: int  # 0-based index into ``choices``


# --------------------------------------------------------------------------- scoring core


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _progress(iterable, show: bool, desc: str, total: int):
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, file=sys.stderr)


@torch.inference_mode()
def continuation_logprobs(
    model,
    tokenizer,
    sequences: list[list[int]],
    starts: list[int],
    batch_size: int = 16,
    show_progress: bool = False,
    desc: str = "scoring",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-likelihood of the tail of each token sequence.

    ``sequences[i][starts[i]:]`` are the scored tokens (``starts[i] >= 1``: a token needs a
    context). Returns ``(sums, counts)``, both (N,): ``sums[i] = sum_t log p(x_t | x_<t)`` over
    the scored tokens (float32) and ``counts[i]`` their number.
    """
    if len(sequences) != len(starts):
        raise ValueError(f"{len(sequences)} sequences but {len(starts)} starts")
    if any(not 1 <= start <= len(seq) for seq, start in zip(sequences, starts)):
        raise ValueError("every start must satisfy 1 <= start <= len(sequence)")
    decoder, head = decoder_and_head(model)
    device = _model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(sequences), dtype=torch.float32)
    counts = torch.tensor([len(seq) - start for seq, start in zip(sequences, starts)])
    batches = length_sorted_batches([len(s) for s in sequences], batch_size)
    try:
        for batch in _progress(batches, show_progress, desc, len(batches)):
            seqs = [torch.tensor(sequences[i], dtype=torch.long) for i in batch]
            ids = pad_sequence(seqs, batch_first=True, padding_value=pad_id).to(device)  # (B, T)
            lengths = torch.tensor([len(s) for s in seqs], device=device)  # (B,)
            first = torch.tensor([starts[i] for i in batch], device=device)  # (B,)
            positions = torch.arange(ids.shape[1], device=device)  # (T,)
            attention_mask = (positions[None, :] < lengths[:, None]).long()  # (B, T)
            scored = (positions[None, :] >= first[:, None]) & attention_mask.bool()  # (B, T)
            target_mask = scored[:, 1:]  # (B, T-1): token t+1 is predicted at position t
            hidden = decoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
            logits = head(hidden[:, :-1][target_mask])  # (K, V): only positions that predict a scored token
            logprobs = token_logprobs(logits, ids[:, 1:][target_mask])  # (K,)
            rows = torch.arange(len(batch), device=device)[:, None].expand_as(target_mask)[target_mask]  # (K,)
            batch_sums = torch.zeros(len(batch), device=device).index_add_(0, rows, logprobs)  # (B,)
            sums[torch.tensor(batch)] = batch_sums.cpu()
    finally:
        model.train(was_training)
    return sums, counts


# --------------------------------------------------------------------------- ARC-Easy


def load_multiple_choice(path: str | Path) -> list[MultipleChoice]:
    """Questions of a JSONL file ``{"question", "choices": [...], "answer": 0-based}``.

    Blank lines are skipped; any bad record is a ``GraceInputError`` naming ``FILE:LINE``.
    """
    path = Path(path)
    if not path.is_file():
        raise GraceInputError(f"multiple-choice file not found: {path}")
    questions = [_multiple_choice(row, where) for where, row in json_lines(path)]
    if not questions:
        raise GraceInputError(f"{path}: no records")
    return questions


def _multiple_choice(row: object, where: str) -> MultipleChoice:
    if not isinstance(row, dict):
        raise GraceInputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name in ("question", "choices", "answer"):
        if name not in row:
            raise GraceInputError(f"{where}: missing field {name!r}")
    question, choices, answer = row["question"], row["choices"], row["answer"]
    if not isinstance(question, str) or not question.strip():
        raise GraceInputError(f"{where}: field 'question' must be a non-empty string")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise GraceInputError(f"{where}: field 'choices' must be a list of at least 2 non-empty strings")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise GraceInputError(
            f"{where}: field 'answer' must be a 0-based index into the {len(choices)} choices, got {answer!r}"
        )
    return MultipleChoice(question, list(choices), answer)


def subsample(items: list, k: int | None, seed: int) -> list:
    """``k`` items drawn without replacement by ``random.Random(seed)``, in their original order
    (all of them when ``k`` is None or at least ``len(items)``)."""
    if k is None or k >= len(items):
        return list(items)
    if k < 1:
        raise GraceInputError(f"subsample size must be at least 1, got {k}")
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), k))]


def _context(tokenizer, question: str, chat_template: bool) -> tuple[list[int], str]:
    """Token ids of the context and the text put before each choice."""
    prompt = f"Question: {question}\nAnswer:"
    if not chat_template:
        return tokenizer(prompt).input_ids, " "
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False).input_ids, ""


def arc_easy_accuracy(
    model,
    tokenizer,
    path: str | Path,
    max_questions: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    show_progress: bool = False,
    chat_template: bool = False,
) -> dict:
    """Zero-shot multiple-choice accuracy by log-likelihood (see the module docstring).

    Returns ``{"acc", "acc_norm", "num_questions", "seconds", "chat_template"}``.
    """
    start_time = time.perf_counter()
    questions = subsample(load_multiple_choice(path), max_questions, seed)
    sequences, starts, owner, lengths = [], [], [], []
    for q_index, item in enumerate(questions):
        context, delimiter = _context(tokenizer, item.question, chat_template)
        for choice in item.choices:
            continuation = tokenizer(delimiter + choice, add_special_tokens=False).input_ids
            sequences.append(context + continuation)
            starts.append(len(context))
            owner.append(q_index)
            lengths.append(len(choice))
    sums, _ = continuation_logprobs(
        model, tokenizer, sequences, starts, batch_size, show_progress, desc="ARC-Easy"
    )
    # Lay the per-choice scores out as (Q, C_max), -inf where a question has fewer choices.
    owner_t = torch.tensor(owner)  # (N,)
    num_choices = torch.bincount(owner_t, minlength=len(questions))  # (Q,)
    first_of_question = torch.cumsum(num_choices, 0) - num_choices  # (Q,)
    slot = torch.arange(len(owner)) - first_of_question[owner_t]  # (N,)
    scores = torch.full((len(questions), int(num_choices.max())), -math.inf)  # (Q, C)
    normed = scores.clone()  # (Q, C)
    scores[owner_t, slot] = sums
    normed[owner_t, slot] = sums / torch.tensor(lengths, dtype=torch.float32)
    gold = torch.tensor([item.answer for item in questions])  # (Q,)
    return {
        "acc": (scores.argmax(dim=1) == gold).float().mean().item(),
        "acc_norm": (normed.argmax(dim=1) == gold).float().mean().item(),
        "num_questions": len(questions),
        "seconds": time.perf_counter() - start_time,
        "chat_template": chat_template,
    }


# --------------------------------------------------------------------------- perplexity


def load_heldout_texts(max_texts: int | None = DEFAULT_HELDOUT_TEXTS, seed: int = 0) -> list[str]:
    """Sentences of the gensim wheel's ``pang_lee_polarity.cor``, label prefix removed."""
    path = gensim_test_file(HELDOUT_FILE)
    texts = []
    for line in path.read_text(encoding=HELDOUT_ENCODING).splitlines():
        label, _, text = line.partition(" ")
        text = text.strip() if label.startswith("__label__") else line.strip()
        if text:
            texts.append(text)
    return subsample(texts, max_texts, seed)


def perplexity(model, tokenizer, texts: list[str], max_length: int = 512, batch_size: int = 8,
               show_progress: bool = False) -> dict:
    """Token-level perplexity ``exp(total NLL / predicted tokens)`` of ``texts``.

    Returns ``{"perplexity", "nll", "num_tokens", "num_texts", "num_truncated", "seconds"}``
    (``nll``: mean negative log-likelihood per predicted token, in nats).
    """
    start_time = time.perf_counter()
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise GraceInputError("perplexity needs a non-empty list of non-empty texts")
    encoded = [tokenizer(text).input_ids for text in texts]
    truncated = sum(len(ids) > max_length for ids in encoded)
    encoded = [ids[:max_length] for ids in encoded]
    kept = [ids for ids in encoded if len(ids) >= 2]  # a one-token text predicts nothing
    if not kept:
        raise GraceInputError("perplexity: every text is a single token; nothing to predict")
    sums, counts = continuation_logprobs(
        model, tokenizer, kept, [1] * len(kept), batch_size, show_progress, desc="perplexity"
    )
    nll = -(sums.double().sum() / counts.sum()).item()
    return {
        "perplexity": math.exp(nll),
        "nll": nll,
        "num_tokens": int(counts.sum()),
        "num_texts": len(kept),
        "num_truncated": truncated,
        "seconds": time.perf_counter() - start_time,
    }


# --------------------------------------------------------------------------- both


def evaluate_capability(model, tokenizer, data_dir=None, full: bool = False, seed: int = 0,
                        show_progress: bool = True) -> dict:
    """ARC-Easy (``data_dir/capability/arc-easy-test.jsonl``, skipped with a note when absent) and
    perplexity on the held-out movie-review sentences.

    ``full``: every question and every text instead of the seeded default subsamples.
    Returns ``{"arc_easy": {...}, "perplexity": {...}}``.
    """
    arc_path = Path(data_dir) / ARC_EASY_FILE if data_dir is not None else None
    if arc_path is not None and arc_path.is_file():
        arc = arc_easy_accuracy(
            model, tokenizer, arc_path, None if full else DEFAULT_ARC_QUESTIONS, seed,
            show_progress=show_progress,
        )
        arc["path"] = str(arc_path)
    else:
        where = arc_path if arc_path is not None else f"<data_dir>/{ARC_EASY_FILE} (no data_dir given)"
        arc = {"skipped": f"ARC-Easy not found: {where}"}
    texts = load_heldout_texts(None if full else DEFAULT_HELDOUT_TEXTS, seed)
    ppl = perplexity(model, tokenizer, texts, show_progress=show_progress)
    ppl["source"] = f"gensim:{HELDOUT_FILE}"
    return {"arc_easy": arc, "perplexity": ppl}
