"""Token log-probs, PPO-clip loss and KL against hand-computed numbers."""

import math

import pytest
import torch

from grace.grpo.policy_loss import kl_low_var, masked_mean, policy_loss, ppo_clip_loss
from grace.models.logprobs import token_logprobs

# Two rollouts of three tokens; old log-probs 0, so ratio = exp(lp). The last token is masked
# and holds a wild value that must not matter.
#   row 0, A = +1: ratio 1.5 -> pg1 = -1.5, pg2 = -1.2 (upper clip)  -> -1.2, clipped
#                  ratio 1.0 -> pg1 = pg2 = -1                         -> -1
#   row 1, A = -1: ratio 0.5 -> pg1 = 0.5, pg2 = 0.8 (lower clip)    -> 0.8, clipped
#                  ratio 4.0 -> pg1 = 4, pg2 = 1.2 -> 4 > -A*3 = 3    -> 3, dual clip
# loss = (-1.2 - 1 + 0.8 + 3) / 4 = 0.4; clip_frac 2/4; dual_clip_frac 1/4
# ratio_mean (1.5 + 1 + .5 + 4) / 4 = 1.75; approx_kl = -(ln 1.5 + ln .5 + ln 4) / 4 = -ln(3) / 4
RATIOS = [[1.5, 1.0, 1e6], [0.5, 4.0, 1e-6]]
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -1.0])


def logprobs():
    return torch.tensor(RATIOS).log().requires_grad_()


def test_ppo_clip_loss_hand_computed():
    lp = logprobs()
    loss, stats = ppo_clip_loss(lp, torch.zeros(2, 3), ADV, MASK)
    assert loss.item() == pytest.approx(0.4, abs=1e-6)
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    assert stats["dual_clip_frac"].item() == pytest.approx(0.25)
    assert stats["ratio_mean"].item() == pytest.approx(1.75, abs=1e-6)
    assert stats["approx_kl"].item() == pytest.approx(-math.log(3) / 4, abs=1e-6)
    # Only the unclipped token (row 0, ratio 1, A = +1) carries gradient: d(-A*ratio/4)/dlp = -0.25.
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0, -0.25, 0.0], [0.0, 0.0, 0.0]]))


def test_ppo_clip_loss_per_token_advantages_and_no_dual_clip():
    adv_tokens = ADV.unsqueeze(1).expand(2, 3)
    loss, _ = ppo_clip_loss(logprobs(), torch.zeros(2, 3), adv_tokens, MASK)
    assert loss.item() == pytest.approx(0.4, abs=1e-6)
    # without dual clip the ratio-4 token costs 4: (-1.2 - 1 + 0.8 + 4) / 4 = 0.65
    loss, stats = ppo_clip_loss(logprobs(), torch.zeros(2, 3), ADV, MASK, dual_clip=None)
    assert loss.item() == pytest.approx(0.65, abs=1e-6)
    assert stats["dual_clip_frac"].item() == 0.0


def test_masked_positions_ignored():
    other = torch.tensor(RATIOS).log()
    other[:, 2] = torch.tensor([-30.0, 25.0])  # change only masked tokens
    loss, _ = ppo_clip_loss(other, torch.zeros(2, 3), ADV, MASK)
    assert loss.item() == pytest.approx(0.4, abs=1e-6)


def test_masked_mean():
    x = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([2.0, 2.0]))
    assert masked_mean(x, torch.zeros(2, 3)).item() == 0.0


def test_token_logprobs_matches_log_softmax():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, labels), expected)
    assert token_logprobs(logits.bfloat16(), labels).dtype == torch.float32


def test_kl_low_var():
    lp = torch.tensor([[0.0, 0.0, 0.0]])
    ref = torch.tensor([[0.0, math.log(2.0), 5.0]])
    kl = kl_low_var(lp, ref)
    # d = ln 2: exp(d) - d - 1 = 2 - ln 2 - 1 = 1 - ln 2; d = 5: e^5 - 6 = 142.4 -> clamped to 10
    torch.testing.assert_close(kl, torch.tensor([[0.0, 1 - math.log(2.0), 10.0]]))
    assert (kl_low_var(torch.zeros(4), torch.tensor([-1.0, -0.1, 0.1, 1.0])) > 0).all()


def test_policy_loss_adds_kl():
    lp = logprobs()
    ref = lp.detach() + math.log(2.0)  # per-token k3 KL = 1 - ln 2
    loss, stats = policy_loss(lp, torch.zeros(2, 3), ADV, MASK, ref_logprobs=ref, kl_coef=0.1)
    assert stats["kl"].item() == pytest.approx(1 - math.log(2.0), abs=1e-6)
    assert loss.item() == pytest.approx(0.4 + 0.1 * (1 - math.log(2.0)), abs=1e-6)
    loss, stats = policy_loss(lp, torch.zeros(2, 3), ADV, MASK)
    assert loss.item() == pytest.approx(0.4, abs=1e-6) and stats["kl"].item() == 0.0
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(lp, torch.zeros(2, 3), ADV, MASK, kl_coef=0.1)
