"""Length-bucketed prefill: grace.rollout.buckets and the engine's prefill by buckets."""

import functools

import pytest
import torch

from grace.models.prompt import build_prompts
from grace.rollout import engine
from grace.rollout.buckets import length_buckets

TEXTS = ["hi", "a somewhat longer text, so that the first prompt is left-padded and long enough",
         "The stock market fell sharply on Monday.", "ok"]


def test_buckets_cut_where_padding_saved_exceeds_the_call_overhead():
    # the 8 suffix lengths of bench_rollout's prompts: one bucket costs 8 x 59 + 64 = 536 token
    # rows; {12, 13} apart: 2 x 13 + 64 + 6 x 59 + 64 = 508; {12, 13, 36, 37} apart: 212 + 300 = 512
    lengths = [44, 12, 59, 36, 13, 50, 37, 46]
    assert length_buckets(lengths, overhead=64) == [[1, 4], [3, 6, 0, 7, 5, 2]]
    assert length_buckets(lengths, overhead=10_000) == [[1, 4, 3, 6, 0, 7, 5, 2]]
    assert length_buckets([3, 1, 2], overhead=0) == [[1], [2], [0]]
    assert length_buckets([], overhead=64) == []
    with pytest.raises(ValueError, match="lengths"):
        length_buckets([1, -1])


@pytest.fixture(scope="module")
def setup():
    from grace.models.backbones import load_backbone

    model, tokenizer = load_backbone("tiny-random")
    return model.eval(), tokenizer, build_prompts(tokenizer, TEXTS)


def _one_bucket(lengths):
    return [list(range(len(lengths)))]


@torch.no_grad()
def test_bucketed_prefill_is_the_batched_prefill(setup, monkeypatch):
    model, tok, prompts = setup
    batched = engine.prefill(model, prompts, tok.pad_token_id, True, room=3)  # tiny prompts: one bucket
    assert len(engine.length_buckets(engine.split_shared_prefix(prompts, tok.pad_token_id).lengths.tolist())) == 1
    monkeypatch.setattr(engine, "length_buckets", functools.partial(length_buckets, overhead=0))
    calls = []
    run = engine._bucketed_suffixes
    monkeypatch.setattr(engine, "_bucketed_suffixes", lambda *a: calls.append(len(a[3])) or run(*a))
    bucketed = engine.prefill(model, prompts, tok.pad_token_id, True, room=3)
    assert calls == [len(set(engine.split_shared_prefix(prompts, tok.pad_token_id).lengths.tolist()))] and calls[0] > 1
    assert torch.equal(bucketed.attn, batched.attn) and torch.equal(bucketed.next_pos, batched.next_pos)
    for name in ("pool_sum", "pool_count", "last_hidden"):
        torch.testing.assert_close(getattr(bucketed, name), getattr(batched, name), atol=2e-6, rtol=2e-6)
    real = batched.attn.bool()  # (b, S+L): columns a row attends; the others hold pad tokens' keys
    for a, b in zip(bucketed.cache.layers, batched.cache.layers):
        assert a.length == b.length == real.shape[1] and a._k.shape == b._k.shape
        torch.testing.assert_close(a.keys.transpose(1, 2)[real], b.keys.transpose(1, 2)[real], atol=2e-6, rtol=2e-6)
        torch.testing.assert_close(a.values.transpose(1, 2)[real], b.values.transpose(1, 2)[real],
                                   atol=2e-6, rtol=2e-6)
        assert not a.keys.transpose(1, 2)[~real].any()  # padded columns: zeros, masked


def test_rollouts_through_buckets_equal_the_batched_ones(setup, monkeypatch):
    model, tok, prompts = setup
    runs = []
    for buckets in (_one_bucket, functools.partial(length_buckets, overhead=0)):
        monkeypatch.setattr(engine, "length_buckets", buckets)
        torch.manual_seed(0)
        runs.append(engine.generate_and_score(model, tok, prompts, num_samples=2, temperature=[0.0, 1.0, 0.0, 1.0],
                                              max_new_tokens=6))
    assert torch.equal(runs[0].seqs.input_ids, runs[1].seqs.input_ids)
    torch.testing.assert_close(runs[0].embeddings, runs[1].embeddings, atol=1e-5, rtol=0)
    torch.testing.assert_close(runs[0].logprobs, runs[1].logprobs, atol=1e-5, rtol=0)
