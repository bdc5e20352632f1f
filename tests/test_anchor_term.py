"""optim.anchor_weight (grace.grpo.anchor_term): the KL by hand, which positions it scores, that
it is 0 for the initial model and grows as the model moves, and that a GRACE step with it logs
it and trains (through the real command line)."""

import math

import pytest
import torch
from test_cli_train import LEARN, SMALL, _metrics, _ok, grace_train, triplets  # noqa: F401

from grace.grpo.anchor_term import anchor_term, prediction_mask, token_kl


def test_token_kl_by_hand():
    # one scored position: p_ref = softmax([0, ln 3]) = (1/4, 3/4), p = softmax([0, 0]) = (1/2, 1/2)
    ref = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])  # (1, 2, 2)
    pol = torch.tensor([[[0.0, 0.0], [-5.0, 5.0]]])
    mask = torch.tensor([[1, 0]])  # the second position is not scored
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # 0.1308
    assert float(token_kl(pol, ref, mask)) == pytest.approx(expected, rel=1e-6)
    assert float(token_kl(ref, ref, torch.ones(1, 2))) == pytest.approx(0.0, abs=1e-7)
    assert float(token_kl(pol, ref, torch.zeros(1, 2))) == 0.0  # nothing scored: 0, not nan


def test_prediction_mask_scores_a_real_token_followed_by_a_real_token():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    assert prediction_mask(mask).tolist() == [[True, True, False, False], [False, False, False, False],
                                              [True, False, False, False]]


def test_the_anchor_is_zero_at_the_start_and_grows_as_the_model_moves(tiny):
    model, tokenizer = tiny
    enc = tokenizer(["a cat sat on the mat", "dogs bark"], padding=True, return_tensors="pt",
                    padding_side="right")
    frozen = {k: v.clone() for k, v in model.state_dict().items()}

    def initial(input_ids, attention_mask):
        current = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(frozen)
        out = model(input_ids=input_ids, attention_mask=attention_mask).logits
        model.load_state_dict(current)
        return out

    loss, stats = anchor_term(model, initial, enc["input_ids"], enc["attention_mask"])
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    assert stats["tokens"] == int(enc["attention_mask"].sum()) - 2  # each row's last token predicts nothing
    try:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        moved, _ = anchor_term(model, initial, enc["input_ids"], enc["attention_mask"])
        assert float(moved.detach()) > 1e-4 and moved.requires_grad
        moved.backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
    finally:
        model.load_state_dict(frozen)
        model.zero_grad()


def test_a_grace_step_with_the_anchor_logs_it_and_trains_other_weights(tmp_path, triplets):  # noqa: F811
    """The same seeded supervised run (the contrastive term on) with and without the anchor: the
    anchor logged only with it, 0 at the first step (the model is still the initial one, so it
    pulls nothing and the rewards match), > 0 once the model has moved, and different weights
    after the second step."""
    from safetensors.torch import load_file

    args = ["--mode", "supervised", "--data", triplets.name, "--max-steps", "2", *SMALL, *LEARN,
            "--optim.contrastive_weight", "1"]
    _ok(grace_train(tmp_path, *args, "--output-dir", "TERM"))
    _ok(grace_train(tmp_path, *args, "--optim.anchor_weight", "1", "--output-dir", "ANCHOR"))
    term, anchored = _metrics(tmp_path / "TERM"), _metrics(tmp_path / "ANCHOR")
    assert all("anchor/kl" not in row for row in term)
    assert anchored[0]["anchor/kl"] == pytest.approx(0.0, abs=1e-5) and anchored[0]["anchor/tokens"] > 0
    assert anchored[0]["reward/mean"] == pytest.approx(term[0]["reward/mean"], abs=1e-6)
    assert anchored[1]["anchor/kl"] > 1e-5
    a = load_file(tmp_path / "TERM" / "checkpoint-2" / "model.safetensors")
    b = load_file(tmp_path / "ANCHOR" / "checkpoint-2" / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    bad = grace_train(tmp_path, *args, "--optim.anchor_weight", "-1", "--output-dir", "BAD")
    assert bad.returncode == 2 and "optim.anchor_weight must be >= 0" in bad.stderr
