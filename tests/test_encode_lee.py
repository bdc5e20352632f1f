"""Encoding core (rationale modes) and the Lee benchmark."""

import numpy as np
import torch
import pytest

from grace.encoders.encode import EncodeOptions, embed_texts
from grace.evaluation.lee import load_lee, score_lee

TEXTS = ["A cat sat on the mat.", "Stocks fell sharply on Monday after the announcement.", "Hi"]


def test_score_lee_on_a_hand_built_gram_matrix():
    # Embeddings whose pairwise cosines are exactly 0.2, 0.3, 0.4 for pairs (0,1), (0,2), (1,2).
    gram = np.array([[1.0, 0.2, 0.3], [0.2, 1.0, 0.4], [0.3, 0.4, 1.0]])
    emb = np.linalg.cholesky(gram)  # rows are unit vectors with that Gram matrix
    ratings = np.array([[1.0, 0.1, 0.5], [0.0, 1.0, 0.9], [0.0, 0.0, 1.0]])
    result = score_lee(emb, ratings)
    assert result.num_pairs == 3
    assert result.spearman == pytest.approx(1.0)
    assert result.pearson == pytest.approx(1.0)  # 0.2,0.3,0.4 vs 0.1,0.5,0.9: both linear


def test_lee_data_ships_with_gensim():
    docs, ratings = load_lee()
    assert len(docs) == 50 and ratings.shape == (50, 50)
    assert all(d.strip() for d in docs)
    assert np.triu_indices(50, k=1)[0].size == 1225


def test_greedy_embeddings_are_deterministic(tiny):
    model, tokenizer = tiny
    opts = EncodeOptions(rationale="greedy", max_new_tokens=4, batch_size=2)
    a, rat_a = embed_texts(model, tokenizer, TEXTS, opts)
    b, rat_b = embed_texts(model, tokenizer, TEXTS, opts)
    assert a.shape == (3, model.config.hidden_size)
    np.testing.assert_array_equal(a, b)
    assert rat_a == rat_b
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_order_is_restored_after_length_sorting(tiny):
    model, tokenizer = tiny
    opts = EncodeOptions(rationale="none", batch_size=2)
    together, _ = embed_texts(model, tokenizer, TEXTS, opts)
    for i, text in enumerate(TEXTS):
        alone, _ = embed_texts(model, tokenizer, [text], opts)
        np.testing.assert_allclose(together[i], alone[0], atol=1e-5)


def test_rationale_changes_the_embedding(tiny):
    model, tokenizer = tiny
    none, rationales = embed_texts(model, tokenizer, TEXTS, EncodeOptions(rationale="none"))
    greedy, _ = embed_texts(model, tokenizer, TEXTS, EncodeOptions(rationale="greedy", max_new_tokens=4))
    assert rationales == ["", "", ""]
    assert not np.allclose(none, greedy)


def test_unknown_rationale_mode():
    with pytest.raises(ValueError, match="rationale must be one of"):
        EncodeOptions(rationale="beam")


def test_bfloat16_backbone_gives_float32_unit_embeddings():
    from grace.models.backbones import load_backbone

    model, tokenizer = load_backbone("tiny-random", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    emb, _ = embed_texts(model, tokenizer, TEXTS[:2], EncodeOptions(rationale="greedy", max_new_tokens=3))
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_unknown_dtype_is_a_user_error():
    from grace.models.backbones import resolve_dtype
    from grace.errors import GraceInputError

    with pytest.raises(GraceInputError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
