"""Rationale-quality figures (grace.rollout.quality) on hand-made token ids."""

import pytest

from grace.rollout.quality import (
    copied_mask,
    copy_rate,
    distinct_2,
    group_copy_rates,
    rationale_quality,
    repetition_rate,
    template_rates,
)


def test_copied_mask_marks_tokens_inside_a_shared_4_gram():
    source = [1, 2, 3, 4, 5, 6]
    # 2 3 4 5 is in the source (4 tokens); 9 breaks it; 5 6 alone is only a 2-gram
    rationale = [9, 2, 3, 4, 5, 9, 5, 6]
    assert copied_mask(rationale, source) == [False, True, True, True, True, False, False, False]
    assert copy_rate(rationale, source) == pytest.approx(4 / 8)
    assert copy_rate([1, 2, 3, 4, 5, 6], source) == 1.0  # a word-for-word copy
    assert copy_rate([1, 2, 3], source) == 0.0  # shorter than an n-gram
    assert copy_rate([], source) == 0.0
    assert copied_mask([1, 2, 3], source, n=2) == [True, True, True]


def test_distinct_2_across_rationales():
    # bigrams: (1,2) (2,3) | (1,2) (2,3) | (7,8): 3 distinct of 5
    assert distinct_2([[1, 2, 3], [1, 2, 3], [7, 8]]) == pytest.approx(3 / 5)
    assert distinct_2([[1], []]) == 1.0


def test_rationale_quality_by_hand():
    rationales = [[1, 2, 3, 4], [9, 9], []]
    sources = [[0, 1, 2, 3, 4], [1, 2], [5]]
    figures = rationale_quality(rationales, sources, ended=[True, False, True])
    # copied: 4 of 4 + 0 of 2 + 0 -> 4 / 6 tokens; length 6 / 3; 2 of 3 ended; 1 of 3 empty;
    # bigrams (1,2) (2,3) (3,4) (9,9): 4 distinct of 4
    # repetition: (9,9) once, nothing repeated: 0 for every rationale
    assert figures == pytest.approx({"copy_rate": 4 / 6, "length_mean": 2.0, "eos_rate": 2 / 3,
                                     "distinct_2": 1.0, "empty_rate": 1 / 3, "repetition_rate": 0.0})
    with pytest.raises(ValueError, match="as many"):
        rationale_quality([[1]], [], [True])


def test_repetition_rate_by_hand():
    # "in a cat in a cat in": bigrams (in,a) (a,cat) (cat,in) (in,a)* (a,cat)* (cat,in)* (in,a)*
    assert repetition_rate([1, 2, 3, 1, 2, 3, 1, 2]) == pytest.approx(4 / 7)
    assert repetition_rate([1, 2, 3, 4]) == 0.0
    assert repetition_rate([5]) == 0.0 and repetition_rate([]) == 0.0
    assert repetition_rate([7, 7, 7]) == pytest.approx(1 / 2)  # (7,7) then (7,7) again


def test_template_rates_by_hand():
    # texts 0, 0, 1: the first two rationales share (1, 2, 3) but belong to one text, which
    # does not count; (1, 2, 3) and (4, 5, 6) both occur in text 1's rationale
    rationales = [[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 3, 7, 4, 5, 6], [8, 8]]
    owners = [0, 0, 1, 2]
    # r0 trigrams (1,2,3) shared with text 1, (2,3,4) not: 1/2; r1: (1,2,3) yes, (2,3,9) no: 1/2
    # r2: (1,2,3) yes, (2,3,7) (3,7,4) (7,4,5) (4,5,6) no (no other text has them): 1/5
    # r3: no trigram: 0
    assert template_rates(rationales, owners) == pytest.approx([1 / 2, 1 / 2, 1 / 5, 0.0])
    assert template_rates([[1, 2, 3], [1, 2, 3]], [0, 0]) == [0.0, 0.0]
    assert template_rates([[1, 2, 3], [1, 2, 3]], [0, 1]) == [1.0, 1.0]
    assert template_rates([[1, 2], [1, 2]], [0, 1], n=2) == [1.0, 1.0]


def test_group_copy_rates_score_each_rollout_against_its_own_text():
    # two texts, two rollouts each (group-major): rollout 2 copies text 0's 4-gram but was
    # written for text 1, so it is not a copy; rollout 3 copies text 1 word for word
    sources = [[1, 2, 3, 4], [5, 6, 7, 8]]
    rollouts = [[1, 2, 3, 4, 9, 9, 9, 9], [9, 9], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert group_copy_rates(rollouts, sources, 2) == pytest.approx([1 / 2, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="3 rationales for 2 sources x 2"):
        group_copy_rates(rollouts[:3], sources, 2)
