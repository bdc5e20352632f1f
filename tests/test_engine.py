"""The one-pass engine against the simple pipeline (HF generate + a separate scoring pass)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from grace.models.backbones import load_backbone
from grace.rollout.engine import (
    generate_and_score,
    pool_prompts,
    split_shared_prefix,
)
from grace.rollout.sampling import sample_tokens
from grace.models.prompt import build_prompts
from grace.rollout.kv_cache import PreallocatedLayer
from grace.rollout.hf_path import generate_sequences, prompt_only, score_sequences

TEXTS = [
    "hi",
    "a somewhat longer text, so that the first prompt is left-padded",
    "The stock market fell sharply on Monday.",
]


def _min_cosine(a, b):
    return F.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


@pytest.fixture(scope="module")
def setup(tiny):
    model, tokenizer = tiny
    return model, tokenizer, build_prompts(tokenizer, TEXTS)


def test_greedy_matches_generate_then_a_separate_forward_pass(setup):
    model, tok, prompts = setup
    simple = generate_sequences(model, tok, prompts, num_samples=2, temperature=0.0, max_new_tokens=6)
    reference = score_sequences(model, simple)
    ours = generate_and_score(model, tok, prompts, num_samples=2, temperature=0.0, max_new_tokens=6)
    assert torch.equal(ours.seqs.input_ids, simple.input_ids)
    assert torch.equal(ours.seqs.pool_mask, simple.pool_mask)
    assert torch.equal(ours.seqs.truncated, simple.truncated)
    assert _min_cosine(ours.embeddings, reference.embeddings) >= 0.9999
    torch.testing.assert_close(ours.logprobs, reference.logprobs, atol=1e-4, rtol=0)


def test_sampled_rollouts_with_early_exit_score_like_a_separate_forward_pass(setup):
    model, tok, prompts = setup
    # The tiny model never says EOS: call the token that row 4 samples third "EOS", so that the
    # same seeded run stops row 4 early while the others go on (rows leave the batch mid-way).
    torch.manual_seed(0)
    probe = generate_and_score(model, SimpleNamespace(eos_token_id=-1, pad_token_id=tok.pad_token_id), prompts,
                    num_samples=3, temperature=1.0, max_new_tokens=8, batch_size=4)
    stop = SimpleNamespace(eos_token_id=int(probe.seqs.response_ids[4, 2]), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    ours = generate_and_score(model, stop, prompts, num_samples=3, temperature=1.0, max_new_tokens=8, batch_size=4)
    assert len(ours.seqs) == 9
    lengths = ours.seqs.response_mask.sum(1)
    assert lengths[4] <= 3 and lengths.max() == 8 and not ours.seqs.truncated[4]
    reference = score_sequences(model, ours.seqs)
    assert _min_cosine(ours.embeddings, reference.embeddings) >= 0.9999
    torch.testing.assert_close(ours.logprobs, reference.logprobs, atol=1e-4, rtol=0)
    # group-major: the 3 samples of a prompt share its prompt tokens
    assert torch.equal(ours.seqs.input_ids[:3, : ours.seqs.prompt_len],
                       prompts.input_ids[0].expand(3, -1))


def test_shared_prefix_changes_nothing_but_the_cost(setup):
    model, tok, prompts = setup
    layout = split_shared_prefix(prompts, tok.pad_token_id)
    assert layout.prefix.shape[1] > 10  # the system message is shared
    assert split_shared_prefix(prompts, tok.pad_token_id, share=False).prefix.shape[1] == 0
    shared = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=5)
    plain = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=5, share_prefix=False)
    assert torch.equal(shared.seqs.input_ids, plain.seqs.input_ids)
    assert _min_cosine(shared.embeddings, plain.embeddings) >= 0.9999


def test_pool_prompts_matches_the_scoring_pass(setup):
    model, tok, prompts = setup
    reference = score_sequences(model, prompt_only(prompts), with_logprobs=False).embeddings
    assert _min_cosine(pool_prompts(model, tok, prompts, batch_size=2), reference) >= 0.9999


def test_bfloat16_model_gives_float32_embeddings_close_to_float32(setup):
    model32, tok, prompts = setup
    model16, _ = load_backbone("tiny-random", dtype="bfloat16")
    a = pool_prompts(model32, tok, prompts)
    b = pool_prompts(model16.eval(), tok, prompts)
    assert b.dtype == torch.float32
    assert _min_cosine(a, b) > 0.99
    out = generate_and_score(model16, tok, prompts, temperature=0.0, max_new_tokens=4)
    assert out.embeddings.dtype == torch.float32 and torch.isfinite(out.logprobs).all()


def test_sample_tokens_greedy_and_nucleus():
    logits = torch.tensor([[0.0, 3.0, 1.0, -2.0], [5.0, 0.0, 0.0, 0.0]])
    assert sample_tokens(logits, 0.0).tolist() == [1, 0]
    torch.manual_seed(0)
    draws = torch.stack([sample_tokens(logits, 1.0, top_p=0.8) for _ in range(200)])  # (200, 2)
    # row 0: p = [.04, .84, .11, .01] -> the top token alone reaches 0.8; row 1 likewise
    assert set(draws[:, 0].tolist()) == {1} and set(draws[:, 1].tolist()) == {0}
    wide = torch.stack([sample_tokens(logits, 1.0, top_p=0.95) for _ in range(400)])
    assert set(wide[:, 0].tolist()) == {1, 2}  # .84 < .95: the second token joins, .84 + .11 >= .95
    assert set(wide[:, 1].tolist()) == {0}


def test_preallocated_layer_grows_and_selects_like_the_dynamic_one():
    torch.manual_seed(0)
    ours, plain = PreallocatedLayer(capacity=3), DynamicLayer()
    for width in (2, 1, 4):  # 7 positions: past the capacity of 3
        k, v = torch.randn(2, 3, width, 4), torch.randn(2, 3, width, 4)
        a, b = ours.update(k, v), plain.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for layer in (ours, plain):
        layer.batch_repeat_interleave(3)
        layer.batch_select_indices(torch.tensor([0, 4, 5]))
    assert ours.get_seq_length() == plain.get_seq_length() == 7
    assert torch.equal(ours.keys, plain.keys) and torch.equal(ours.values, plain.values)


def test_per_prompt_counts_and_temperatures_in_one_call(setup):
    """Prompt 0 greedy once, prompt 1 sampled 3 times, prompt 2 sampled twice: one decoding loop;
    the greedy row equals a greedy call of its own and everything scores like a forward pass."""
    model, tok, prompts = setup
    torch.manual_seed(0)
    mixed = generate_and_score(model, tok, prompts, num_samples=[1, 3, 2], temperature=[0.0, 1.0, 0.7],
                    max_new_tokens=6, batch_size=4)
    assert len(mixed.seqs) == 6
    alone = generate_and_score(model, tok, build_prompts(tok, TEXTS[:1]), temperature=0.0, max_new_tokens=6)
    width = alone.seqs.response_ids.shape[1]
    assert torch.equal(mixed.seqs.response_ids[0, :width], alone.seqs.response_ids[0])
    assert torch.equal(mixed.seqs.input_ids[1:4, : mixed.seqs.prompt_len], prompts.input_ids[1].expand(3, -1))
    reference = score_sequences(model, mixed.seqs)
    assert _min_cosine(mixed.embeddings, reference.embeddings) >= 0.9999
    # log-probs at each row's sampling temperature: rows 0-3 at 1 (greedy rows too), 4-5 at 0.7
    torch.testing.assert_close(mixed.logprobs[:4], reference.logprobs[:4], atol=1e-4, rtol=0)
    at_07 = score_sequences(model, mixed.seqs, temperature=0.7).logprobs
    torch.testing.assert_close(mixed.logprobs[4:], at_07[4:], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="num_samples has 2 entries for 3 prompts"):
        generate_and_score(model, tok, prompts, num_samples=[1, 2], max_new_tokens=2)


def test_sample_tokens_per_row_temperature():
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 3.0, 1.0]])
    torch.manual_seed(0)
    draws = torch.stack([sample_tokens(logits, torch.tensor([0.0, 5.0])) for _ in range(100)])
    assert set(draws[:, 0].tolist()) == {1}  # greedy row
    assert len(set(draws[:, 1].tolist())) == 3  # hot row


def test_strip_left_padding_keeps_what_each_row_needs(setup):
    model, tok, prompts = setup
    out = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=3)
    short = out.seqs.select(slice(0, 1)).strip_left_padding()  # "hi": the shortest prompt
    assert short.attention_mask[0, 0] == 1 and short.prompt_len < out.seqs.prompt_len
    assert torch.equal(short.response_ids, out.seqs.response_ids[:1])
    emb = score_sequences(model, short, with_logprobs=False).embeddings
    assert _min_cosine(emb, out.embeddings[:1]) >= 0.9999


def test_every_end_token_of_the_generation_config_ends_a_rollout(setup):
    """Qwen2.5 and Llama-3 list several end ids in generation_config.eos_token_id: a rollout
    that says any of them has ended (not truncated), in the engine as in HF generate."""
    import copy

    model, tok, prompts = setup
    plain = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=6)
    assert bool(plain.seqs.truncated.all())  # the tiny model never says its EOS
    other_end = int(plain.seqs.response_ids[0, 2])  # what row 0 says third
    listed = copy.deepcopy(model)
    listed.generation_config.eos_token_id = [tok.eos_token_id, other_end]
    ours = generate_and_score(listed, tok, prompts, temperature=0.0, max_new_tokens=6)
    simple = generate_sequences(listed, tok, prompts, num_samples=1, temperature=0.0, max_new_tokens=6)
    assert not bool(ours.seqs.truncated[0]) and int(ours.seqs.response_mask[0].sum()) <= 3
    assert torch.equal(ours.seqs.truncated, simple.truncated)
    assert torch.equal(ours.seqs.response_mask, simple.response_mask)
    hit = (plain.seqs.response_ids == other_end).any(dim=1)  # rows that say it somewhere
    assert torch.equal(~ours.seqs.truncated, hit)


def test_logprobs_are_taken_at_the_sampling_temperature(setup):
    """Rollouts sampled at T get log softmax(logits / T) as their old log-probs (as verl), in
    the engine and in the HF path's scoring pass; greedy rows are scored at T = 1."""
    from grace.rollout.hf_path import response_logprobs

    model, tok, prompts = setup
    torch.manual_seed(0)
    ours = generate_and_score(model, tok, prompts, num_samples=2, temperature=0.7, max_new_tokens=5)
    at_t = score_sequences(model, ours.seqs, temperature=0.7).logprobs
    at_1 = score_sequences(model, ours.seqs).logprobs
    torch.testing.assert_close(ours.logprobs, at_t, atol=1e-4, rtol=0)
    assert (ours.logprobs - at_1).abs().max() > 1e-2  # not the temperature-1 ones
    with torch.no_grad():  # the update's log-probs at the same temperature: ratio 1 before it
        torch.testing.assert_close(response_logprobs(model, ours.seqs, 0.7), at_t, atol=1e-4, rtol=0)
    greedy = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=5)
    torch.testing.assert_close(greedy.logprobs, score_sequences(model, greedy.seqs).logprobs,
                               atol=1e-4, rtol=0)


def test_hf_path_ignores_the_models_generation_settings(setup):
    """A repetition penalty, n-gram bans or suppressed tokens in the model's generation_config
    would make HF generate sample from another distribution than the one trained: the simple
    engine sets them aside (and leaves the model's config as it was), as the fast engine does."""
    import copy

    model, tok, prompts = setup
    ours = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=6)
    tuned = copy.deepcopy(model)
    tuned.generation_config.repetition_penalty = 5.0
    tuned.generation_config.no_repeat_ngram_size = 1
    tuned.generation_config.suppress_tokens = [int(ours.seqs.response_ids[0, 0])]
    simple = generate_sequences(tuned, tok, prompts, num_samples=1, temperature=0.0, max_new_tokens=6)
    assert torch.equal(simple.input_ids, ours.seqs.input_ids)
    assert tuned.generation_config.repetition_penalty == 5.0  # restored


def test_hf_path_sets_aside_the_generation_settings_of_a_lora_model_too(setup):
    import copy

    from peft import LoraConfig, get_peft_model

    model, tok, prompts = setup
    ours = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=6)
    tuned = copy.deepcopy(model)
    tuned.generation_config.repetition_penalty = 5.0
    lora = get_peft_model(tuned, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=True))
    simple = generate_sequences(lora, tok, prompts, num_samples=1, temperature=0.0, max_new_tokens=6)
    assert torch.equal(simple.input_ids, ours.seqs.input_ids)  # LoRA starts as the identity
    assert lora.get_base_model().generation_config.repetition_penalty == 5.0
