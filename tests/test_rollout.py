"""Rollouts on the tiny model: masks, greedy determinism, and scoring against plain forwards."""

import pytest
import torch
import torch.nn.functional as F

from grace.models.pooling import pooling_mask
from grace.models.prompt import build_prompts
from grace.rollout.hf_path import (
    Sequences,
    generate_sequences,
    response_logprobs,
    response_mask_from_ids,
    score_sequences,
)

TEXTS = ["hi", "a somewhat longer text, so that the first prompt is left-padded"]
EOS = 2


def test_response_mask_from_ids_hand_example():
    ids = torch.tensor(
        [
            [5, 6, EOS, 7, EOS],  # EOS in the middle: kept, what follows is masked
            [EOS, 5, 6, 7, 8],  # EOS first
            [5, 6, 7, 8, 9],  # no EOS: truncated
        ]
    )
    mask, truncated = response_mask_from_ids(ids, EOS)
    assert torch.equal(mask, torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]))
    assert truncated.tolist() == [False, False, True]


@pytest.fixture(scope="module")
def rollout(tiny):
    """Greedy rollouts (2 per prompt); row 1's rationale is then cut by an EOS at its 3rd token."""
    model, tokenizer = tiny
    prompts = build_prompts(tokenizer, TEXTS)
    seqs = generate_sequences(
        model, tokenizer, prompts, num_samples=2, temperature=0.0, max_new_tokens=6, batch_size=3
    )
    P = seqs.prompt_len
    ids = seqs.input_ids.clone()
    ids[1, P + 2] = tokenizer.eos_token_id
    ids[1, P + 3 :] = tokenizer.pad_token_id
    response_mask, truncated = response_mask_from_ids(ids[:, P:], tokenizer.eos_token_id)
    attention = torch.cat([seqs.attention_mask[:, :P], response_mask], dim=1)
    pool_start = prompts.pool_start.repeat_interleave(2)
    cut = Sequences(ids, attention, pooling_mask(attention, pool_start).long(), response_mask, truncated, P)
    return prompts, seqs, cut


def test_greedy_generation_is_deterministic(tiny, rollout):
    model, tokenizer = tiny
    prompts, seqs, _ = rollout
    again = generate_sequences(model, tokenizer, prompts, num_samples=2, temperature=0.0, max_new_tokens=6)
    assert torch.equal(again.input_ids, seqs.input_ids)
    assert torch.equal(again.attention_mask, seqs.attention_mask)
    assert not model.training  # the eval/train state is restored


def test_generated_shapes_and_masks(tiny, rollout):
    _, tokenizer = tiny
    prompts, seqs, _ = rollout
    N, P = 4, prompts.input_ids.shape[1]
    R = seqs.response_ids.shape[1]
    assert len(seqs) == N and seqs.prompt_len == P and 1 <= R <= 6
    assert seqs.input_ids.shape == seqs.attention_mask.shape == seqs.pool_mask.shape == (N, P + R)
    # rows are group-major: prompt 0's two samples, then prompt 1's
    assert torch.equal(seqs.input_ids[:, :P], prompts.input_ids.repeat_interleave(2, dim=0))
    assert torch.equal(seqs.input_ids[0], seqs.input_ids[1])  # greedy: one group, one rationale
    expected_attention = torch.cat([prompts.attention_mask.repeat_interleave(2, dim=0), seqs.response_mask], 1)
    assert torch.equal(seqs.attention_mask, expected_attention)
    mask, truncated = response_mask_from_ids(seqs.response_ids, tokenizer.eos_token_id)
    assert torch.equal(seqs.response_mask, mask) and torch.equal(seqs.truncated, truncated)
    for row in range(N):
        start = int(prompts.pool_start[row // 2])
        assert seqs.pool_mask[row, :start].sum() == 0  # padding and system prefix
        assert torch.equal(seqs.pool_mask[row, start:], seqs.attention_mask[row, start:])


def test_score_sequences_match_plain_unpadded_forwards(tiny, rollout):
    """Embedding: mean of hidden_states[-1] after the system prefix; log-probs: log_softmax gather.

    Each row is run alone with its padding stripped, so padding, position ids and the pool mask
    are all checked against a computation that never sees them.
    """
    model, tokenizer = tiny
    prompts, _, seqs = rollout
    scored = score_sequences(model, seqs, micro_batch_size=3)
    assert scored.embeddings.dtype == scored.logprobs.dtype == torch.float32
    assert scored.logprobs.shape == seqs.response_mask.shape
    assert seqs.response_mask[1].tolist() == [1, 1, 1, 0, 0, 0]  # the cut row
    for row in range(len(seqs)):
        prompt_ids = prompts.input_ids[row // 2][prompts.attention_mask[row // 2].bool()]
        n_resp = int(seqs.response_mask[row].sum())
        response = seqs.response_ids[row, :n_resp]
        ids = torch.cat([prompt_ids, response])[None]  # (1, L) no padding at all
        n_prefix = int(prompts.pool_start[row // 2] - (prompts.input_ids.shape[1] - len(prompt_ids)))
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        emb = F.normalize(out.hidden_states[-1][0, n_prefix:].mean(dim=0), dim=-1)
        assert F.cosine_similarity(emb, scored.embeddings[row], dim=0) >= 0.9999
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)  # (L, V)
        L_p = len(prompt_ids)
        expected = logp[L_p - 1 : L_p - 1 + n_resp].gather(-1, response[:, None]).squeeze(-1)
        assert torch.allclose(scored.logprobs[row, :n_resp], expected, atol=1e-4)
        assert (scored.logprobs[row, n_resp:] == 0).all()


def test_greedy_tokens_are_the_argmax_of_the_scoring_pass(tiny, rollout):
    model, _ = tiny
    _, seqs, _ = rollout
    scored = score_sequences(model, seqs)
    # a greedy token is the most likely one: its log-prob is the maximum over the vocabulary
    with torch.no_grad():
        logits = model(seqs.input_ids, attention_mask=seqs.attention_mask).logits  # (N, P+R, V)
    best = torch.log_softmax(logits[:, seqs.prompt_len - 1 : -1].float(), dim=-1).amax(dim=-1)
    assert torch.allclose(scored.logprobs, best * seqs.response_mask, atol=1e-4)


def test_response_logprobs_match_scoring_and_reach_every_parameter(tiny, rollout):
    model, _ = tiny
    _, _, seqs = rollout
    old = score_sequences(model, seqs).logprobs
    model.zero_grad(set_to_none=True)
    try:
        lp = response_logprobs(model, seqs)
        assert lp.shape == old.shape and lp.requires_grad
        assert torch.allclose(lp.detach(), old, atol=1e-5)
        assert (lp.detach()[seqs.response_mask == 0] == 0).all()
        lp.sum().backward()
        for name, param in model.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    finally:
        model.zero_grad(set_to_none=True)
