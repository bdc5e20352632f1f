"""sentence-transformers loads the folders grace saves (grace.encoders.st_module.GraceModule,
named by the modules.json that grace.models.st_files writes): GraceEncoder.save_pretrained,
GRACE and LLM2Vec-Gen training checkpoints, LLM2VecGenEncoder.save_pretrained. Its vectors are
GraceEncoder.from_pretrained(folder)'s, to 1e-6; grace's own loaders ignore the files, and
folders without them load as before."""

import json
import shutil

import numpy as np
import pytest
import torch
from sample_data import TEXTS as TRAIN_TEXTS

from grace import GraceEncoder
from grace.encoders.encode import EncodeOptions
from grace.models.st_files import FILES, MODULE_CLASS, is_grace_view

TEXTS = ["The cat sat on the mat.", "Stocks fell on Monday.", "A short one"]


@pytest.fixture
def grace_cache(tmp_path, monkeypatch):
    """$GRACE_CACHE in tmp_path (the module's encoder keeps its rationale cache there), with the
    tiny model linked in."""
    from grace.models.backbones import prepare_tiny_random

    model = prepare_tiny_random()
    root = tmp_path / "cache"
    root.mkdir()
    (root / model.name).symlink_to(model, target_is_directory=True)
    monkeypatch.setenv("GRACE_CACHE", str(root))
    return root


def _st(folder, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                               trust_remote_code=True, **kwargs)


def _save(tiny, folder, prompts=None, **options):
    model, tokenizer = tiny
    GraceEncoder(model, tokenizer, EncodeOptions(max_new_tokens=4, **options), cache=False,
                 prompts=prompts).save_pretrained(folder)
    return folder


def _has_view(folder) -> None:
    assert json.loads((folder / "modules.json").read_text()) == [
        {"idx": 0, "name": "0", "path": "", "type": MODULE_CLASS}]
    assert json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"] == {}
    assert is_grace_view(folder)


@pytest.mark.parametrize("rationale", ["none", "greedy"])
def test_a_saved_grace_encoder_loads_in_sentence_transformers(tiny, tmp_path, grace_cache, rationale):
    folder = _save(tiny, tmp_path / "enc", rationale=rationale)
    _has_view(folder)
    grace = GraceEncoder.from_pretrained(str(folder), cache=False)  # the saved settings
    assert grace.options.rationale == rationale and grace.options.max_new_tokens == 4
    expected = grace.encode(TEXTS)
    model = _st(folder)
    got = model.encode(TEXTS)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (3, 64)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert model.get_embedding_dimension() == 64 and model.max_seq_length == 1024
    np.testing.assert_allclose(model.encode(TEXTS[1]), expected[1], atol=1e-6)
    np.testing.assert_allclose(model.encode_query(TEXTS), grace.encode_query(TEXTS), atol=1e-6)
    np.testing.assert_allclose(model.encode(TEXTS, truncate_dim=16, normalize_embeddings=True),
                               grace.encode(TEXTS, truncate_dim=16), atol=1e-6)
    torch.testing.assert_close(model.similarity(got, got), grace.similarity(expected, expected),
                               atol=1e-6, rtol=0)
    if rationale == "greedy":  # its rationales went to grace's cache
        assert (grace_cache / "rationales.sqlite").is_file()


def test_named_prompts_reach_sentence_transformers(tiny, tmp_path, grace_cache):
    prompts = {"query": "Say what this question asks.", "short": "Be brief."}
    folder = _save(tiny, tmp_path / "enc", prompts=prompts, rationale="none")
    grace = GraceEncoder.from_pretrained(str(folder), cache=False)
    model = _st(folder)
    assert model.prompts["query"] == prompts["query"] and model.prompts["short"] == "Be brief."
    assert model.prompts["document"] == grace.options.system_prompt
    query = model.encode_query(TEXTS)
    np.testing.assert_allclose(query, grace.encode_query(TEXTS), atol=1e-6)
    np.testing.assert_allclose(model.encode(TEXTS, prompt_name="query"), query, atol=1e-6)
    np.testing.assert_allclose(model.encode_document(TEXTS), grace.encode_document(TEXTS), atol=1e-6)
    np.testing.assert_allclose(model.encode(TEXTS, prompt_name="short"),
                               grace.encode(TEXTS, prompt_name="short"), atol=1e-6)
    np.testing.assert_allclose(model.encode(TEXTS, prompt="Be brief."),  # a prompt's text
                               grace.encode(TEXTS, system_prompt="Be brief."), atol=1e-6)
    assert not np.allclose(query, model.encode(TEXTS))


@pytest.mark.skipif(int(__import__("sentence_transformers").__version__.split(".")[0]) < 6,
                    reason="sentence-transformers 5 imports installed modules without the flag")
def test_sentence_transformers_6_asks_for_trust_remote_code(tiny, tmp_path):
    """sentence-transformers >= 6 imports a module class from outside its own package only with
    trust_remote_code=True (its PR #3935), an installed package's included."""
    from sentence_transformers import SentenceTransformer

    folder = _save(tiny, tmp_path / "enc", rationale="none")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def test_grace_ignores_the_files_and_folders_without_them_load(tiny, tmp_path, grace_cache):
    from grace.encoders.sentence_transformer import SentenceTransformerEncoder
    from grace.llm2vec_gen.teacher import load_teacher

    folder = _save(tiny, tmp_path / "enc", rationale="none")
    assert not SentenceTransformerEncoder.claims(str(folder))
    loaded = GraceEncoder.from_pretrained(str(folder), cache=False)
    assert type(loaded) is GraceEncoder
    assert type(load_teacher(str(folder)).encoder) is GraceEncoder
    old = tmp_path / "old"  # a folder saved before the files existed
    shutil.copytree(folder, old)
    for name in FILES:
        (old / name).unlink()
    assert not is_grace_view(old)
    np.testing.assert_allclose(GraceEncoder.from_pretrained(str(old), cache=False).encode(TEXTS),
                               loaded.encode(TEXTS), atol=1e-6)


def test_sentence_transformers_save_round_trips(tiny, tmp_path, grace_cache):
    folder = _save(tiny, tmp_path / "enc", rationale="none")
    model = _st(folder)
    expected = model.encode(TEXTS)
    model.save(str(tmp_path / "copy"))
    assert is_grace_view(tmp_path / "copy")
    np.testing.assert_allclose(_st(tmp_path / "copy").encode(TEXTS), expected, atol=1e-6)
    np.testing.assert_allclose(GraceEncoder.from_pretrained(str(tmp_path / "copy"), cache=False)
                               .encode(TEXTS), expected, atol=1e-6)


def test_a_grace_training_checkpoint_loads_in_sentence_transformers(tmp_path, grace_cache, one_thread):
    from grace.config.schema import load_config
    from grace.train import train
    from grace.training.checkpoint import MANIFEST, checkpoint_problem

    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in TRAIN_TEXTS))
    train(load_config(None, {
        "model.name": "tiny-random", "mode": "unsupervised", "data.path": str(data),
        "output_dir": str(tmp_path / "OUT"), "batch_size": 2, "max_steps": 1,
        "rollout.num_rollouts": 2, "rollout.max_new_tokens": 4}))
    checkpoint = tmp_path / "OUT" / "checkpoint-1"
    _has_view(checkpoint)
    assert set(FILES) <= set(json.loads((checkpoint / MANIFEST).read_text())["files"])
    assert checkpoint_problem(checkpoint) is None
    grace = GraceEncoder.from_pretrained(str(checkpoint), cache=False)
    assert type(grace) is GraceEncoder and grace.options.rationale == "greedy"  # the defaults
    np.testing.assert_allclose(_st(checkpoint).encode(TEXTS), grace.encode(TEXTS), atol=1e-6)


def test_llm2vec_gen_checkpoints_and_saves_load_in_sentence_transformers(tmp_path, grace_cache,
                                                                         one_thread):
    from test_llm2vec_gen import _config

    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
    from grace.train import train

    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in TRAIN_TEXTS))
    train(_config(tmp_path, data, max_steps=1))
    checkpoint = tmp_path / "OUT" / "checkpoint-1"
    _has_view(checkpoint)
    grace = GraceEncoder.from_pretrained(str(checkpoint))
    assert isinstance(grace, LLM2VecGenEncoder)
    model = _st(checkpoint)
    assert model.prompts == grace.prompts  # the two instructions
    got = model.encode(TEXTS)
    np.testing.assert_allclose(got, grace.encode(TEXTS), atol=1e-6)  # unnormalised, as grace's
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() > 1e-3
    np.testing.assert_allclose(model.encode_query(TEXTS), grace.encode_query(TEXTS), atol=1e-6)
    np.testing.assert_allclose(model.encode_document(TEXTS), grace.encode_document(TEXTS), atol=1e-6)
    grace.save_pretrained(tmp_path / "copy")
    _has_view(tmp_path / "copy")
    np.testing.assert_allclose(_st(tmp_path / "copy").encode(TEXTS), grace.encode(TEXTS), atol=1e-6)
