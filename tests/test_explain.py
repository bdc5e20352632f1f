"""Exact token attributions (grace.explain.attribution) and `grace explain` (grace.explain.pair)."""

import json

import pytest
import torch

from grace import GraceEncoder
from grace.explain.attribution import pair_attributions, token_contributions
from grace.errors import GraceInputError
from grace.explain.pair import explain_pair

A, B = "A cat sits on the mat.", "A kitten is resting on a small rug."


def test_shares_sum_to_the_cosine_by_hand():
    states_a = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1)
    states_b = torch.tensor([[0.0, 3.0]])  # mean (0, 3)
    cosine, a, b = pair_attributions(states_a, states_b)
    assert cosine == pytest.approx(2 ** -0.5)
    # c_i = h_i . e_b / (n |m_a|) = (0, 2) / (2 * sqrt 2)
    torch.testing.assert_close(a, torch.tensor([0.0, 2 / (2 * 2 ** 0.5)], dtype=torch.float64))
    torch.testing.assert_close(b, torch.tensor([2 ** -0.5], dtype=torch.float64))


def test_shares_sum_to_the_cosine_on_random_states():
    gen = torch.Generator().manual_seed(0)
    for n, m in [(1, 1), (7, 30), (200, 3)]:
        h_a, h_b = torch.randn(n, 16, generator=gen), torch.randn(m, 16, generator=gen) + 0.3
        cosine, a, b = pair_attributions(h_a, h_b)
        ref = torch.nn.functional.cosine_similarity(h_a.mean(0), h_b.mean(0), dim=0)
        assert cosine == pytest.approx(float(ref), abs=1e-6)
        assert float(a.sum()) == pytest.approx(cosine, abs=1e-12)
        assert float(b.sum()) == pytest.approx(cosine, abs=1e-12)
    assert token_contributions(torch.zeros(3, 4), torch.ones(4)).abs().sum() == 0  # no direction
    with pytest.raises(ValueError, match="states must be"):
        token_contributions(torch.zeros(0, 4), torch.ones(4))


@pytest.fixture(scope="module")
def encoder():
    return GraceEncoder.from_pretrained("tiny-random", max_new_tokens=6, cache=False)


@pytest.mark.parametrize("rationale", ["greedy", "none"])
def test_explain_matches_the_encoder_and_sums_exactly(encoder, rationale):
    encoder.options.rationale = rationale
    ex = explain_pair(encoder, A, B)
    emb = encoder.encode([A, B])
    assert ex.cosine == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)  # the encoder's cosine
    for side in (ex.a, ex.b):
        assert abs(side.total - ex.cosine) < 1e-5  # the check
        assert {t.segment for t in side.tokens} == ({"text", "rationale"} if rationale == "greedy" else {"text"})
    assert "cat" in "".join(t.token for t in ex.a.tokens if t.segment == "text")
    _, rationales = encoder.encode([A], return_rationales=True)
    assert ex.a.rationale == rationales[0]
    top = ex.a.top(3)
    assert len(top) <= 3 and all(t.contribution > 0 for t in top)
    assert top == sorted(top, key=lambda t: -t.contribution)
    encoder.options.rationale = "greedy"


def test_explain_refuses_sampled_and_non_text(encoder):
    sampled = GraceEncoder(encoder.model, encoder.tokenizer, encoder.options.__class__(rationale="sampled"), cache=False)
    with pytest.raises(GraceInputError, match="deterministic"):
        explain_pair(sampled, A, B)
    with pytest.raises((GraceInputError, TypeError)):
        explain_pair(encoder, A, 123)


def test_explain_a_balanced_encoder_matches_its_cosine(encoder):
    """The balanced pooling (text and rationale halves): the shares carry each token's weight,
    still sum to the cosine, and the cosine is the balanced encoder's, not the mean one's."""
    balanced = encoder.with_options(cache=False, pooling="balanced", rationale="greedy")
    ex = explain_pair(balanced, A, B)
    emb = balanced.encode([A, B])
    assert ex.cosine == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)
    mean = encoder.with_options(cache=False, rationale="greedy").encode([A, B])
    assert abs(float(mean[0] @ mean[1]) - ex.cosine) > 1e-4  # a different embedding
    for side in (ex.a, ex.b):
        assert abs(side.total - ex.cosine) < 1e-5


def test_weighted_shares_by_hand():
    """p_a = 0.5 (1, 0) + 0.25 (1, 2) + 0.25 (3, 0) = (1.5, 0.5); b = (0, 3) -> e_b = (0, 1):
    shares w_i (h_i . e_b) / |p_a| = (0, 0.5, 0) / sqrt(2.5)."""
    from grace.models.pooling import token_weights

    weights = token_weights(torch.tensor([False, True, True]), "balanced")
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    torch.testing.assert_close(token_weights(torch.tensor([False, True]), "mean"),
                               torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(token_weights(torch.tensor([False, False]), "balanced"),
                               torch.tensor([0.5, 0.5], dtype=torch.float64))  # no rationale
    states_a = torch.tensor([[1.0, 0.0], [1.0, 2.0], [3.0, 0.0]])
    cosine, a, b = pair_attributions(states_a, torch.tensor([[0.0, 3.0]]), weights)
    assert cosine == pytest.approx(0.5 / 2.5 ** 0.5)
    torch.testing.assert_close(a, torch.tensor([0.0, 0.5 / 2.5 ** 0.5, 0.0], dtype=torch.float64))
    assert float(b.sum()) == pytest.approx(cosine)
    with pytest.raises(ValueError, match="one per row"):
        token_contributions(states_a, torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="pooling must be one of"):
        token_weights(torch.tensor([True]), "max")
    torch.testing.assert_close(token_weights(torch.tensor([False, True, True]), "text:0.8"),
                               torch.tensor([0.8, 0.1, 0.1], dtype=torch.float64))  # W, (1 - W) / 2 each


def test_explain_minilm_word_pieces():
    ex = explain_pair(GraceEncoder.from_pretrained("all-MiniLM-L6-v2"), A, B)
    assert ex.kind == "sentence-transformers" and abs(ex.a.total - ex.cosine) < 1e-5
    assert "cat" in [t.token.strip() for t in ex.a.top(5)]  # the content word carries the match


def test_cli_explain_prints_json_and_table(capsys):
    from grace.cli import main

    assert main(["explain", A, B, "--model", "tiny-random", "--max-new-tokens", "4", "--no-cache", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(sum(t["contribution"] for t in out["a"]["tokens"]) - out["cosine"]) < 1e-5
    assert main(["explain", A, B, "--model", "tiny-random", "--max-new-tokens", "4", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "cosine" in text and "tokens adding / subtracting most" in text
    assert main(["explain", A, B, "--model", "tiny-random", "--rationale", "sampled", "--no-cache"]) == 2
    assert "deterministic" in capsys.readouterr().err


def test_token_weights_pool_as_pool_split_does():
    """sum_i w_i h_i has the direction of pool_split's embedding, for both poolings, on random
    states with a text part and a rationale part; a rationale-only row has the rationale mean's."""
    from grace.models.pooling import pool_split, token_weights

    gen = torch.Generator().manual_seed(1)
    h = torch.randn(1, 9, 8, generator=gen)
    mask = torch.ones(1, 9)
    mask[0, 7] = 0  # a padded position
    keep = mask[0].bool()
    is_rationale = (torch.arange(9) >= 4)[keep]  # split 4: 4 text tokens, 4 rationale tokens kept
    for pooling in ("mean", "balanced"):
        ours = torch.nn.functional.normalize(token_weights(is_rationale, pooling) @ h[0, keep].double(), dim=0)
        ref = pool_split(h, mask, 4, pooling)[0].double()
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    only = token_weights(torch.tensor([True, True, True, True]), "balanced")
    torch.testing.assert_close(only, torch.full((4,), 0.25, dtype=torch.float64))
    assert float(token_weights(torch.tensor([False, True, True]), "balanced").sum()) == 1.0
