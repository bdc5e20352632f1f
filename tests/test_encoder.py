"""GraceEncoder: the sentence-transformers-like API and the persistent rationale cache."""

import numpy as np
import pytest
import torch

import grace.encoders.encode
from grace import GraceEncoder
from grace.models.fingerprint import model_fingerprint
from grace.rollout.generation_cache import RationaleCache

TEXTS = ["The cat sat on the mat.", "Stocks fell on Monday.", "A short one"]


@pytest.fixture
def encoder(tiny, tmp_path):
    model, tokenizer = tiny
    from grace.encoders.encode import EncodeOptions

    return GraceEncoder(model, tokenizer, EncodeOptions(max_new_tokens=4, batch_size=2),
                        cache=tmp_path / "rationales.sqlite")


def test_encode_contract(encoder):
    emb = encoder.encode(TEXTS)
    assert isinstance(emb, np.ndarray) and emb.shape == (3, encoder.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    single = encoder.encode(TEXTS[0])
    assert single.shape == (encoder.embedding_dim,)
    np.testing.assert_allclose(single, emb[0], atol=1e-5)
    tensor = encoder.encode(TEXTS, convert_to_tensor=True)
    assert torch.is_tensor(tensor) and tensor.shape == emb.shape
    emb2, rationales = encoder.encode(TEXTS, return_rationales=True)
    assert len(rationales) == 3 and all(isinstance(r, str) for r in rationales)


def test_rationale_ids_come_back_as_a_return_value(encoder):
    """What the mteb adapter reads for the quality figures: a return value, not an attribute."""
    emb, rationales = encoder.encode(TEXTS, return_rationales=True)
    same, ids = encoder.encode(TEXTS, return_rationale_ids=True)
    np.testing.assert_array_equal(same, emb)
    assert [encoder.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids] == rationales
    _, texts_again, ids_again = encoder.encode(TEXTS, return_rationales=True, return_rationale_ids=True)
    assert texts_again == rationales and ids_again == ids
    vector, one = encoder.encode(TEXTS[1], return_rationale_ids=True)
    assert vector.shape == (encoder.embedding_dim,) and one == ids[1]
    assert not hasattr(encoder, "rationale_record")


def test_greedy_twice_is_identical_and_second_time_comes_from_cache(encoder, monkeypatch):
    first = encoder.encode(TEXTS)
    assert encoder.cache.misses == 3 and encoder.cache.hits == 0

    def no_generation(*args, **kwargs):
        raise AssertionError("generated although every rationale is cached")

    monkeypatch.setattr(grace.encoders.encode, "generate_and_score", no_generation)
    monkeypatch.setattr(grace.encoders.encode, "score_sequences", no_generation)
    second = encoder.encode(TEXTS)
    np.testing.assert_array_equal(first, second)
    assert encoder.cache.hits == 3


def test_cache_survives_a_new_encoder_and_is_keyed_by_settings(encoder, tiny, tmp_path):
    encoder.encode(TEXTS)
    model, tokenizer = tiny
    again = GraceEncoder(model, tokenizer, encoder.options, cache=tmp_path / "rationales.sqlite")
    again.encode(TEXTS)
    assert again.cache.hits == 3
    again.encode(TEXTS, max_new_tokens=5)  # other settings: other rationales
    assert again.cache.misses == 3


def test_fingerprint_changes_with_the_weights(tiny):
    model, _ = tiny
    before = model_fingerprint(model)
    param = next(model.parameters())
    saved = param.detach().view(-1)[0].clone()
    with torch.no_grad():
        param.view(-1)[0] += 1.0
    try:
        assert model_fingerprint(model) != before
    finally:
        with torch.no_grad():
            param.view(-1)[0] = saved
    assert model_fingerprint(model) == before


def test_sampled_mode_averages_and_is_reused_from_the_cache(encoder):
    a = encoder.encode(TEXTS, rationale="sampled", num_samples=2)
    b = encoder.encode(TEXTS, rationale="sampled", num_samples=2)
    np.testing.assert_array_equal(a, b)
    assert encoder.cache.hits == 6


def test_none_mode_differs_and_skips_the_cache(encoder):
    none = encoder.encode(TEXTS, rationale="none")
    assert encoder.cache.hits == 0 and encoder.cache.misses == 0
    assert not np.allclose(none, encoder.encode(TEXTS))


def test_bad_inputs(encoder):
    with pytest.raises(TypeError, match="text 1 is a int"):
        encoder.encode(["fine", 3])
    with pytest.raises(TypeError, match="a string or a list of strings"):
        encoder.encode(42)
    with pytest.warns(UserWarning, match="1 of 2 texts are empty"):
        emb = encoder.encode(["fine", "   "])
    assert np.isfinite(emb).all()
    with pytest.raises(ValueError, match=r"text 2 is not valid Unicode: lone surrogate '\\ud800' at character 4"):
        encoder.encode(["fine", "also fine", "bad \ud800 text"])
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {bad}"):
            encoder.encode(["fine"], batch_size=bad)


def test_batch_size_is_used_as_given(encoder, monkeypatch):
    sizes = []
    real = grace.encoders.encode.encode_batch

    def spy(model, tokenizer, texts, *args):
        sizes.append(len(texts))
        return real(model, tokenizer, texts, *args)

    monkeypatch.setattr(grace.encoders.encode, "encode_batch", spy)
    encoder.encode(TEXTS, batch_size=1)
    assert sizes == [1, 1, 1]


def test_a_corrupt_cache_file_is_refused_naming_it_and_left_as_it_is(tiny, tmp_path):
    from grace.errors import GraceInputError

    bad = tmp_path / "rationales.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    before = bad.read_bytes()
    with pytest.raises(GraceInputError, match=f"rationale cache {bad} is not a readable SQLite database"):
        GraceEncoder(*tiny, cache=bad)
    assert bad.read_bytes() == before


def test_one_cache_serves_several_threads(encoder):
    """SQLite connections belong to their thread: the cache opens one per thread."""
    from concurrent.futures import ThreadPoolExecutor

    first = encoder.encode(TEXTS)  # written from this thread
    with ThreadPoolExecutor(1) as pool:
        again = pool.submit(encoder.encode, TEXTS).result()  # read and written from another
    np.testing.assert_array_equal(first, again)
    assert encoder.cache.hits >= len(TEXTS)


def test_similarity_is_cosine(encoder):
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 1.0]])
    sim = GraceEncoder.similarity(a, b)
    assert sim.shape == (2, 1)
    assert sim[0, 0].item() == pytest.approx(2 ** -0.5) and sim[1, 0].item() == pytest.approx(2 ** -0.5)


def test_save_and_load_round_trip(encoder, tmp_path):
    encoder.save_pretrained(tmp_path / "enc")
    loaded = GraceEncoder.from_pretrained(str(tmp_path / "enc"), cache=False)
    assert loaded.options == encoder.options
    np.testing.assert_allclose(loaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)
    with pytest.raises(TypeError, match="unknown encoding option"):
        GraceEncoder.from_pretrained(str(tmp_path / "enc"), cache=False, beam_width=3)


def test_rationale_cache_round_trip(tmp_path):
    cache = RationaleCache(tmp_path / "c.sqlite")
    cache.put_many("fp", "s", ["a", "b"], [[1, 2], [3]])
    assert cache.get_many("fp", "s", ["b", "a", "c"]) == [[3], [1, 2], None]
    assert len(cache) == 2 and cache.hits == 2 and cache.misses == 1


def test_cache_files_without_embeddings_are_upgraded_and_rescored(encoder, tmp_path, monkeypatch):
    """A cache written before embeddings were stored (5 columns): opened, the column is added;
    its rationales are reused (no generation) and scored by one forward pass, then stored."""
    import sqlite3

    first = encoder.encode(TEXTS)
    ids = [e[0] for e in encoder.cache.get_entries(encoder.fingerprint, encoder.options.generation_key(), TEXTS)]
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE rationales (key TEXT PRIMARY KEY, fingerprint TEXT, settings TEXT, text TEXT, ids TEXT)")
    db.commit()
    db.close()
    cache = RationaleCache(old)
    cache.put_many(encoder.fingerprint, encoder.options.generation_key(), TEXTS, ids)  # no embeddings
    again = GraceEncoder(encoder.model, encoder.tokenizer, encoder.options, cache=cache)

    def no_generation(*args, **kwargs):
        raise AssertionError("generated although every rationale is cached")

    monkeypatch.setattr(grace.encoders.encode, "generate_and_score", no_generation)
    rescored = again.encode(TEXTS)
    np.testing.assert_allclose(rescored, first, atol=1e-5)
    stored = cache.get_entries(encoder.fingerprint, encoder.options.generation_key(), TEXTS)
    assert all(e[1] is not None for e in stored)


def test_from_pretrained_on_a_truncated_checkpoint_is_one_clear_error(encoder, tmp_path):
    from grace.errors import GraceInputError

    folder = tmp_path / "enc"
    encoder.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(GraceInputError, match=f"cannot load model from folder '{folder}'"):
        GraceEncoder.from_pretrained(str(folder), cache=False)


def test_grace_explain_with_a_corrupt_cache_file_exits_2_naming_it(tmp_path, monkeypatch, capsys):
    from grace.models.backbones import cache_dir, prepare_tiny_random
    from grace.cli import main

    model = prepare_tiny_random()
    root = tmp_path / "cache"
    root.mkdir()
    (root / model.name).symlink_to(model, target_is_directory=True)
    (root / "rationales.sqlite").write_bytes(b"garbage" * 500)
    monkeypatch.setenv("GRACE_CACHE", str(root))
    assert cache_dir() == root
    assert main(["explain", "a cat", "a dog", "--model", "tiny-random"]) == 2
    err = capsys.readouterr().err
    assert f"rationale cache {root / 'rationales.sqlite'} is not a readable SQLite database" in err
    assert "Traceback" not in err


def test_echo_mode_pools_the_text_copied_as_its_rationale(encoder, tiny, monkeypatch):
    """``echo``: no generation; the text's own first max_new_tokens tokens stand where a
    rationale goes, and the embedding is the masked mean from the user text to their end."""
    from grace.models.prompt import build_prompts

    model, tok = tiny

    def no_generation(*args, **kwargs):
        raise AssertionError("echo must not generate")

    monkeypatch.setattr(grace.encoders.encode, "generate_and_score", no_generation)
    emb, rationales = encoder.encode(TEXTS, rationale="echo", max_new_tokens=50, return_rationales=True)
    assert rationales == TEXTS  # short texts: copied whole
    assert encoder.cache.hits == 0 and encoder.cache.misses == 0  # nothing generated, nothing cached
    _, cut = encoder.encode(TEXTS[:1], rationale="echo", max_new_tokens=3, return_rationales=True)
    assert cut == [tok.decode(tok(TEXTS[0], add_special_tokens=False)["input_ids"][:3]).strip()]
    # by hand for text 1: prompt + its tokens, one forward pass, mean from pool_start to the end
    prompt = build_prompts(tok, TEXTS[1:2])
    ids = torch.cat([prompt.input_ids[0], torch.tensor(tok(TEXTS[1], add_special_tokens=False)["input_ids"])])
    with torch.no_grad():
        hidden = model.model(input_ids=ids[None]).last_hidden_state[0].float()  # (L, D)
    expected = torch.nn.functional.normalize(hidden[int(prompt.pool_start[0]):].mean(dim=0), dim=0)
    np.testing.assert_allclose(emb[1], expected.numpy(), atol=1e-4)
    assert not np.allclose(emb, encoder.encode(TEXTS, rationale="none"), atol=1e-3)


def test_from_pretrained_asks_one_explicit_table_of_formats():
    """The classes from_pretrained may return are listed in grace/encoders/__init__.py; defining
    a subclass registers nothing (no registration by side effect)."""
    from grace.encoders import LLM2VecGenEncoder, SentenceTransformerEncoder

    assert GraceEncoder.formats == (LLM2VecGenEncoder, SentenceTransformerEncoder)

    class ClaimsEverything(GraceEncoder):
        @classmethod
        def claims(cls, name_or_path) -> bool:
            return True

    assert ClaimsEverything not in GraceEncoder.formats
