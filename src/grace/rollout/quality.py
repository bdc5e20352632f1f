"""What rationales look like, in figures: is a rationale an analysis or a copy of its input?

Pure functions of token ids, the same in training metrics (grace.grpo.trainer, per step) and in
``grace eval`` output (grace.evaluation.suite, per task and overall):

- ``copy_rate``: share of rationale tokens that lie inside an n-gram of >= ``n`` tokens (n = 4)
  that also occurs in the input text. A rationale that repeats its input word for word scores
  1; echo embeddings (Springer et al. 2024, arXiv 2402.15449) are this trick on purpose
  (``group_copy_rates``: one per rollout of a GRPO group, for ``reward.copy_penalty``);
- ``length_mean``: rationale tokens, the end token not counted;
- ``eos_rate``: share of rationales that ended by themselves (not cut at max_new_tokens);
- ``distinct_2``: distinct token bigrams over all bigrams, across the rationales (near 0: the
  same rationale for every text);
- ``empty_rate``: share of rationales with no token besides the end token;
- ``repetition_rate``: share of a rationale's token bigrams that it already used earlier
  (mean over rationales): 0 for ordinary text, high for the loops a policy falls into when it
  games its reward ("in a beautiful woman in a beautiful woman ...");
- ``template_rates``: per rationale, the share of its token trigrams that also occur in a
  rationale of *another* text of the batch: high when every text gets the same frame ("This
  text conveys a scene of ...", the register supervised GRACE drifts to).
"""

from __future__ import annotations

COPY_NGRAM = 4


def copied_mask(rationale: list[int], source: list[int], n: int = COPY_NGRAM) -> list[bool]:
    """Per rationale token: does it lie inside an n-gram (n tokens in a row) found in ``source``?"""
    grams = {tuple(source[i:i + n]) for i in range(len(source) - n + 1)}
    copied = [False] * len(rationale)
    for start in range(len(rationale) - n + 1):
        if tuple(rationale[start:start + n]) in grams:
            copied[start:start + n] = [True] * n
    return copied


def copy_rate(rationale: list[int], source: list[int], n: int = COPY_NGRAM) -> float:
    """Share of ``rationale``'s tokens inside an n-gram also found in ``source`` (0 if empty)."""
    marks = copied_mask(rationale, source, n)
    return sum(marks) / len(marks) if marks else 0.0


def group_copy_rates(rationales: list[list[int]], sources: list[list[int]], per_source: int
                     ) -> list[float]:
    """Per rationale: ``copy_rate`` against its own source, for rationales in groups of
    ``per_source`` (group-major: rationale i was written for ``sources[i // per_source]``)."""
    if len(rationales) != len(sources) * per_source:
        raise ValueError(f"group_copy_rates: {len(rationales)} rationales for {len(sources)} "
                         f"sources x {per_source}")
    return [copy_rate(r, sources[i // per_source]) for i, r in enumerate(rationales)]


def without_end(ids: list[int], ends: set[int]) -> list[int]:
    """A rationale's tokens without its end token (if it ended by itself)."""
    return list(ids[:-1]) if ids and ids[-1] in ends else list(ids)


def repetition_rate(rationale: list[int]) -> float:
    """Share of ``rationale``'s token bigrams that occur earlier in it (0 without bigrams)."""
    seen, repeats = set(), 0
    for bigram in zip(rationale, rationale[1:]):
        repeats += bigram in seen
        seen.add(bigram)
    return repeats / (len(rationale) - 1) if len(rationale) > 1 else 0.0


def template_rates(rationales: list[list[int]], owners: list[int], n: int = 3) -> list[float]:
    """Per rationale: share of its token n-grams found in a rationale whose owner (the text it
    was written for) differs (0 without n-grams). ``owners[i]`` names rationale i's text."""
    grams = [[tuple(r[i:i + n]) for i in range(len(r) - n + 1)] for r in rationales]
    holders: dict[tuple, set] = {}
    for owner, gs in zip(owners, grams):
        for g in gs:
            holders.setdefault(g, set()).add(owner)
    return [sum(len(holders[g] - {owner}) > 0 for g in gs) / len(gs) if gs else 0.0
            for owner, gs in zip(owners, grams)]


def distinct_2(rationales: list[list[int]]) -> float:
    """Distinct bigrams / all bigrams across ``rationales`` (1.0 when there is no bigram)."""
    bigrams = [tuple(r[i:i + 2]) for r in rationales for i in range(len(r) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


def rationale_quality(rationales: list[list[int]], sources: list[list[int]], ended: list[bool],
                      n: int = COPY_NGRAM) -> dict[str, float]:
    """The module's six figures for N rationales (token ids, the end token removed), their
    inputs' token ids and whether each ended by itself. Copy rate is the token-weighted share
    over all rationales (a long copied rationale counts more than a short one)."""
    if not (len(rationales) == len(sources) == len(ended)) or not rationales:
        raise ValueError("rationale_quality needs as many sources and end flags as rationales, >= 1")
    tokens = sum(len(r) for r in rationales)
    copied = sum(sum(copied_mask(r, s, n)) for r, s in zip(rationales, sources))
    return {
        "copy_rate": copied / tokens if tokens else 0.0,
        "length_mean": tokens / len(rationales),
        "eos_rate": sum(map(bool, ended)) / len(ended),
        "distinct_2": distinct_2(rationales),
        "empty_rate": sum(not r for r in rationales) / len(rationales),
        "repetition_rate": sum(map(repetition_rate, rationales)) / len(rationales),
    }


def sequence_quality(tokenizer, seqs, texts: list[str], samples_per_text: int = 1,
                     end_ids=None) -> dict[str, float]:
    """``rationale_quality`` of the rationales in ``seqs`` (grace.rollout.batch.Sequences, rows
    group-major: ``samples_per_text`` per text of ``texts``) against their texts' tokens."""
    from grace.rollout.hf_path import response_token_lists

    rows = response_token_lists(seqs)  # up to and including the end token
    records = [(texts[i // samples_per_text], ids) for i, ids in enumerate(rows)]
    return records_quality(tokenizer, records,
                           end_ids if end_ids is not None else [tokenizer.eos_token_id])


def records_quality(tokenizer, records: list[tuple[str, list[int]]], end_ids) -> dict[str, float]:
    """``rationale_quality`` of (text, rationale token ids up to and including the end token)
    pairs (the ids as ``GraceEncoder.encode(..., return_rationale_ids=True)`` returns them);
    each distinct text is tokenised once."""
    ends = set(end_ids)
    rationales = [without_end(ids, ends) for _, ids in records]
    ended = [bool(ids) and ids[-1] in ends for _, ids in records]
    tokens = {t: tokenizer(t, add_special_tokens=False)["input_ids"]
              for t in dict.fromkeys(text for text, _ in records)}
    return rationale_quality(rationales, [tokens[text] for text, _ in records], ended)
