"""Rewards and group advantages against hand-computed numbers.

Embeddings are 2-D unit vectors e(a) at angles a in degrees, so cos(e(a), e(b)) = cos(a - b):
differences that are multiples of 60 degrees give cosines in {1, 0.5, -0.5, -1}.
"""

import math

import pytest
import torch

from grace.grpo.advantages import group_advantages
from grace.grpo.rewards import (
    compute_rewards,
    consistency,
    finalize,
    supervised_decoupled,
    supervised_paper,
    supervised_reference,
    unsupervised,
)


def e(*angles):
    """Unit vectors at the given angles (degrees), stacked: (len(angles), 2)."""
    r = torch.tensor(angles, dtype=torch.float64) * math.pi / 180
    return torch.stack([r.cos(), r.sin()], -1)


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


# Shared supervised example, B = 2, G = 2.
Q = e(0, 120)                                   # q_0 = e0, q_1 = e120
POS = torch.stack([e(0, 60), e(120, 180)])      # (2, 2, 2)
NO_TRUNC = torch.zeros(2, 2, dtype=torch.bool)


def test_consistency():
    # G = 3 at 0, 60, 120: k0 mean(.5, -.5) = 0; k1 mean(.5, .5) = .5; k2 mean(-.5, .5) = 0
    close(consistency(e(0, 60, 120).unsqueeze(0)), [[0.0, 0.5, 0.0]])
    close(consistency(e(0, 90).unsqueeze(1)), [[0.0], [0.0]])  # G == 1


def test_finalize_penalty_replaces_and_is_not_scaled():
    raw = torch.tensor([[1.0, 2.0]])
    close(finalize(raw, torch.tensor([[False, True]]), 10.0, -1.0), [[10.0, -1.0]])


def test_supervised_reference():
    neg = e(120, 0)
    # i=0: cos(q0,d+) = [1, .5], cos(q0,d-) = cos(-120) = -.5 -> contrastive [1.5, 1.0]
    #      consist cos60 = .5; hard = -max(cos(0-120), cos(0-180)) = -max(-.5, -1) = .5
    #      (the MAX over the other group's rollouts, as the reference code and the paper)
    #      raw = contrastive + .2*.5 + .2*.5 = [1.7, 1.2] -> x10 = [17, 12]
    # i=1: cos(q1,d+) = [1, .5], cos(q1,d-) = cos(120) = -.5 -> contrastive [1.5, 1.0]
    #      consist .5; hard = -max(cos(120-0), cos(120-60)) = -max(-.5, .5) = -.5
    #      raw = [1.5, 1.0] -> x10 = [15, 10]; rollout (1, 1) truncated -> -1
    truncated = torch.tensor([[False, False], [False, True]])
    out = supervised_reference(Q, POS, neg, truncated)
    close(out.components["contrastive"], [[1.5, 1.0], [1.5, 1.0]])
    close(out.components["consistency"], [[0.5, 0.5], [0.5, 0.5]])
    close(out.components["hard"], [[0.5, 0.5], [-0.5, -0.5]])
    close(out.total, [[17.0, 12.0], [15.0, -1.0]])
    with pytest.raises(ValueError, match="one negative per triplet"):
        supervised_reference(Q, POS, neg.unsqueeze(1).expand(-1, 2, -1), truncated)


def test_reference_hard_is_zero_for_one_group():
    out = supervised_reference(Q[:1], POS[:1], e(120), NO_TRUNC[:1])
    close(out.components["hard"], [[0.0, 0.0]])


def test_supervised_paper_with_weights_and_penalty():
    neg = torch.stack([e(120, 180), e(0, 300)])  # M = 2 negatives each
    # i=0: contrastive = [1, .5] - (cos(-120) + cos(-180)) = [1, .5] + 1.5 = [2.5, 2.0]
    #      hard = -max(cos(0-120), cos(0-180)) = -(-.5) = .5; consist .5
    #      raw (l1 = l2 = .5) = [2.5 + .25 + .25, 2.0 + .5] = [3.0, 2.5] -> x5 = [15, 12.5]
    # i=1: contrastive = [1, .5] - (cos(120) + cos(-180)) = [1, .5] + 1.5 = [2.5, 2.0]
    #      hard = -max(cos(120-0), cos(120-60)) = -.5; raw = [2.5, 2.0] -> x5 = [12.5, 10]
    truncated = torch.tensor([[True, False], [False, False]])
    out = supervised_paper(Q, POS, neg, truncated, consistency_weight=0.5, hard_weight=0.5,
                           scale=5.0, truncation_penalty=-2.0)
    close(out.components["contrastive"], [[2.5, 2.0], [2.5, 2.0]])
    close(out.components["hard"], [[0.5, 0.5], [-0.5, -0.5]])
    close(out.total, [[-2.0, 12.5], [12.5, 10.0]])


def test_supervised_decoupled():
    q = torch.stack([e(-60, 60), e(120, 240)])     # centroids q_bar = e0, e180
    pos = torch.stack([e(0, 120), e(180, 300)])    # centroids p_bar = e60, e240
    neg = e(180, 60)
    # query rows (consist cos120 = -.5 everywhere):
    #  i=0, q at -60, 60: cos(q, p_bar0=60) = [-.5, 1], cos(q, d-=180) = [-.5, -.5] -> CL [0, 1.5]
    #       hard = -cos(q, p_bar1=240) = [-cos(300), -cos(180)] = [-.5, 1]
    #       raw = [0 - .1 - .1, 1.5 - .1 + .2] = [-.2, 1.6] -> [-2, 16]
    #  i=1, q at 120, 240: cos(q, p_bar1=240) = [-.5, 1], cos(q, d-=60) = [.5, -1] -> CL [-1, 2]
    #       hard = -cos(q, p_bar0=60) = [-.5, 1]; raw = [-1.2, 2.1] -> [-12, 21]
    # positive rows:
    #  i=0, d+ at 0, 120: cos(d+, q_bar0=0) = [1, -.5], cos(d+, d-=180) = [-1, .5] -> CL [2, -1]
    #       hard = -cos(d+, q_bar1=180) = [1, -.5]; raw = [2.1, -1.2] -> [21, -12]
    #  i=1, d+ at 180, 300: cos(d+, q_bar1=180) = [1, -.5], cos(d+, d-=60) = [-.5, -.5] -> CL [1.5, 0]
    #       hard = -cos(d+, q_bar0=0) = [1, -.5]; raw = [1.6, -.2] -> [16, -2]
    truncated_q = torch.tensor([[False, False], [False, True]])
    truncated_pos = torch.tensor([[True, False], [False, False]])
    out = supervised_decoupled(q, pos, neg, truncated_q, truncated_pos)
    close(out.components["contrastive"], [[0.0, 1.5], [-1.0, 2.0], [2.0, -1.0], [1.5, 0.0]])
    close(out.components["consistency"], [[-0.5, -0.5]] * 4)
    close(out.components["hard"], [[-0.5, 1.0], [-0.5, 1.0], [1.0, -0.5], [1.0, -0.5]])
    close(out.total, [[-2.0, 16.0], [-12.0, -1.0], [-1.0, -12.0], [16.0, -2.0]])


def test_unsupervised():
    anchor = e(0, 120)
    rollouts = torch.stack([e(0, 60), e(120, 240)])
    # i=0: CL [1, .5]; consist .5; hard = -cos(x, anchor1=120) = [-cos(-120), -cos(-60)] = [.5, -.5]
    #      raw = [1 + .1 + .1, .5 + .1 - .1] = [1.2, .5] -> [12, 5]; (0, 1) truncated -> -1
    # i=1: CL [1, -.5]; consist -.5; hard = -cos(x, anchor0=0) = [-cos120, -cos240] = [.5, .5]
    #      raw = [1 - .1 + .1, -.5 - .1 + .1] = [1.0, -.5] -> [10, -5]
    out = unsupervised(anchor, rollouts, torch.tensor([[False, True], [False, False]]))
    close(out.components["contrastive"], [[1.0, 0.5], [1.0, -0.5]])
    close(out.components["hard"], [[0.5, -0.5], [0.5, 0.5]])
    close(out.total, [[12.0, -1.0], [10.0, -5.0]])


def _random_unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def test_negative_moves_advantages_only_under_decoupled():
    torch.manual_seed(0)
    B, G, D = 3, 4, 8
    q1, q, pos = _random_unit(B, D), _random_unit(B, G, D), _random_unit(B, G, D)
    neg_a, neg_b = _random_unit(B, D), _random_unit(B, D)
    trunc = torch.zeros(B, G, dtype=torch.bool)

    def adv_and_reward(fn, *args):
        out = fn(*args)
        return group_advantages(out.total), out.total

    for fn in (supervised_reference, supervised_paper):
        adv_a, r_a = adv_and_reward(fn, q1, pos, neg_a, trunc)
        adv_b, r_b = adv_and_reward(fn, q1, pos, neg_b, trunc)
        assert not torch.allclose(r_a, r_b)      # the negative changes the rewards ...
        torch.testing.assert_close(adv_a, adv_b)  # ... but not the advantages (issue #4)
    # ... unless a rollout of the group is truncated: its reward is replaced by the penalty, its
    # siblings keep scale * raw (which holds the group-constant terms), so the gap moves
    cut = trunc.clone()
    cut[0, 1] = True
    for fn in (supervised_reference, supervised_paper):
        adv_a, _ = adv_and_reward(fn, q1, pos, neg_a, cut)
        adv_b, _ = adv_and_reward(fn, q1, pos, neg_b, cut)
        assert (adv_a[0] - adv_b[0]).abs().min() > 1e-6  # group 0: every rollout moves
        torch.testing.assert_close(adv_a[1:], adv_b[1:])  # the groups without one: not at all
    adv_a, _ = adv_and_reward(supervised_decoupled, q, pos, neg_a, trunc, trunc)
    adv_b, _ = adv_and_reward(supervised_decoupled, q, pos, neg_b, trunc, trunc)
    assert (adv_a - adv_b).abs().min() > 1e-6   # every trained rollout feels the negative


def test_compute_rewards_dispatch():
    emb = {"query": Q, "positive": POS, "negative": e(120, 0)}
    trunc = {"positive": NO_TRUNC}
    close(compute_rewards("reference", "supervised", emb, trunc).total, [[17.0, 12.0], [15.0, 10.0]])
    paper = compute_rewards("paper", "supervised", emb, trunc, scale=1.0)  # (B, D) negative = M of 1
    close(paper.components["contrastive"], [[1.5, 1.0], [1.5, 1.0]])
    unsup_emb, unsup_trunc = {"anchor": Q, "rollouts": POS}, {"rollouts": NO_TRUNC}
    expected = unsupervised(Q, POS, NO_TRUNC).total
    for variant in ("paper", "reference", "decoupled"):
        torch.testing.assert_close(compute_rewards(variant, "unsupervised", unsup_emb, unsup_trunc).total, expected)
    with pytest.raises(ValueError, match="bogus"):
        compute_rewards("bogus", "supervised", emb, trunc)
    with pytest.raises(ValueError, match="semi"):
        compute_rewards("paper", "semi", emb, trunc)
    with pytest.raises(ValueError, match="query"):
        compute_rewards("decoupled", "supervised", emb, trunc)  # no truncation mask for queries


def test_group_advantages():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    close(group_advantages(rewards), [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # [0, 4]: mean 2, unbiased std = sqrt((4 + 4) / 1) = 2*sqrt(2) -> -+2 / 2.828 = -+0.7071
    close(group_advantages(torch.tensor([[0.0, 4.0]]), normalize_std=True, eps=0.0),
          [[-1 / math.sqrt(2), 1 / math.sqrt(2)]])
    # constant group: 0 / (0 + eps) = 0
    close(group_advantages(rewards, normalize_std=True)[1], [0.0, 0.0, 0.0])
    close(group_advantages(torch.tensor([[5.0], [-3.0]])), [[0.0], [0.0]])  # G == 1
    close(group_advantages(torch.tensor([[5.0], [-3.0]]), normalize_std=True), [[0.0], [0.0]])
