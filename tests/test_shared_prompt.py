"""grace.rollout.shared_prompt: the packed layout by hand, and log-probs and gradients equal to
the plain layout's (every rollout row with its own prompt) on the tiny model."""

import torch

from grace.models.backbones import load_backbone
from grace.rollout.batch import Sequences
from grace.rollout.hf_path import response_logprobs
from grace.rollout.shared_prompt import (
    shared_prompt_layout,
    shared_prompt_logprobs,
    supports_shared_prompt,
)


def _seqs(prompts, prompt_masks, responses, response_masks) -> Sequences:
    ids = torch.cat([torch.tensor(prompts), torch.tensor(responses)], dim=1)
    rmask = torch.tensor(response_masks)
    mask = torch.cat([torch.tensor(prompt_masks), rmask], dim=1)
    return Sequences(input_ids=ids, attention_mask=mask, pool_mask=mask.clone(), response_mask=rmask,
                     truncated=torch.zeros(len(ids), dtype=torch.bool), prompt_len=len(prompts[0]))


def test_layout_by_hand():
    # rows 0 and 2 share the prompt [_, 5, 6] (left-padded); row 1 has [7, 8, 9]; R = 2
    seqs = _seqs([[0, 5, 6], [7, 8, 9], [0, 5, 6]], [[0, 1, 1], [1, 1, 1], [0, 1, 1]],
                 [[11, 12], [13, 14], [15, 0]], [[1, 1], [1, 1], [1, 0]])
    lay = shared_prompt_layout(seqs)
    assert lay.slots == 2 and lay.input_ids.shape == (2, 3 + 2 * 2)
    g = lay.row_of.tolist()
    assert g[0] == g[2] != g[1]
    assert lay.input_ids[g[0]].tolist() == [0, 5, 6, 11, 12, 15, 0]
    assert lay.input_ids[g[1]].tolist()[:5] == [7, 8, 9, 13, 14]  # its second slot is empty
    # positions continue from the prompt's real tokens, the same for every slot
    assert lay.position_ids[g[0]].tolist() == [0, 0, 1, 2, 3, 2, 3]
    assert lay.position_ids[g[1]].tolist() == [0, 1, 2, 3, 4, 3, 4]
    # logits of kept positions (from P-1 = 2) that predict each rationale token
    assert lay.predict.tolist() == [[0, 1], [0, 1], [0, 3]]
    a = lay.attention[g[0], 0].int().tolist()  # [query][key]
    assert a[1] == [0, 1, 0, 0, 0, 0, 0]  # the padding key is never seen
    assert a[4] == [0, 1, 1, 1, 1, 0, 0]  # slot 0, token 2: prompt + itself, causally
    assert a[5] == [0, 1, 1, 0, 0, 1, 0]  # slot 1, token 1: prompt, not slot 0
    assert a[6] == [0, 1, 1, 0, 0, 1, 1]  # a padding query: unused, but never an empty row (NaN)
    assert lay.attention[g[1], 0, 6].int().tolist() == [1, 1, 1, 0, 0, 0, 1]  # empty slot


def _sampled(tokenizer):
    """Rows of three prompts (lengths differ, so left padding), ragged rationales."""
    from grace.models.prompt import build_prompts

    prompts = build_prompts(tokenizer, ["a cat sat on the mat today", "hello",
                                        "the longest text of them all, by far"], "Be brief.", 64)
    P = prompts.input_ids.shape[1]
    g = torch.Generator().manual_seed(0)
    R = 6
    rows = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    resp = torch.randint(5, 1000, (9, R), generator=g)
    lengths = torch.tensor([6, 3, 1, 6, 6, 2, 4, 6, 5])
    rmask = (torch.arange(R)[None, :] < lengths[:, None]).long()
    resp = resp * rmask  # padding id 0 after the end
    mask = torch.cat([prompts.attention_mask[rows], rmask], dim=1)
    return Sequences(input_ids=torch.cat([prompts.input_ids[rows], resp], dim=1), attention_mask=mask,
                     pool_mask=mask.clone(), response_mask=rmask,
                     truncated=torch.zeros(9, dtype=torch.bool), prompt_len=P)


def _fresh(attn):
    model, tokenizer = load_backbone("tiny-random")
    model.set_attn_implementation(attn)
    return model.train(), tokenizer


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_logprobs_and_gradients_equal_the_plain_layout():
    for attn in ("sdpa", "eager"):
        model, tokenizer = _fresh(attn)
        assert supports_shared_prompt(model)
        seqs = _sampled(tokenizer).select(torch.tensor([4, 0, 8, 1, 3, 6, 2]))  # shuffled rows
        plain = response_logprobs(model, seqs, temperature=0.7)
        shared = shared_prompt_logprobs(model, seqs, temperature=0.7)
        assert shared.shape == plain.shape
        assert torch.allclose(shared, plain, atol=1e-5), (attn, (shared - plain).abs().max())
        assert (shared[seqs.response_mask == 0] == 0).all()
        weights = torch.linspace(-1, 1, plain.numel()).view_as(plain)
        g_plain = _grads(model, (plain * weights).sum())
        g_shared = _grads(model, (shared_prompt_logprobs(model, seqs, 0.7) * weights).sum())
        assert g_plain.keys() == g_shared.keys()
        for name in g_plain:
            assert torch.allclose(g_plain[name], g_shared[name], atol=1e-5, rtol=1e-4), name


def test_only_masked_attention_implementations_qualify():
    model, _ = _fresh("sdpa")
    model.config._attn_implementation = "flex_attention"  # takes a BlockMask, not a tensor
    assert not supports_shared_prompt(model)


def test_mini_batches_take_whole_groups_in_a_seeded_order():
    from types import SimpleNamespace

    from grace.grpo.trainer import GraceTrainer

    def parts(groups, k, step=1, seed=0):
        cfg = SimpleNamespace(seed=seed, rollout=SimpleNamespace(num_rollouts=4),
                              optim=SimpleNamespace(num_mini_batches=k))
        return GraceTrainer._mini_batches(SimpleNamespace(config=cfg), groups * 4, step)

    mbs = parts(6, 3)
    assert len(mbs) == 3 and sorted(torch.cat(mbs).tolist()) == list(range(24))
    for mb in mbs:  # two whole groups each, rows of a group contiguous
        assert len(mb) == 8 and {int(r) // 4 for r in mb[:4]} == {int(mb[0]) // 4}
        assert len({int(r) // 4 for r in mb}) == 2
    assert [m.tolist() for m in parts(6, 3)] == [m.tolist() for m in mbs]  # seeded
    assert [m.tolist() for m in parts(6, 3, step=2)] != [m.tolist() for m in mbs]
    assert len(parts(1, 2)) == 2  # fewer groups than mini-batches: still k optimizer steps


def test_rows_per_pack_follow_the_cost_model():
    from types import SimpleNamespace

    from grace.rollout.shared_prompt import pair_cost, slots_per_row

    smol = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                           hidden_size=576, intermediate_size=1536)  # SmolLM2-135M
    c = pair_cost(smol)
    assert abs(c - 4 * 576 / (2 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536))) < 1e-12
    # P=80, R=32, G=4: one row of 208 positions (222 units) beats 4 rows of 112 (464)
    assert slots_per_row(80, 32, 4, c) == 4
    # P=128, R=256, G=16: attention over 4,224 positions would cost more than it saves; pairs win
    assert slots_per_row(128, 256, 16, c) == 2
    assert slots_per_row(10, 5, 1, c) == 1


def test_a_prompt_with_more_rows_than_slots_fills_several_packs():
    seqs = _seqs([[5, 6]] * 3, [[1, 1]] * 3, [[11, 12], [13, 14], [15, 16]], [[1, 1]] * 3)
    lay = shared_prompt_layout(seqs, max_slots=2)
    assert lay.slots == 2 and lay.input_ids.shape == (2, 2 + 2 * 2)
    g = lay.row_of.tolist()
    assert g[0] == g[1] != g[2]
    assert lay.input_ids[g[0]].tolist() == [5, 6, 11, 12, 13, 14]
    assert lay.input_ids[g[2]].tolist()[:4] == [5, 6, 15, 16]
    assert lay.predict.tolist() == [[0, 1], [0, 3], [0, 1]]


def test_a_lora_policy_gets_the_same_logprobs():
    from grace.models.backbones import apply_lora

    model, tokenizer = _fresh("sdpa")
    model = apply_lora(model, 4, 8, 0.0, "all-linear").train()
    assert supports_shared_prompt(model)
    seqs = _sampled(tokenizer)
    torch.testing.assert_close(shared_prompt_logprobs(model, seqs), response_logprobs(model, seqs),
                               atol=1e-5, rtol=0)
