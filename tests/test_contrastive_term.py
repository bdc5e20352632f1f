"""optim.contrastive_weight (grace.grpo.contrastive_term): which rows are the views, that the
embeddings with gradient are the rewards' embeddings, that the term is InfoNCE of those views,
and that a GRACE step with it trains (through the real command line)."""

import pytest
import torch
from sample_data import TEXTS
from test_cli_train import LEARN, SMALL, _metrics, _ok, grace_train, texts, triplets  # noqa: F401

from grace.contrastive.losses import info_nce
from grace.grpo.contrastive_term import contrastive_term, embed_with_grad, view_rows
from grace.models.prompt import build_prompts
from grace.rollout.hf_path import generate_sequences, score_sequences


def _rows(layout):
    return {role: (block, idx.tolist()) for role, (block, idx) in layout.items()}


def test_view_rows_follow_the_rollout_layouts():
    # B = 2 records, G = 3: trained rows are group-major, rollout 0 of group t is row 3t
    assert _rows(view_rows("unsupervised", "reference", 2, 3)) == {
        "query": ("context", [0, 1]), "positive": ("trained", [0, 3])}
    # context [q0, q1, d-0, d-1]; trained [d+0 x3, d+1 x3]
    assert _rows(view_rows("supervised", "reference", 2, 3)) == {
        "query": ("context", [0, 1]), "positive": ("trained", [0, 3]),
        "negative": ("context", [2, 3])}
    assert _rows(view_rows("supervised", "paper", 2, 3)) == _rows(view_rows("supervised", "reference", 2, 3))
    # context [d-0, d-1]; trained [q0 x3, q1 x3, d+0 x3, d+1 x3]
    assert _rows(view_rows("supervised", "decoupled", 2, 3)) == {
        "query": ("trained", [0, 3]), "positive": ("trained", [6, 9]),
        "negative": ("context", [0, 1])}


@pytest.fixture(scope="module")
def sequences(tiny):
    """Context rows [q0, q1, d-0, d-1] (1 rationale each) and trained rows [d+0 x2, d+1 x2]."""
    model, tokenizer = tiny
    torch.manual_seed(0)
    queries, negatives, positives = TEXTS[:2], TEXTS[2:4], TEXTS[4:6]
    context = generate_sequences(model, tokenizer, build_prompts(tokenizer, queries + negatives),
                                 num_samples=1, temperature=0.5, max_new_tokens=5)
    trained = generate_sequences(model, tokenizer, build_prompts(tokenizer, positives),
                                 num_samples=2, temperature=1.0, max_new_tokens=7)
    return context, trained


def test_embeddings_with_gradient_are_the_rewards_embeddings(tiny, sequences):
    model, _ = tiny
    context, trained = sequences
    for seqs in (context, trained):
        for pooling in ("mean", "balanced"):
            rewards = score_sequences(model, seqs, with_logprobs=False, pooling=pooling).embeddings
            emb, tie = embed_with_grad(model, seqs, pooling)
            assert emb.requires_grad and float(tie.detach()) == 0.0
            torch.testing.assert_close(emb.detach(), rewards, atol=1e-5, rtol=1e-5)


def test_the_term_is_info_nce_of_the_views_and_reaches_every_layer(tiny, sequences):
    model, _ = tiny
    context, trained = sequences
    ctx = score_sequences(model, context, with_logprobs=False).embeddings  # (4, D)
    tr = score_sequences(model, trained, with_logprobs=False).embeddings  # (4, D)
    # by hand: queries ctx[0:2], positives rollout 0 of each group tr[[0, 2]], negatives ctx[2:4]
    expected, _ = info_nce(ctx[:2], tr[[0, 2]], ctx[2:4, None], 0.05)
    model.zero_grad()
    loss, stats = contrastive_term(model, context, trained, mode="supervised", variant="reference",
                                   num_rollouts=2, pooling="mean", temperature=0.05)
    assert float(loss) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    assert set(stats) >= {"accuracy", "pos_cos", "neg_cos", "hard_neg_cos"}
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())  # the LM head too (the tie)
    assert any(float(g.abs().sum()) > 0 for name, g in grads.items() if "layers.0." in name)
    model.zero_grad()


def test_a_grace_step_with_the_term_logs_it_and_trains_other_weights(tmp_path, triplets):  # noqa: F811
    """The same seeded supervised step with and without the term: the same rollouts and
    rewards, the term logged (finite) only with it, and different weights after the step."""
    from safetensors.torch import load_file

    args = ["--mode", "supervised", "--data", triplets.name, "--max-steps", "1", *SMALL, *LEARN]
    _ok(grace_train(tmp_path, *args, "--output-dir", "PLAIN"))
    _ok(grace_train(tmp_path, *args, "--optim.contrastive_weight", "1", "--output-dir", "AUX"))
    plain, aux = _metrics(tmp_path / "PLAIN")[0], _metrics(tmp_path / "AUX")[0]
    assert "contrastive/loss" not in plain
    assert aux["contrastive/loss"] > 0 and 0 <= aux["contrastive/accuracy"] <= 1
    assert aux["reward/mean"] == pytest.approx(plain["reward/mean"], abs=1e-6)
    a = load_file(tmp_path / "PLAIN" / "checkpoint-1" / "model.safetensors")
    b = load_file(tmp_path / "AUX" / "checkpoint-1" / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    bad = grace_train(tmp_path, *args, "--optim.contrastive_temperature", "0", "--output-dir", "BAD")
    assert bad.returncode == 2 and "optim.contrastive_temperature must be > 0" in bad.stderr


def test_the_term_runs_in_the_other_layouts(tmp_path, triplets, texts):  # noqa: F811
    """Unsupervised (no hard negative) and supervised decoupled steps log a finite term."""
    for name, mode, data, extra in (("UNSUP", "unsupervised", texts, []),
                                    ("DEC", "supervised", triplets, ["--reward.variant", "decoupled"])):
        _ok(grace_train(tmp_path, "--mode", mode, "--data", data.name, "--max-steps", "1", *SMALL,
                        *LEARN, *extra, "--optim.contrastive_weight", "0.5", "--output-dir", name))
        row = _metrics(tmp_path / name)[0]
        assert row["contrastive/loss"] > 0 and row["contrastive/pos_cos"] <= 1 + 1e-6
        assert ("contrastive/hard_neg_cos" in row) == (mode == "supervised")
