"""grace.rollout.decode_step: the static decoding step against the HF decoder it replaces."""

import copy
import logging

import pytest
import torch

from grace.models.prompt import build_prompts
from grace.rollout import engine
from grace.rollout.decode_step import StaticDecodeStep, unsupported
from grace.rollout.engine import generate_and_score, prefill
from grace.rollout.kv_cache import cache_kwargs

TEXTS = ["hi", "a somewhat longer text, so that the first prompt is left-padded",
         "The stock market fell sharply on Monday."]


@pytest.fixture(scope="module")
def setup():
    """A fresh tiny model: the session's shared one may carry hooks other tests added (which the
    static step refuses, rightly)."""
    from grace.models.backbones import load_backbone

    model, tokenizer = load_backbone("tiny-random")
    model.eval()
    return model, tokenizer, build_prompts(tokenizer, TEXTS)


def _randomised(model):
    """A copy whose norm weights are not all 1 (HF initialises them to 1) and whose biases, if
    any, are not 0: a step that dropped either would still pass otherwise."""
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen) if "norm" in name
                        else 0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _tiny_qwen2(vocab: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         attn_implementation="sdpa")
    return Qwen2ForCausalLM(config).eval()


@torch.no_grad()
def _same_as_hf(model, tok, texts, weights_first=None):
    """Three steps from the same prefill (per-row positions, row 1 masked out of its 2nd new
    column when there are several rows): hidden states and every cached key/value are equal to
    float32 rounding (the step's matmuls run transposed, which may sum in another order). With
    ``weights_first`` None, each of the two GEMM orientations in turn."""
    if weights_first is None:
        for first in (True, False):
            _same_as_hf(model, tok, texts, first)
        return
    prompts = build_prompts(tok, texts)
    ours, theirs = (prefill(model, prompts, tok.pad_token_id, True, room=4) for _ in range(2))
    step = StaticDecodeStep(model, weights_first=weights_first)
    attn, pos = ours.attn, ours.next_pos
    n = len(texts)
    tokens = torch.tensor([[5, 17, 99], [7, 7, 7], [300, 2, 41]])[:, :n]
    for t in range(3):
        live = torch.tensor([True, t != 1, True])[:n] if n > 1 else torch.ones(1, dtype=torch.bool)
        attn = torch.cat([attn, live.long()[:, None]], dim=1)
        mine = step(tokens[t], pos, ours.cache, attn.bool())
        hf = model.model(input_ids=tokens[t][:, None], attention_mask=attn, position_ids=pos[:, None],
                         **cache_kwargs(model.model, theirs.cache), use_cache=True).last_hidden_state[:, 0]
        torch.testing.assert_close(mine, hf, atol=2e-6, rtol=2e-6)
        pos = pos + 1
    for a, b in zip(ours.cache.layers, theirs.cache.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=2e-6, rtol=2e-6)
        torch.testing.assert_close(a.values, b.values, atol=2e-6, rtol=2e-6)


def test_each_step_is_the_hf_decoders_step_to_float32_rounding(setup):
    model, tok, prompts = setup
    assert unsupported(model) is None  # tiny-random: a Llama with grouped-query heads (4 q, 2 kv)
    assert model.config.num_attention_heads != model.config.num_key_value_heads
    _same_as_hf(_randomised(model), tok, TEXTS)  # left-padded rows: a boolean mask
    _same_as_hf(_randomised(model), tok, TEXTS[:1])  # nothing masked: no mask, as HF


def test_qwen2_with_its_attention_biases_is_the_hf_step_too(setup):
    _, tok, _ = setup
    qwen = _randomised(_tiny_qwen2(len(tok)))
    assert unsupported(qwen) is None and qwen.model.layers[0].self_attn.q_proj.bias is not None
    _same_as_hf(qwen, tok, TEXTS)
    _same_as_hf(qwen, tok, TEXTS[1:2])


def test_models_the_step_would_compute_differently_are_refused(setup):
    from transformers import MistralConfig, MistralForCausalLM

    model, tok, _ = setup
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"
    assert "attention implementation 'eager'" in unsupported(eager)
    hooked = copy.deepcopy(model)
    hooked.model.layers[1].mlp.register_forward_hook(lambda *a: None)
    assert "hooks" in unsupported(hooked)
    patched = copy.deepcopy(model)
    patched.model.norm.forward = lambda x: x
    assert "patched forward" in unsupported(patched)
    kernelized = copy.deepcopy(model)  # what `kernels` does to a function-module an attention holds
    kernelized.model.layers[0].self_attn.__dict__["rotary_fn"] = rotary = torch.nn.Identity()
    rotary.forward = lambda *a: a
    rotary.__dict__["_kernel_repo"] = "kernels-community/rotary"
    assert "hub kernels" in unsupported(kernelized)
    swapped = copy.deepcopy(model)
    swapped.model.layers[0].mlp.act_fn = torch.nn.GELU()
    assert "activation GELU" in unsupported(swapped)
    mistral = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=4,
                                               num_key_value_heads=2, sliding_window=16,
                                               attn_implementation="sdpa"))
    assert unsupported(mistral) == "sliding-window attention"


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
    before = prefill(changed, prompts, tok.pad_token_id, True, room=1)
    changed.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    after = prefill(changed, prompts, tok.pad_token_id, True, room=1)
    attn = torch.cat([after.attn, torch.ones(3, 1, dtype=torch.long)], dim=1)
    mine = step(torch.tensor([5, 6, 7]), after.next_pos, after.cache, attn.bool())
    hf = changed.model(input_ids=torch.tensor([[5], [6], [7]]), attention_mask=attn,
                       position_ids=after.next_pos[:, None], **cache_kwargs(changed.model, before.cache),
                       use_cache=True).last_hidden_state[:, 0]
    assert not torch.allclose(mine, hf, atol=1e-3)  # `before` holds the old weights' cache
    torch.testing.assert_close(
        mine, changed.model(input_ids=torch.tensor([[5], [6], [7]]), attention_mask=attn,
                            position_ids=after.next_pos[:, None],
                            **cache_kwargs(changed.model, prefill(changed, prompts, tok.pad_token_id, True, 1).cache),
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
    from grace.rollout.sampling import chosen_logprobs, sample_and_score, sample_tokens

    logits = torch.randn(6, 49152, generator=torch.Generator().manual_seed(0)) * 3
    temps = torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 1e-8])  # a greedy row, a clamped temperature
    for top_p, t in ((1.0, temps[:5]), (1.0, temps), (0.8, temps)):
        for seed in range(20):  # 20 x 5 draws over 49k tokens: the same token every time
            torch.manual_seed(seed)
            expected = sample_tokens(logits[: len(t)], t, top_p)
            torch.manual_seed(seed)
            tokens, lp = sample_and_score(logits[: len(t)], t, top_p)
            assert torch.equal(tokens, expected)
            assert torch.equal(lp, chosen_logprobs(logits[: len(t)], tokens, t))
    greedy, none = sample_and_score(logits, 0.0, with_logprobs=False)
    assert torch.equal(greedy, logits.argmax(dim=-1)) and none is None


def test_mixed_precision_auto_is_bf16_only_for_float32_weights_on_a_bf16_cpu(monkeypatch):
    from grace.models.backbones import resolve_mixed_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("GRACE_CPU_BF16", "1")
    assert resolve_mixed_precision("auto", "float32") == "bf16"
    assert resolve_mixed_precision("auto", "bfloat16") == "no"  # already bf16 weights
    assert resolve_mixed_precision("no", "float32") == "no"  # asked: kept
    monkeypatch.setenv("GRACE_CPU_BF16", "0")
    assert resolve_mixed_precision("auto", "float32") == "no"
    assert resolve_mixed_precision("bf16", "float32") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("GRACE_CPU_BF16", "1")
    assert resolve_mixed_precision("auto", "float32") == "no"  # a GPU: the user chooses


def test_head_logits_are_the_heads_and_row_major(setup):
    from grace.rollout.decode_step import head_logits

    model, _, _ = setup
    hidden = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = head_logits(model.lm_head, hidden)
        torch.testing.assert_close(logits, model.lm_head(hidden), atol=2e-6, rtol=2e-6)
        assert logits.is_contiguous() and logits.shape == (5, model.config.vocab_size)
        biased = torch.nn.Linear(model.config.hidden_size, 10, bias=True)
        torch.testing.assert_close(head_logits(biased, hidden), biased(hidden), atol=2e-6, rtol=2e-6)
        other = torch.nn.Sequential(model.lm_head)  # not a plain Linear: called as it is
        assert torch.equal(head_logits(other, hidden), other(hidden))


def test_grouped_attention_is_sdpa_with_each_kv_head_repeated():
    """Query head h reads key/value head h // (H / KV), as repeat_kv pairs them; masked columns
    get no weight; a row that attends to one column returns that column's value."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from grace.rollout.decode_step import grouped_attention

    g = torch.Generator().manual_seed(3)
    n, heads, kv, length, hd = 3, 6, 2, 5, 4
    q, k, v = (torch.randn(n, h, L, hd, generator=g) for h, L in ((heads, 1), (kv, length), (kv, length)))
    mask = torch.ones(n, 1, 1, length, dtype=torch.bool)
    mask[1, ..., :2] = False
    mask[2, ..., :4] = False  # row 2 attends to the last column only
    module = type("Attention", (), {"num_key_value_groups": heads // kv, "is_causal": True, "training": False})()
    for m in (mask, None):
        ours, _ = grouped_attention(module, q, k, v, m, scaling=0.5)
        theirs, _ = sdpa_attention_forward(module, q, k, v, m, dropout=0.0, scaling=0.5)
        assert ours.shape == theirs.shape == (n, 1, heads, hd)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    ours, _ = grouped_attention(module, q, k, v, mask, scaling=0.5)
    for h in range(heads):
        torch.testing.assert_close(ours[2, 0, h], v[2, h // (heads // kv), -1])


def test_a_failed_compilation_says_so_once_and_decodes_uncompiled(setup, monkeypatch, caplog):
    """Where torch.compile cannot build the step (here: it raises, as without a C++ compiler),
    the compiled mode logs it once and gives the uncompiled step's rollouts."""
    from grace.rollout import decode_step

    model, tok, prompts = setup
    calls = []

    def broken(fn, **kwargs):
        def run(*args):
            calls.append(1)
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(decode_step, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken)
    runs = []
    with caplog.at_level(logging.WARNING, logger="grace.rollout.decode_step"):
        for decode in ("compiled", "static", "compiled"):
            runs.append(generate_and_score(model, tok, prompts, num_samples=2, temperature=0.0,
                                           max_new_tokens=4, decode=decode))
    said = [r.getMessage() for r in caplog.records if "torch.compile cannot build" in r.getMessage()]
    assert said == ["torch.compile cannot build the decode step here (RuntimeError: no C++ compiler "
                    "found); decoding uncompiled"]
    assert len(calls) == 1  # tried once per process, not at every step
    for run in (runs[0], runs[2]):
        assert torch.equal(run.seqs.input_ids, runs[1].seqs.input_ids)
        assert torch.equal(run.embeddings, runs[1].embeddings)


@pytest.mark.slow
def test_the_compiled_step_gives_the_static_steps_rollouts(setup, monkeypatch):
    """The real torch.compile (inductor): the same greedy tokens, embeddings and log-probs to
    float32 rounding. Builds the graph once (about 20 s for the tiny model on 2 cores)."""
    from grace.rollout import decode_step

    model, tok, prompts = setup
    monkeypatch.setattr(decode_step, "_COMPILED", {})
    runs = {}
    for decode in ("static", "compiled"):
        torch.manual_seed(0)
        runs[decode] = generate_and_score(model, tok, prompts, num_samples=3, temperature=0.0,
                                          max_new_tokens=8, decode=decode)
    assert "failed" not in decode_step._COMPILED, decode_step._COMPILED.get("failed")
    static, compiled = runs["static"], runs["compiled"]
    assert torch.equal(static.seqs.input_ids, compiled.seqs.input_ids)
    torch.testing.assert_close(compiled.embeddings, static.embeddings, atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled.logprobs, static.logprobs, atol=1e-5, rtol=0)


@torch.no_grad()
def test_bf16_attention_over_the_whole_buffer_is_attention_over_the_filled_columns(setup, monkeypatch):
    """In bf16 on the CPU the step attends over the whole preallocated buffers (unfilled
    columns masked): the same states as over the filled columns only, and the HF step's to
    bf16 rounding."""
    from grace.rollout import decode_step

    model, tok, prompts = setup
    model = _randomised(model).to(torch.bfloat16)
    bf16_buffers = torch.zeros(2, 1, 30, 4, dtype=torch.bfloat16)  # 30 columns
    assert decode_step.whole_buffer_attention(bf16_buffers, 20)
    assert not decode_step.whole_buffer_attention(bf16_buffers, 19)  # more than 1.5x the filled ones
    assert not decode_step.whole_buffer_attention(bf16_buffers.float(), 29)
    runs = {}
    for whole in (True, False, "hf"):
        monkeypatch.setattr(decode_step, "whole_buffer_attention", lambda keys, width, w=whole: w is True)
        pre = prefill(model, prompts, tok.pad_token_id, True, room=6)
        assert pre.cache.layers[0]._k.shape[2] > pre.cache.layers[0].length + 3  # room left unfilled
        step = StaticDecodeStep(model)
        attn, pos, states = pre.attn, pre.next_pos, []
        for t, tokens in enumerate(torch.tensor([[5, 7, 300], [17, 7, 2], [99, 7, 41]])):
            attn = torch.cat([attn, torch.tensor([1, int(t != 1), 1])[:, None]], dim=1)
            if whole == "hf":
                states.append(model.model(input_ids=tokens[:, None], attention_mask=attn, position_ids=pos[:, None],
                                          **cache_kwargs(model.model, pre.cache), use_cache=True).last_hidden_state[:, 0])
            else:
                states.append(step(tokens, pos, pre.cache, attn.bool()))
            pos = pos + 1
        runs[whole] = torch.stack(states).float()
    torch.testing.assert_close(runs[True], runs[False], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(runs[True], runs["hf"], atol=5e-2, rtol=5e-2)
    assert runs[True].abs().max() > 0.1  # states of a real size, so the tolerances mean something


def test_both_projection_orientations_are_the_linear_layer_and_one_is_chosen_per_bucket(monkeypatch):
    from grace.rollout import orientation

    monkeypatch.setenv("GRACE_DECODE_ORIENTATION", "auto")  # timed (the suite fixes it otherwise)

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(5, 16, generator=gen)
    for bias in (False, True):
        linear = torch.nn.Linear(16, 12, bias=bias)
        for first in (True, False):
            out = orientation.linear_t(h, linear, first)
            assert out.shape == (12, 5)
            torch.testing.assert_close(out, linear(h).t().detach(), atol=1e-6, rtol=1e-6)
    assert [orientation.row_bucket(r) for r in (1, 2, 3, 8, 9, 32, 33)] == [1, 2, 4, 8, 16, 32, 64]
    from grace.models.backbones import load_backbone

    model, _ = load_backbone("tiny-random")
    orientation._CHOSEN.clear()
    rng = torch.random.get_rng_state()
    choice = orientation.weights_first(model.model.layers, 30)
    assert torch.equal(torch.random.get_rng_state(), rng)  # timing draws nothing from sampling's generator
    assert isinstance(choice, bool) and list(orientation._CHOSEN) == [("cpu", torch.float32, 32)]
    assert orientation.orientation_record() == {
        "setting": "auto", "timed": {"cpu float32 32": "weights" if choice else "rows"}}
    orientation._CHOSEN[("cpu", torch.float32, 32)] = not choice  # remembered: not timed again
    assert orientation.weights_first(model.model.layers, 17) is (not choice)
    orientation._CHOSEN.clear()


def test_the_orientation_variable_fixes_the_choice_untimed_and_names_a_bad_value(monkeypatch):
    from grace.models.backbones import load_backbone
    from grace.rollout import orientation

    model, _ = load_backbone("tiny-random")
    orientation._CHOSEN.clear()

    def no_timing():
        raise AssertionError("timed although GRACE_DECODE_ORIENTATION fixes the choice")

    monkeypatch.setattr(orientation.time, "perf_counter", no_timing)
    for value, expected in (("weights", True), ("rows", False), (" Rows ", False)):
        monkeypatch.setenv("GRACE_DECODE_ORIENTATION", value)
        assert orientation.weights_first(model.model.layers, 30) is expected
    assert orientation._CHOSEN == {}  # a fixed choice is not remembered as a timed one
    monkeypatch.setenv("GRACE_DECODE_ORIENTATION", "columns")
    with pytest.raises(ValueError, match="GRACE_DECODE_ORIENTATION='columns': choose weights, rows, auto"):
        orientation.weights_first(model.model.layers, 30)
