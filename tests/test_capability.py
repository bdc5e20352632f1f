"""Capability probes (SPEC 1.8): ARC-Easy by log-likelihood and held-out perplexity.

Every figure is checked against a straightforward unbatched reference: one forward of the
model's own ``logits`` per sequence, no padding.
"""

import json
import math

import pytest
import torch

from grace.errors import GraceInputError
from grace.evaluation.capability import (
    ARC_EASY_FILE,
    arc_easy_accuracy,
    continuation_logprobs,
    evaluate_capability,
    load_heldout_texts,
    perplexity,
    subsample,
)

torch.set_num_threads(1)  # small shared machine; other tests run beside these

QUESTIONS = [
    ("Which gas do plants take in for photosynthesis?",
     ["oxygen", "carbon dioxide", "nitrogen gas from the air", "helium"]),
    ("What is the boiling point of water at sea level?", ["100 degrees Celsius", "0 degrees", "50"]),
]


def reference_logprob(model, context_ids: list[int], continuation_ids: list[int]) -> float:
    """Sum of log p(continuation token | everything before it), one unpadded forward."""
    ids = torch.tensor([context_ids + continuation_ids])  # (1, T)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)  # (T, V)
    n = len(context_ids)
    targets = ids[0, n:]  # (C,)
    return logprobs[n - 1 : -1].gather(1, targets[:, None]).sum().item()


def choice_scores(model, tokenizer, question: str, choices: list[str]) -> list[float]:
    context = tokenizer(f"Question: {question}\nAnswer:").input_ids
    return [
        reference_logprob(model, context, tokenizer(" " + c, add_special_tokens=False).input_ids)
        for c in choices
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_scoring_picks_the_most_likely_choice(tiny, tmp_path):
    model, tokenizer = tiny
    scores = [choice_scores(model, tokenizer, q, c) for q, c in QUESTIONS]
    best = [max(range(len(s)), key=s.__getitem__) for s in scores]
    best_norm = [
        max(range(len(s)), key=lambda i: s[i] / len(c[i])) for s, (_, c) in zip(scores, QUESTIONS)
    ]
    # Question 1's gold is the model's pick, question 2's is not: acc must be exactly 0.5.
    answers = [best[0], (best[1] + 1) % len(QUESTIONS[1][1])]
    path = write_jsonl(
        tmp_path / "mc.jsonl",
        [{"question": q, "choices": c, "answer": a} for (q, c), a in zip(QUESTIONS, answers)],
    )
    result = arc_easy_accuracy(model, tokenizer, path, batch_size=3)
    assert result["num_questions"] == 2
    assert result["acc"] == pytest.approx(0.5)
    expected_norm = sum(b == a for b, a in zip(best_norm, answers)) / 2
    assert result["acc_norm"] == pytest.approx(expected_norm)
    assert result["seconds"] >= 0


def test_batched_logprobs_equal_unbatched(tiny):
    model, tokenizer = tiny
    contexts, continuations = [], []
    for q, choices in QUESTIONS:
        for c in choices:
            contexts.append(tokenizer(f"Question: {q}\nAnswer:").input_ids)
            continuations.append(tokenizer(" " + c, add_special_tokens=False).input_ids)
    sequences = [a + b for a, b in zip(contexts, continuations)]
    starts = [len(a) for a in contexts]
    assert len({len(s) for s in sequences}) > 3  # padding really happens
    batched, counts = continuation_logprobs(model, tokenizer, sequences, starts, batch_size=4)
    single, _ = continuation_logprobs(model, tokenizer, sequences, starts, batch_size=1)
    reference = torch.tensor([reference_logprob(model, a, b) for a, b in zip(contexts, continuations)])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
    torch.testing.assert_close(batched, reference, atol=1e-4, rtol=0)
    assert counts.tolist() == [len(b) for b in continuations]


def test_perplexity_equals_unbatched_reference(tiny):
    model, tokenizer = tiny
    texts = ["short text.", "a somewhat longer sentence about movies and reviews .",
             "the longest of the three texts, which goes on for a while, with commas , and more words ."]
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text).input_ids
        total += -reference_logprob(model, ids[:1], ids[1:])
        count += len(ids) - 1
    result = perplexity(model, tokenizer, texts, batch_size=3)
    assert result["num_tokens"] == count and result["num_texts"] == 3
    assert result["nll"] == pytest.approx(total / count, abs=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_perplexity_truncates_long_texts(tiny):
    model, tokenizer = tiny
    result = perplexity(model, tokenizer, ["word " * 50, "two words"], max_length=10)
    assert result["num_truncated"] == 1
    assert result["num_tokens"] == 9 + len(tokenizer("two words").input_ids) - 1


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"question": "q", "choices": ["a", "b"]}), "missing field 'answer'"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}), "field 'answer'"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": True}), "field 'answer'"),
        (json.dumps({"question": "q", "choices": "ab", "answer": 0}), "field 'choices'"),
        (json.dumps({"question": "", "choices": ["a", "b"], "answer": 0}), "field 'question'"),
        (json.dumps(["q", ["a", "b"], 0]), "expected a JSON object"),
    ],
)
def test_bad_record_names_file_and_line(tiny, tmp_path, bad_line, message):
    model, tokenizer = tiny
    good = json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0})
    path = tmp_path / "mc.jsonl"
    path.write_text(f"{good}\n\n{bad_line}\n")
    with pytest.raises(GraceInputError, match=message) as info:
        arc_easy_accuracy(model, tokenizer, path)
    assert f"{path}:3:" in str(info.value)


def test_missing_file_is_an_input_error(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(GraceInputError, match="not found"):
        arc_easy_accuracy(model, tokenizer, tmp_path / "nope.jsonl")


def test_subsample_is_seeded_and_keeps_order():
    items = list(range(100))
    a, b = subsample(items, 10, seed=3), subsample(items, 10, seed=3)
    assert a == b == sorted(a) and len(set(a)) == 10
    assert subsample(items, 10, seed=4) != a
    assert subsample(items, None, seed=0) == items and subsample(items, 500, seed=0) == items


def test_heldout_texts_are_clean():
    texts = load_heldout_texts(None)
    assert len(texts) == 200
    assert not any(t.startswith("__label__") for t in texts)
    assert any("\u2014" in t for t in texts)  # cp1252 0x97 decoded as an em dash
    assert load_heldout_texts(20, seed=1) == load_heldout_texts(20, seed=1)


def test_evaluate_capability_returns_both_parts(tiny, tmp_path):
    model, tokenizer = tiny
    (tmp_path / "capability").mkdir()
    write_jsonl(
        tmp_path / ARC_EASY_FILE,
        [{"question": q, "choices": c, "answer": 0} for q, c in QUESTIONS],
    )
    result = evaluate_capability(model, tokenizer, data_dir=tmp_path, show_progress=False)
    assert set(result) == {"arc_easy", "perplexity"}
    assert result["arc_easy"]["num_questions"] == 2
    assert 0.0 <= result["arc_easy"]["acc"] <= 1.0
    assert result["perplexity"]["num_texts"] == 200
    assert math.isfinite(result["perplexity"]["perplexity"])

    chat = arc_easy_accuracy(model, tokenizer, tmp_path / ARC_EASY_FILE, chat_template=True)
    assert chat["chat_template"] and chat["num_questions"] == 2

    skipped = evaluate_capability(model, tokenizer, data_dir=tmp_path / "empty", show_progress=False)
    assert "skipped" in skipped["arc_easy"] and "perplexity" in skipped["perplexity"]
