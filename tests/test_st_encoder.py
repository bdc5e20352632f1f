"""sentence-transformers models (all-MiniLM-L6-v2, any sentence-transformers folder) behind the
GraceEncoder API, so that `grace eval` and the mteb adapter compare them with GRACE models."""

import numpy as np
import pytest
import torch

from grace import GraceEncoder
from grace.errors import GraceInputError
from grace.encoders.sentence_transformer import SentenceTransformerEncoder, minilm_folder


@pytest.fixture(scope="module")
def minilm():
    return GraceEncoder.from_pretrained("all-MiniLM-L6-v2")


def test_minilm_loads_offline_and_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    assert isinstance(minilm, SentenceTransformerEncoder) and minilm.embedding_dim == 384
    texts = ["A cat sits on the mat.", "Stocks fell sharply on Monday.", "A kitten is on a rug."]
    ours = minilm.encode(texts, batch_size=2)
    ref = SentenceTransformer(str(minilm_folder()), device="cpu", local_files_only=True).encode(
        texts, normalize_embeddings=True)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    sim = minilm.similarity(ours, ours)
    assert sim[0, 2] > sim[0, 1] + 0.2  # a real encoder: the paraphrase is far closer
    one, rationale = minilm.encode("A cat sits on the mat.", return_rationales=True)
    assert one.shape == (384,) and rationale == ""
    assert torch.is_tensor(minilm.encode(texts[:1], convert_to_tensor=True))


def test_a_folder_loads_too_and_bad_options_are_named(minilm, tmp_path):
    minilm.save_pretrained(tmp_path / "copy")
    again = GraceEncoder.from_pretrained(str(tmp_path / "copy"), rationale="greedy")  # ignored
    assert isinstance(again, SentenceTransformerEncoder) and again.options.rationale == "none"
    np.testing.assert_allclose(again.encode(["a text"]), minilm.encode(["a text"]), atol=1e-6)
    with pytest.raises(TypeError, match="unknown encoding option 'colour'"):
        GraceEncoder.from_pretrained("all-MiniLM-L6-v2", colour="red")
    with pytest.raises(GraceInputError, match="not a sentence-transformers folder"):
        SentenceTransformerEncoder.from_pretrained(str(tmp_path))


def test_run_suite_scores_minilm_through_mteb(tmp_path):
    from grace.evaluation.suite import run_suite
    from test_evaluation import make_data_dir

    results = run_suite("all-MiniLM-L6-v2", data_dir=make_data_dir(tmp_path / "data"),
                        rationale="none", show=False, output=tmp_path / "r.json")
    assert results["mteb_model"] == "grace/all-MiniLM-L6-v2" and results["dtype"] == "float32"
    assert set(results["tasks"]) >= {"LeeDocSim", "LocalSTSBenchmark"}
    assert results["tasks"]["LeeDocSim"]["main_score"] > 0.5  # MiniLM on Lee: a real score
    assert (tmp_path / "r.json").is_file()


def test_run_suite_keeps_an_encoder_object_of_another_kind(minilm, tmp_path):
    from grace.evaluation.suite import _encoder

    assert _encoder(minilm, "greedy", 8, cache=False) is minilm  # not rebuilt as a GRACE encoder
