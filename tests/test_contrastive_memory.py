"""optim.contrastive_memory (grace.contrastive.memory): a first-in first-out memory of earlier
positives, the contrastive term's extra negatives; the term with it (the loss's own arithmetic is
checked by hand in test_baselines)."""

import pytest
import torch
from test_cli_train import LEARN, SMALL, _metrics, _ok, grace_train, texts  # noqa: F401
from test_contrastive_term import sequences  # noqa: F401

from grace.contrastive.losses import info_nce
from grace.contrastive.memory import EmbeddingMemory
from grace.grpo.contrastive_term import contrastive_term
from grace.rollout.hf_path import score_sequences


def test_the_memory_keeps_the_last_rows_in_order_without_gradient():
    memory = EmbeddingMemory(4)
    assert len(memory) == 0 and memory.rows() is None
    first = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    memory.push(first * 1)
    memory.push(torch.tensor([[3.0, 0.0], [4.0, 0.0], [5.0, 0.0]]))
    assert memory.rows()[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]  # row 1.0 dropped, oldest first
    assert not memory.rows().requires_grad
    off = EmbeddingMemory(0)
    off.push(first)
    assert len(off) == 0 and off.rows() is None
    with pytest.raises(ValueError, match="memory size must be >= 0, got -1"):
        EmbeddingMemory(-1)


def test_the_term_scores_the_memory_then_pushes_its_positives(tiny, sequences):  # noqa: F811
    """Two calls on the same rows: the first (empty memory) is the term without memory and
    pushes rollout 0 of each group; the second scores those two rows as extra negatives."""
    model, _ = tiny
    context, trained = sequences
    ctx = score_sequences(model, context, with_logprobs=False).embeddings  # (4, D)
    tr = score_sequences(model, trained, with_logprobs=False).embeddings  # (4, D)
    memory = EmbeddingMemory(8)
    kwargs = dict(mode="supervised", variant="reference", num_rollouts=2, pooling="mean",
                  temperature=0.05)
    first, stats = contrastive_term(model, context, trained, memory=memory, **kwargs)
    plain, _ = info_nce(ctx[:2], tr[[0, 2]], ctx[2:4, None], 0.05)
    assert float(first.detach()) == pytest.approx(float(plain), rel=1e-4, abs=1e-5)
    assert stats["memory"] == 0 and len(memory) == 2
    torch.testing.assert_close(memory.rows(), tr[[0, 2]], atol=1e-5, rtol=1e-5)
    second, stats = contrastive_term(model, context, trained, memory=memory, **kwargs)
    expected, _ = info_nce(ctx[:2], tr[[0, 2]], ctx[2:4, None], 0.05, memory=tr[[0, 2]])
    assert float(second.detach()) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    assert float(second.detach()) > float(first.detach())  # more negatives, never a smaller loss
    assert stats["memory"] == 2 and len(memory) == 4


def test_a_run_with_the_memory_logs_how_full_it_is(tmp_path, texts):  # noqa: F811
    """Unsupervised, batch 2: the memory holds 0, then 2, then 3 (its size) rows at the steps'
    terms; a negative size is refused before training."""
    args = ["--mode", "unsupervised", "--data", texts.name, *SMALL, *LEARN,
            "--optim.contrastive_weight", "1"]
    _ok(grace_train(tmp_path, *args, "--max-steps", "3", "--optim.contrastive_memory", "3",
                    "--output-dir", "MEM"))
    assert [row["contrastive/memory"] for row in _metrics(tmp_path / "MEM")] == [0, 2, 3]
    bad = grace_train(tmp_path, *args, "--max-steps", "1", "--optim.contrastive_memory", "-1",
                      "--output-dir", "BAD")
    assert bad.returncode == 2 and "optim.contrastive_memory must be >= 0" in bad.stderr
