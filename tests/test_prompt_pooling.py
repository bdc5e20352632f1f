"""Pooling against hand-computed numbers; prompts and pool_start with the real tokenizer."""

import copy
import math
import types
import warnings

import numpy as np
import pytest
import torch

from grace.errors import GraceInputError
from grace.models.pooling import masked_mean, pool, pooling_mask, position_ids_from_mask, read_pooling
from grace.models.prompt import SYSTEM_PROMPT, build_prompts, render_prompt

# SmolLM2's template, written out by hand.
SYSTEM_TURN = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
ASSISTANT_HEADER = "<|im_start|>assistant\n"

# ---------------------------------------------------------------- pooling

# (N=2, T=4, D=2). Row 0 pools positions 1, 2; row 1 pools positions 0, 2.
HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]],
        [[2.0, 0.0], [0.0, 2.0], [4.0, 4.0], [10.0, -10.0]],
    ]
)
MASK = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0]])
# row 0: ([3, 4] + [5, 6]) / 2 = [4, 5];  row 1: ([2, 0] + [4, 4]) / 2 = [3, 2]
MEAN = torch.tensor([[4.0, 5.0], [3.0, 2.0]])


def test_masked_mean_hand_computed():
    assert torch.allclose(masked_mean(HIDDEN, MASK, dim=1), MEAN)  # over T; D broadcasts
    assert torch.allclose(masked_mean(HIDDEN, MASK.bool(), dim=1), MEAN)
    assert masked_mean(HIDDEN, MASK).item() == pytest.approx(MEAN.mean().item())  # token-mean of all


def test_masked_mean_of_an_empty_mask_is_zero_not_nan():
    out = masked_mean(HIDDEN, torch.zeros(2, 4), dim=1)
    assert torch.equal(out, torch.zeros(2, 2))


def test_pool_is_the_l2_normalised_mean_in_float32():
    expected = torch.tensor(
        [[4 / math.sqrt(41), 5 / math.sqrt(41)], [3 / math.sqrt(13), 2 / math.sqrt(13)]]
    )
    out = pool(HIDDEN.to(torch.bfloat16), MASK)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6)


def test_pooling_mask_left_padding_pool_start_and_response_padding():
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    pool_start = torch.tensor([4, 2])
    expected = torch.tensor([[0, 0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1]])
    assert torch.equal(pooling_mask(attention, pool_start).long(), expected)


def test_position_ids_from_mask_left_padding():
    attention = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    assert torch.equal(position_ids_from_mask(attention), expected)


# ---------------------------------------------------------------- render_prompt


def test_render_prompt_chat_template(tiny):
    _, tokenizer = tiny
    prompt, offset = render_prompt(tokenizer, "hello world")
    assert SYSTEM_PROMPT in prompt and "hello world" in prompt
    assert prompt.endswith(ASSISTANT_HEADER)
    # pooling starts at the user text itself (the reference code's choice), not at its header
    assert prompt[:offset] == SYSTEM_TURN + "<|im_start|>user\n"
    assert prompt[offset:] == f"hello world<|im_end|>\n{ASSISTANT_HEADER}"
    empty, at = render_prompt(tokenizer, "")  # no text: from the end of the system message
    assert empty[:at] == SYSTEM_TURN


def test_render_prompt_plain_fallback_without_chat_template():
    prompt, offset = render_prompt(types.SimpleNamespace(chat_template=None), "hi", "Be brief.")
    assert prompt == "System: Be brief.\n\nUser: hi\n\nAssistant:"
    assert prompt[:offset] == "System: Be brief.\n\nUser:"  # " hi" is one token


def test_render_prompt_template_without_system_prefix_pools_from_the_text():
    class SystemLast:  # a template that renders the system message after the user turn
        chat_template = "stand-in"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            parts = {m["role"]: m["content"] for m in messages}
            user = f"<u>{parts['user']}</u>" if "user" in parts else ""
            return user + f"<s>{parts['system']}</s>" + ("<a>" if add_generation_prompt else "")

    prompt, offset = render_prompt(SystemLast(), "the text", "sys")
    assert prompt == "<u>the text</u><s>sys</s><a>"
    assert prompt[offset:].startswith("the text</u>")


# ---------------------------------------------------------------- build_prompts


def _real_tokens(batch, row):
    return batch.input_ids[row][batch.attention_mask[row].bool()]


def test_build_prompts_left_pads_and_pool_start_is_the_user_text(tiny):
    _, tokenizer = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is truncated: no warning
        batch = build_prompts(tokenizer, ["hi", "a much longer text than the first one"])
    assert batch.num_truncated == 0
    assert batch.input_ids.shape == batch.attention_mask.shape
    lengths = batch.attention_mask.sum(dim=1)
    assert lengths[1] == batch.input_ids.shape[1] and lengths[0] < lengths[1]  # row 0 is padded
    n_pad = int(batch.input_ids.shape[1] - lengths[0])
    assert batch.attention_mask[0, :n_pad].sum() == 0 and batch.attention_mask[0, n_pad:].all()
    assert (batch.input_ids[0, :n_pad] == tokenizer.pad_token_id).all()
    for row, text in enumerate(["hi", "a much longer text than the first one"]):
        start = int(batch.pool_start[row])
        pad = int(batch.input_ids.shape[1] - lengths[row])
        assert tokenizer.decode(batch.input_ids[row, pad:start]) == SYSTEM_TURN + "<|im_start|>user\n"
        assert tokenizer.decode(batch.input_ids[row, start:]) == (
            f"{text}<|im_end|>\n{ASSISTANT_HEADER}"
        )


def test_build_prompts_plain_fallback_pool_start(tiny):
    tokenizer = copy.deepcopy(tiny[1])
    tokenizer.chat_template = None
    batch = build_prompts(tokenizer, ["hi there"])
    start = int(batch.pool_start[0])
    assert tokenizer.decode(batch.input_ids[0, :start]) == f"System: {SYSTEM_PROMPT}\n\nUser:"
    assert tokenizer.decode(batch.input_ids[0, start:]) == " hi there\n\nAssistant:"


def test_build_prompts_truncates_long_texts_keeps_template_and_warns(tiny):
    _, tokenizer = tiny
    long = " ".join(f"word{i}" for i in range(300))
    with pytest.warns(UserWarning, match=r"2 of 3 texts were truncated.*max_prompt_tokens=80"):
        batch = build_prompts(tokenizer, ["short", long, long + " tail"], max_prompt_tokens=80)
    assert batch.num_truncated == 2
    assert (batch.attention_mask.sum(dim=1) <= 80).all()
    for row in (1, 2):
        text = tokenizer.decode(_real_tokens(batch, row))
        assert text.startswith(SYSTEM_TURN + "<|im_start|>user\nword0 word1 word2")
        assert text.endswith(f"<|im_end|>\n{ASSISTANT_HEADER}")
        assert "word299" not in text
        assert tokenizer.decode(batch.input_ids[row, batch.pool_start[row]]) == "word"  # the text


def test_build_prompts_template_longer_than_the_cap_is_an_input_error(tiny):
    with pytest.raises(GraceInputError, match="max_prompt_tokens=10"):
        build_prompts(tiny[1], ["some text here"], max_prompt_tokens=10)


# --------------------------------------------------------------------------- balanced pooling


def test_pool_sums_mean_and_balanced_hand_computed():
    from grace.models.pooling import pool_sums

    # row 0: prompt tokens (1, 0) x3 -> sum (3, 0); rationale token (0, 2) x1 -> sum (0, 2)
    # row 1: no rationale token
    prompt_sum = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    prompt_count = torch.tensor([3.0, 2.0])
    rationale_sum = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    rationale_count = torch.tensor([1.0, 0.0])
    mean = pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "mean")
    # (3, 2) / 4 -> direction (3, 2) / sqrt(13)
    torch.testing.assert_close(mean[0], torch.tensor([3.0, 2.0]) / math.sqrt(13))
    balanced = pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "balanced")
    # 0.5 * (1, 0) + 0.5 * (0, 2) = (0.5, 1) -> (1, 2) / sqrt(5)
    torch.testing.assert_close(balanced[0], torch.tensor([1.0, 2.0]) / math.sqrt(5))
    torch.testing.assert_close(balanced[1], torch.tensor([0.0, 1.0]))  # its prompt's mean alone
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "max")


def test_pool_split_matches_pool_sums_and_mean_is_pool():
    from grace.models.pooling import pool_split, pool_sums

    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 1, 1]])
    torch.testing.assert_close(pool_split(hidden, mask, 3, "mean"), pool(hidden, mask))
    m = mask.float()[..., None]
    expected = pool_sums((hidden[:, :3] * m[:, :3]).sum(1), m[:, :3, 0].sum(1),
                         (hidden[:, 3:] * m[:, 3:]).sum(1), m[:, 3:, 0].sum(1), "balanced")
    torch.testing.assert_close(pool_split(hidden, mask, 3, "balanced"), expected)


def test_balanced_pooling_is_the_same_in_the_engine_and_the_scoring_pass(tiny):
    from grace.rollout.engine import generate_and_score
    from grace.rollout.hf_path import score_sequences

    model, tok = tiny
    prompts = build_prompts(tok, ["hi", "a longer text so that the first prompt is left-padded"])
    ours = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=5, pooling="balanced")
    mean = generate_and_score(model, tok, prompts, temperature=0.0, max_new_tokens=5)
    assert torch.equal(ours.seqs.input_ids, mean.seqs.input_ids)  # pooling changes no token
    scored = score_sequences(model, ours.seqs, with_logprobs=False, pooling="balanced")
    cos = torch.nn.functional.cosine_similarity(ours.embeddings, scored.embeddings, dim=-1)
    assert cos.min().item() >= 0.9999
    assert torch.nn.functional.cosine_similarity(ours.embeddings, mean.embeddings, dim=-1).max() < 0.9999


def test_encoder_pooling_option_changes_the_embedding_and_the_cache_key(tiny, tmp_path):
    from grace.encoders.base import GraceEncoder
    from grace.encoders.encode import EncodeOptions

    model, tok = tiny
    encoder = GraceEncoder(model, tok, EncodeOptions(max_new_tokens=4), cache=tmp_path / "c.sqlite")
    texts = ["a cat sits on the mat", "stocks fell"]
    mean = encoder.encode(texts)
    balanced = encoder.with_options(pooling="balanced").encode(texts)
    assert not torch.allclose(torch.as_tensor(mean), torch.as_tensor(balanced))
    again = encoder.with_options(pooling="balanced").encode(texts)  # from the cache
    torch.testing.assert_close(torch.as_tensor(again), torch.as_tensor(balanced))
    assert EncodeOptions().generation_key() != EncodeOptions(pooling="balanced").generation_key()
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncodeOptions(pooling="max")


def test_a_second_pooling_reuses_the_cached_rationales(tiny, tmp_path, monkeypatch):
    """Reading a model with the other pooling generates nothing again: the cached rationales of
    the first pooling are scored once (the same vectors as a cold encode) and stored."""
    import grace.encoders.encode as encode
    from grace.encoders.base import GraceEncoder
    from grace.encoders.encode import EncodeOptions

    model, tok = tiny
    texts = ["a cat sits on the mat", "stocks fell sharply today"]
    cold = GraceEncoder(model, tok, EncodeOptions(max_new_tokens=4, pooling="balanced"),
                        cache=False).encode(texts)
    encoder = GraceEncoder(model, tok, EncodeOptions(max_new_tokens=4), cache=tmp_path / "c.sqlite")
    encoder.encode(texts)  # mean: generates and stores the rationales

    def no_generation(*args, **kwargs):
        raise AssertionError("generated although the rationales are cached under another pooling")

    monkeypatch.setattr(encode, "generate_and_score", no_generation)
    balanced = encoder.with_options(pooling="balanced")
    np.testing.assert_allclose(balanced.encode(texts), cold, atol=1e-5)
    stored = encoder.cache.get_entries(encoder.fingerprint, balanced.options.generation_key(), texts)
    assert all(e is not None and e[1] is not None for e in stored)  # stored under its own key
    assert EncodeOptions().generation_key() in EncodeOptions(pooling="balanced").rationale_keys()
    assert EncodeOptions(pooling="balanced").generation_key() in EncodeOptions().rationale_keys()
    assert EncodeOptions(pooling="balanced").generation_key() in EncodeOptions(pooling="text:0.7").rationale_keys()
    heavy = encoder.with_options(pooling="text:0.7")  # a text share: the same rationales again
    cold_heavy = GraceEncoder(model, tok, EncodeOptions(max_new_tokens=4, pooling="text:0.7"),
                              cache=False)
    monkeypatch.undo()
    cold_heavy = cold_heavy.encode(texts)
    monkeypatch.setattr(encode, "generate_and_score", no_generation)
    np.testing.assert_allclose(heavy.encode(texts), cold_heavy, atol=1e-5)
    assert not np.allclose(cold_heavy, cold, atol=1e-3)  # another weighing of the same tokens
    sampled = EncodeOptions(rationale="sampled", temperature=0.7)
    assert all(EncodeOptions(rationale="sampled", temperature=0.9).generation_key() != k
               for k in sampled.rationale_keys())  # another temperature: other rationales


def test_a_checkpoint_encodes_with_its_trained_pooling_and_system_prompt(tmp_path):
    import yaml

    from grace.encoders.base import GraceEncoder, trained_options
    from grace.models.backbones import load_backbone

    model, tok = load_backbone("tiny-random")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert trained_options(tmp_path) == {}
    (tmp_path / "grace_config.yaml").write_text(yaml.safe_dump({"rollout": {"pooling": "balanced"}}))
    assert GraceEncoder.from_pretrained(str(tmp_path), cache=False).options.pooling == "balanced"
    assert GraceEncoder.from_pretrained(str(tmp_path), cache=False, pooling="mean").options.pooling == "mean"
    # trained with the mean, to be read balanced (rollout.encode_pooling, as sup-nli ships)
    (tmp_path / "grace_config.yaml").write_text(yaml.safe_dump(
        {"rollout": {"pooling": "mean", "encode_pooling": "balanced"}}))
    assert trained_options(tmp_path) == {"pooling": "balanced"}
    (tmp_path / "grace_config.yaml").write_text(yaml.safe_dump(
        {"rollout": {"pooling": "mean", "encode_pooling": None}}))
    assert trained_options(tmp_path) == {"pooling": "mean"}
    assert read_pooling({"pooling": "mean", "encode_pooling": "balanced"}) == "balanced"
    # the system prompt it was trained under is the one it encodes with unless another is asked
    (tmp_path / "grace_config.yaml").write_text(yaml.safe_dump(
        {"rollout": {"pooling": "mean"}, "data": {"system_prompt": "Name the topic."}}))
    assert trained_options(tmp_path) == {"pooling": "mean", "system_prompt": "Name the topic."}
    assert GraceEncoder.from_pretrained(str(tmp_path), cache=False).options.system_prompt == "Name the topic."
    other = GraceEncoder.from_pretrained(str(tmp_path), cache=False, system_prompt="Other.")
    assert other.options.system_prompt == "Other."
    (tmp_path / "grace_config.yaml").write_text(yaml.safe_dump({"data": ["not", "a", "mapping"]}))
    assert trained_options(tmp_path) == {}
    assert read_pooling({}) is None
    assert read_pooling(["pooling"]) is None
    assert read_pooling(None) is None


def test_a_checkpoint_writes_rationales_as_long_as_it_was_trained_to(tmp_path):
    """rollout.max_new_tokens is the default rationale cap of a trained checkpoint (its rewards
    were computed at that length; the presets train at 32, the library's default is 64): the
    encoder, ``grace eval``/``explain``/``serve`` (None = the model's own) and the model card."""
    import yaml

    from grace.cli import build_parser
    from grace.encoders.base import GraceEncoder, trained_options
    from grace.models.backbones import load_backbone
    from grace.server import ServerConfig
    from grace.training.model_card import render_card

    model, tok = load_backbone("tiny-random")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert GraceEncoder.from_pretrained(str(tmp_path), cache=False).options.max_new_tokens == 64
    (tmp_path / "grace_config.yaml").write_text(yaml.safe_dump({"rollout": {"max_new_tokens": 32}}))
    assert trained_options(tmp_path) == {"max_new_tokens": 32}
    assert GraceEncoder.from_pretrained(str(tmp_path), cache=False).options.max_new_tokens == 32
    asked = GraceEncoder.from_pretrained(str(tmp_path), cache=False, max_new_tokens=8)
    assert asked.options.max_new_tokens == 8
    # None is "not given" (what grace eval/explain/serve pass without a flag): the model's own
    kept = GraceEncoder.from_pretrained(str(tmp_path), cache=False, max_new_tokens=None, pooling=None)
    assert (kept.options.max_new_tokens, kept.options.pooling) == (32, "mean")
    assert kept.with_options(cache=False, max_new_tokens=None).options.max_new_tokens == 32
    assert kept.with_options(cache=False, max_new_tokens=4).options.max_new_tokens == 4
    for broken in (0, True, "32", None):  # not a cap: left to the library's default
        (tmp_path / "grace_config.yaml").write_text(yaml.safe_dump({"rollout": {"max_new_tokens": broken}}))
        assert trained_options(tmp_path) == {}
    parser = build_parser()
    for command in (["eval", "--model", "m"], ["explain", "a", "b"], ["serve", "--model", "m"]):
        assert parser.parse_args(command).max_new_tokens is None
    assert parser.parse_args(["eval", "--model", "m", "--max-new-tokens", "16"]).max_new_tokens == 16
    assert ServerConfig().max_new_tokens is None
    with pytest.raises(GraceInputError, match="max_new_tokens must be >= 1"):
        ServerConfig(max_new_tokens=0)
    card = str(render_card(name="m", config={"rollout": {"max_new_tokens": 32}}))
    assert "up to 32 new tokens" in card
    card = str(render_card(name="m", config={"rollout": {"max_new_tokens": 32}},
                           encode_options={"max_new_tokens": 16}))
    assert "up to 16 new tokens" in card
