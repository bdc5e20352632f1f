"""sentence-transformers' encode options on grace's encoders: ``normalize_embeddings=False`` (the
raw mean-pooled vectors; the rationale cache stores them and normalises on read),
``truncate_dim``, and ``prompts`` / ``prompt_name`` (GRACE: named system prompts; LLM2Vec-Gen:
its two instructions). The defaults give the vectors they gave before."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import grace.encoders.encode
from grace import GraceEncoder
from grace.encoders.encode import EncodeOptions
from grace.models.pooling import pool_sums
from grace.models.prompt import build_prompts
from grace.rollout.engine import generate_and_score, pool_prompts
from grace.rollout.generation_cache import RationaleCache
from grace.rollout.hf_path import prompt_only, score_sequences

TEXTS = ["The cat sat on the mat.", "Stocks fell on Monday.", "A short one"]
MODES = [dict(rationale="none"), dict(rationale="greedy"), dict(rationale="echo"),
         dict(rationale="greedy", pooling="balanced")]


def _encoder(tiny, cache=False, **options):
    model, tokenizer = tiny
    return GraceEncoder(model, tokenizer, EncodeOptions(max_new_tokens=4, batch_size=4, **options),
                        cache=cache)


def _no_model_call(*args, **kwargs):
    raise AssertionError("the model ran although every vector is cached")


# --------------------------------------------------------------------------- pure pooling


def _sums():
    """(prompt_sum, prompt_count, rationale_sum, rationale_count) of two rows by hand: text means
    (1, 2) and (1, 0), rationale mean (2, 0) in row 1 and no rationale in row 2."""
    return (torch.tensor([[2.0, 4.0], [3.0, 0.0]]), torch.tensor([2.0, 3.0]),
            torch.tensor([[4.0, 0.0], [0.0, 0.0]]), torch.tensor([2.0, 0.0]))


def test_pool_sums_unnormalised_by_hand():
    prompt_sum, prompt_count, rationale_sum, rationale_count = _sums()
    mean = pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "mean", normalize=False)
    torch.testing.assert_close(mean, torch.tensor([[1.5, 1.0], [1.0, 0.0]]))  # (2+4)/4, 4/4; 3/3
    balanced = pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "balanced",
                         normalize=False)  # text (1, 2) and rationale (2, 0) half each; row 2: text
    torch.testing.assert_close(balanced, torch.tensor([[1.5, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count),
                               F.normalize(mean, dim=-1))


def test_text_share_pooling_by_hand_and_its_bad_forms_named():
    """text:W: the text's mean weighs W and the rationale's 1 - W; text:0.5 is balanced."""
    from grace.models.pooling import text_share

    prompt_sum, prompt_count, rationale_sum, rationale_count = _sums()
    heavy = pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "text:0.75", normalize=False)
    # 0.75 (1, 2) + 0.25 (2, 0) = (1.25, 1.5); row 2 has no rationale: its text's mean (1, 0)
    torch.testing.assert_close(heavy, torch.tensor([[1.25, 1.5], [1.0, 0.0]]))
    torch.testing.assert_close(pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "text:0.5"),
                               pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, "balanced"))
    assert (text_share("mean"), text_share("balanced"), text_share("text:0.7")) == (None, 0.5, 0.7)
    for bad in ("max", "text:1", "text:0", "text:-0.2", "text:abc", "text:", "0.7"):
        with pytest.raises(ValueError, match=r"mean', 'balanced'\) or text:W with 0 < W < 1"):
            pool_sums(prompt_sum, prompt_count, rationale_sum, rationale_count, bad)


# --------------------------------------------------------------------------- defaults unchanged


def test_default_vectors_are_the_engines_unit_vectors(tiny):
    """What encode returned before (the engine's own L2-normalised pooling) to 1e-6."""
    model, tokenizer = tiny
    opts = EncodeOptions(max_new_tokens=4)
    prompts = build_prompts(tokenizer, TEXTS, opts.system_prompt, opts.max_prompt_tokens)
    none = pool_prompts(model, tokenizer, prompts)
    greedy = generate_and_score(model, tokenizer, prompts, temperature=0.0, max_new_tokens=4,
                                with_logprobs=False).embeddings
    for rationale, expected in (("none", none), ("greedy", greedy)):
        got = _encoder(tiny, rationale=rationale).encode(TEXTS)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_a_cache_written_before_keeps_its_rationales_and_vectors(tiny, tmp_path, monkeypatch):
    """Entries of the old form (unit vectors under the key without "embedding": "raw") are
    reused: nothing is generated, the vectors come out as before (rescored once, then stored
    raw under the new key); each text counts once, as a hit."""
    fresh = _encoder(tiny, cache=tmp_path / "new.sqlite")
    expected, ids = fresh.encode(TEXTS, return_rationale_ids=True)
    old = RationaleCache(tmp_path / "old.sqlite")
    key = fresh.options.generation_key(legacy=True)
    old.put_many(fresh.fingerprint, key, TEXTS, [e[0] for e in fresh.cache.get_entries(
        fresh.fingerprint, fresh.options.generation_key(), TEXTS)], 0, expected)  # unit vectors
    again = _encoder(tiny, cache=old)
    monkeypatch.setattr(grace.encoders.encode, "generate_and_score", _no_model_call)
    np.testing.assert_allclose(again.encode(TEXTS), expected, atol=1e-6)
    assert again.cache.hits == 3 and again.cache.misses == 0
    stored = old.get_entries(fresh.fingerprint, fresh.options.generation_key(), TEXTS)
    assert all(e is not None and abs(np.linalg.norm(e[1]) - 1) > 1e-2 for e in stored)  # raw now
    np.testing.assert_allclose(again.encode(TEXTS, normalize_embeddings=False),
                               fresh.encode(TEXTS, normalize_embeddings=False), atol=1e-6)


# --------------------------------------------------------------------------- normalize_embeddings


@pytest.mark.parametrize("options", MODES, ids=lambda o: "-".join(o.values()))
def test_normalize_false_gives_the_raw_pooled_vectors(tiny, options):
    encoder = _encoder(tiny, **options)
    unit = encoder.encode(TEXTS)
    raw = encoder.encode(TEXTS, normalize_embeddings=False)
    assert raw.dtype == np.float32 and raw.shape == unit.shape
    assert (np.abs(np.linalg.norm(raw, axis=1) - 1) > 1e-2).all()
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-6)


def test_raw_none_vectors_are_the_masked_mean_of_the_hidden_states(tiny):
    model, tokenizer = tiny
    opts = EncodeOptions()
    prompts = build_prompts(tokenizer, TEXTS, opts.system_prompt, opts.max_prompt_tokens)
    reference = score_sequences(model, prompt_only(prompts), with_logprobs=False, normalize=False)
    raw = _encoder(tiny, rationale="none").encode(TEXTS, normalize_embeddings=False)
    np.testing.assert_allclose(raw, reference.embeddings.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pool_prompts(model, tokenizer, prompts, normalize=False).numpy(), raw,
                               atol=1e-6)


def test_the_cache_stores_raw_vectors_and_serves_both_forms(tiny, tmp_path, monkeypatch):
    encoder = _encoder(tiny, cache=tmp_path / "c.sqlite")
    raw = encoder.encode(TEXTS, normalize_embeddings=False)
    stored = encoder.cache.get_entries(encoder.fingerprint, encoder.options.generation_key(), TEXTS)
    np.testing.assert_array_equal(np.stack([e[1] for e in stored]), raw)
    monkeypatch.setattr(grace.encoders.encode, "generate_and_score", _no_model_call)
    monkeypatch.setattr(grace.encoders.encode, "score_sequences", _no_model_call)
    unit = encoder.encode(TEXTS)  # from the same entries
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(encoder.encode(TEXTS, normalize_embeddings=False), raw)


def test_sampled_raw_is_the_mean_of_the_samples_raw_vectors(tiny, tmp_path):
    encoder = _encoder(tiny, cache=tmp_path / "c.sqlite", rationale="sampled", num_samples=2)
    torch.manual_seed(0)
    unit = encoder.encode(TEXTS)
    raw = encoder.encode(TEXTS, normalize_embeddings=False)  # the same two samples, cached
    key = encoder.options.generation_key()
    samples = torch.from_numpy(np.stack([[e[1] for e in encoder.cache.get_entries(
        encoder.fingerprint, key, TEXTS, k)] for k in range(2)], axis=1))  # (N, 2, D) raw
    np.testing.assert_allclose(raw, samples.mean(dim=1).numpy(), atol=1e-6)
    expected = F.normalize(F.normalize(samples, dim=-1).mean(dim=1), dim=-1)  # as before
    np.testing.assert_allclose(unit, expected.numpy(), atol=1e-6)


# --------------------------------------------------------------------------- truncate_dim


def test_truncate_dim_keeps_the_first_values(tiny):
    encoder = _encoder(tiny, rationale="none")
    full = encoder.encode(TEXTS)
    raw = encoder.encode(TEXTS, normalize_embeddings=False)
    short = encoder.encode(TEXTS, truncate_dim=16)
    assert short.shape == (3, 16) and short.dtype == np.float32
    np.testing.assert_allclose(short, full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True),
                               atol=1e-6)
    np.testing.assert_allclose(encoder.encode(TEXTS, truncate_dim=16, normalize_embeddings=False),
                               raw[:, :16], atol=1e-6)
    np.testing.assert_allclose(encoder.encode(TEXTS, truncate_dim=64), full, atol=1e-6)
    one = encoder.encode(TEXTS[0], truncate_dim=8, convert_to_tensor=True)
    assert torch.is_tensor(one) and one.shape == (8,)
    for bad in (0, 65, 2.5, True, "8"):
        with pytest.raises(ValueError, match="truncate_dim must be an integer from 1 to 64"):
            encoder.encode(TEXTS, truncate_dim=bad)


# --------------------------------------------------------------------------- prompts


def test_default_prompts_are_the_system_prompt_and_change_nothing(tiny):
    encoder = _encoder(tiny, rationale="none")
    assert encoder.prompts == {"query": encoder.options.system_prompt,
                               "document": encoder.options.system_prompt}
    assert not encoder.uses_instructions
    plain = encoder.encode(TEXTS)
    for same in (encoder.encode(TEXTS, prompt_name="query"), encoder.encode_query(TEXTS),
                 encoder.encode_document(TEXTS)):
        np.testing.assert_array_equal(same, plain)


def test_named_prompts_are_system_prompts(tiny, tmp_path):
    model, tokenizer = tiny
    prompts = {"query": "Say what this question asks.", "short": "Be brief."}
    encoder = GraceEncoder(model, tokenizer, EncodeOptions(rationale="none"), cache=False,
                           prompts=prompts)
    assert encoder.prompts["document"] == encoder.options.system_prompt and encoder.uses_instructions
    query = encoder.encode(TEXTS, prompt_name="query")
    np.testing.assert_array_equal(query, encoder.encode(TEXTS, system_prompt=prompts["query"]))
    np.testing.assert_array_equal(encoder.encode_query(TEXTS), query)
    np.testing.assert_array_equal(encoder.encode_document(TEXTS), encoder.encode(TEXTS))
    assert not np.allclose(query, encoder.encode(TEXTS))
    np.testing.assert_array_equal(encoder.encode(TEXTS, prompt_name="short"),
                                  encoder.encode(TEXTS, system_prompt="Be brief."))
    with pytest.raises(ValueError, match=r"prompt_name 'passage' is not one of this encoder's "
                                         r"prompts \(document, query, short\)"):
        encoder.encode(TEXTS, prompt_name="passage")
    with pytest.raises(ValueError, match="pass prompt_name or system_prompt, not both"):
        encoder.encode(TEXTS, prompt_name="query", system_prompt="x")
    encoder.save_pretrained(tmp_path / "enc")
    loaded = GraceEncoder.from_pretrained(str(tmp_path / "enc"), cache=False)
    assert loaded.prompts == encoder.prompts
    np.testing.assert_allclose(loaded.encode_query(TEXTS), query, atol=1e-6)
    other = GraceEncoder.from_pretrained(str(tmp_path / "enc"), cache=False, prompts={"query": "Q."})
    assert other.prompts["query"] == "Q." and other.prompts["short"] == "Be brief."


# --------------------------------------------------------------------------- other encoders


def test_llm2vec_gen_prompts_are_its_instructions(tiny):
    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
    from grace.llm2vec_gen.checkpoint import LLM2VecGenSpec
    from grace.llm2vec_gen.model import LLM2VecGenModel

    torch.manual_seed(0)
    spec = LLM2VecGenSpec(backbone="tiny-random", hidden_size=64, teacher_dim=8, num_tokens=4)
    encoder = LLM2VecGenEncoder(LLM2VecGenModel(copy.deepcopy(tiny[0]), spec), tiny[1])
    assert encoder.prompts == {"query": spec.query_instruction, "document": spec.document_instruction}
    np.testing.assert_array_equal(encoder.encode(TEXTS, prompt_name="document"),
                                  encoder.encode_document(TEXTS))
    np.testing.assert_array_equal(encoder.encode(TEXTS, prompt_name="query"), encoder.encode(TEXTS))
    raw = encoder.encode(TEXTS)  # unnormalised by default
    np.testing.assert_allclose(encoder.encode(TEXTS, truncate_dim=4), raw[:, :4], atol=1e-6)
    unit = encoder.encode(TEXTS, truncate_dim=4, normalize_embeddings=True)
    np.testing.assert_allclose(unit, raw[:, :4] / np.linalg.norm(raw[:, :4], axis=1, keepdims=True),
                               atol=1e-6)
    with pytest.raises(ValueError, match="pass prompt_name or instruction, not both"):
        encoder.encode(TEXTS, prompt_name="query", instruction="x")
    with pytest.raises(ValueError, match="truncate_dim must be an integer from 1 to 8"):
        encoder.encode(TEXTS, truncate_dim=9)


def test_sentence_transformers_models_pass_the_options_on():
    from sentence_transformers import SentenceTransformer

    from grace.encoders.sentence_transformer import minilm_folder

    minilm = GraceEncoder.from_pretrained("all-MiniLM-L6-v2")
    reference = SentenceTransformer(str(minilm_folder()), device="cpu", local_files_only=True)
    ours = minilm.encode(TEXTS, truncate_dim=32)
    np.testing.assert_allclose(ours, reference.encode(TEXTS, truncate_dim=32, normalize_embeddings=True),
                               atol=1e-5)
    assert minilm.prompts == dict(reference.prompts)
    np.testing.assert_allclose(minilm.encode_query(TEXTS), minilm.encode(TEXTS), atol=1e-6)
    with pytest.raises(ValueError, match="prompt_name 'passage' is not one of"):
        minilm.encode(TEXTS, prompt_name="passage")
