"""grace.rollout.decode_step: the static decoding step against the HF decoder it replaces."""

import copy
import logging

import pytest
import torch

from grace.models.prompt import build_prompts
from grace.rollout import engine
from grace.rollout.decode_step import StaticDecodeStep, unsupported
from grace.rollout.engine import _prefill, generate_and_score

TEXTS = ["hi", "a somewhat longer text, so that the first prompt is left-padded",
         "The stock market fell sharply on Monday."]


@pytest.fixture(scope="module")
def setup(tiny):
    model, tokenizer = tiny
    return model, tokenizer, build_prompts(tokenizer, TEXTS)


@torch.no_grad()
def test_each_step_gives_the_hidden_states_and_cache_of_the_hf_decoder(setup):
    """Three steps from the same prefill (left-padded rows, per-row positions, one row masked
    out of the new column): hidden states and every cached key/value agree to float32 rounding."""
    model, tok, prompts = setup
    assert unsupported(model) is None  # tiny-random: a Llama with grouped-query heads (4 q, 2 kv)
    assert model.config.num_attention_heads != model.config.num_key_value_heads
    ours, theirs = (_prefill(model, prompts, tok.pad_token_id, True, room=4) for _ in range(2))
    step, decoder = StaticDecodeStep(model), model.model
    attn, pos = ours.attn, ours.next_pos
    tokens = torch.tensor([[5, 17, 99], [7, 7, 7], [300, 2, 41]])
    for t in range(3):
        live = torch.tensor([True, t != 1, True])  # row 1 does not attend its own 2nd token
        attn = torch.cat([attn, live.long()[:, None]], dim=1)
        mine = step(tokens[t], pos, ours.cache, attn.bool())
        hf = decoder(input_ids=tokens[t][:, None], attention_mask=attn, position_ids=pos[:, None],
                     past_key_values=theirs.cache, use_cache=True).last_hidden_state[:, 0]
        torch.testing.assert_close(mine, hf, atol=1e-5, rtol=1e-5)
        pos = pos + 1
    for a, b in zip(ours.cache.layers, theirs.cache.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rollouts_are_the_same_through_either_step(setup, temperature):
    model, tok, prompts = setup
    runs = []
    for decode in ("static", "hf"):
        torch.manual_seed(0)
        runs.append(generate_and_score(model, tok, prompts, num_samples=3, temperature=temperature,
                                       max_new_tokens=8, decode=decode))
    static, hf = runs
    assert torch.equal(static.seqs.input_ids, hf.seqs.input_ids)
    torch.testing.assert_close(static.embeddings, hf.embeddings, atol=1e-5, rtol=0)
    torch.testing.assert_close(static.logprobs, hf.logprobs, atol=1e-5, rtol=0)


@torch.no_grad()
def test_weights_are_read_at_each_call(setup):
    """A policy updated in place decodes with its new weights (nothing is copied at build time)."""
    model, tok, prompts = setup
    changed = copy.deepcopy(model)
    step = StaticDecodeStep(changed)
    before = _prefill(changed, prompts, tok.pad_token_id, True, room=1)
    changed.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    after = _prefill(changed, prompts, tok.pad_token_id, True, room=1)
    attn = torch.cat([after.attn, torch.ones(3, 1, dtype=torch.long)], dim=1)
    mine = step(torch.tensor([5, 6, 7]), after.next_pos, after.cache, attn.bool())
    hf = changed.model(input_ids=torch.tensor([[5], [6], [7]]), attention_mask=attn,
                       position_ids=after.next_pos[:, None], past_key_values=before.cache,
                       use_cache=True).last_hidden_state[:, 0]
    assert not torch.allclose(mine, hf, atol=1e-3)  # `before` holds the old weights' cache
    torch.testing.assert_close(
        mine, changed.model(input_ids=torch.tensor([[5], [6], [7]]), attention_mask=attn,
                            position_ids=after.next_pos[:, None],
                            past_key_values=_prefill(changed, prompts, tok.pad_token_id, True, 1).cache,
                            use_cache=True).last_hidden_state[:, 0], atol=1e-5, rtol=1e-5)


def test_a_lora_model_falls_back_to_the_hf_decoder_and_says_so_once(setup, caplog):
    from peft import LoraConfig, get_peft_model

    model, tok, prompts = setup
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"]))
    assert unsupported(lora) == "a wrapped model (e.g. peft)"
    with pytest.raises(ValueError, match="static decode step cannot run this model: a wrapped model"):
        generate_and_score(lora, tok, prompts, temperature=0.0, max_new_tokens=2, decode="static")
    engine._FALLBACKS_SAID.discard("a wrapped model (e.g. peft)")
    with caplog.at_level(logging.INFO, logger="grace.rollout.engine"):
        for _ in range(2):
            out = generate_and_score(lora, tok, prompts, temperature=0.0, max_new_tokens=2)
    said = [r for r in caplog.records if "through the HF decoder" in r.getMessage()]
    assert len(said) == 1 and "peft" in said[0].getMessage()
    plain = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=2)
    assert torch.equal(out.seqs.input_ids, plain.seqs.input_ids)  # LoRA starts as the identity
    with pytest.raises(ValueError, match="decode must be one of"):
        generate_and_score(model, tok, prompts, max_new_tokens=2, decode="fast")


def test_rollout_dtype_auto_is_bf16_only_for_a_float32_policy_on_a_cpu_with_bf16_units(monkeypatch, tmp_path):
    from grace.grpo.trainer import rollout_dtype
    from grace.models.backbones import cpu_has_bf16_units

    f32, bf16 = torch.float32, torch.bfloat16
    assert rollout_dtype("auto", f32, on_cpu=True, bf16_units=True) is bf16
    assert rollout_dtype("auto", f32, on_cpu=True, bf16_units=False) is None  # emulated: slower
    assert rollout_dtype("auto", f32, on_cpu=False, bf16_units=True) is None  # a GPU: the policy
    assert rollout_dtype("auto", bf16, on_cpu=True, bf16_units=True) is None  # already bf16
    assert rollout_dtype("policy", f32, on_cpu=True, bf16_units=True) is None
    assert rollout_dtype("float32", bf16, on_cpu=True, bf16_units=False) is f32
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 fma\n")
    monkeypatch.delenv("GRACE_CPU_BF16")
    assert cpu_has_bf16_units(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f fma\n")
    assert cpu_has_bf16_units(info) is False
    assert cpu_has_bf16_units(tmp_path / "missing") is False
    monkeypatch.setenv("GRACE_CPU_BF16", "1")
    assert cpu_has_bf16_units(info) is True  # the override wins


def test_sample_and_score_draws_as_sample_tokens_and_scores_as_chosen_logprobs():
    from grace.rollout.engine import chosen_logprobs, sample_and_score, sample_tokens

    logits = torch.randn(6, 50) * 3
    temps = torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 0.0])
    for top_p in (1.0, 0.8):
        torch.manual_seed(1)
        expected = sample_tokens(logits, temps, top_p)
        torch.manual_seed(1)
        tokens, lp = sample_and_score(logits, temps, top_p)
        assert torch.equal(tokens, expected)
        torch.testing.assert_close(lp, chosen_logprobs(logits, tokens, temps), atol=1e-6, rtol=0)
    greedy, none = sample_and_score(logits, 0.0, with_logprobs=False)
    assert torch.equal(greedy, logits.argmax(dim=-1)) and none is None
