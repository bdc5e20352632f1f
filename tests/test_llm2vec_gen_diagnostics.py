"""LLM2Vec-Gen collapse diagnostics: the figures by hand, per-step logging, the script."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sample_data import TEXTS

from grace.llm2vec_gen.diagnostics import (
    alignment_figures,
    constant_baseline_cosine,
    decoding_overlap,
    mean_cosine,
    mean_pairwise_cosine,
    ridge_cosines,
    unigram_f1,
)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality" / "llm2vec_gen_diagnostics.py"


def test_pairwise_and_constant_baseline_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # pairs: (1,0)-(0,1): 0; (1,0)-(1,1)/sqrt2: 1/sqrt2; (0,1)-(1,1)/sqrt2: 1/sqrt2 -> mean of 3
    assert mean_pairwise_cosine(x) == pytest.approx(2 ** 0.5 / 3)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 1.0], [2.0, 2.0]])) == pytest.approx(1.0)
    t = torch.tensor([[1.0, 0.0], [0.0, 5.0]])  # unit targets e1, e2: best constant (e1+e2)/sqrt2
    assert constant_baseline_cosine(t) == pytest.approx(2 ** -0.5)
    assert mean_cosine(t, torch.tensor([[2.0, 0.0], [1.0, 0.0]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        mean_pairwise_cosine(x[:1])


def test_ridge_recovers_a_linear_map_and_fails_on_noise():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(200, 8, generator=gen)
    targets = features @ torch.randn(8, 5, generator=gen)  # exactly linear
    held, seen = ridge_cosines(features, targets)
    assert held > 0.99 and seen > 0.99
    noise = torch.randn(200, 5, generator=gen)  # unrelated to the features
    held, _ = ridge_cosines(features, noise)
    assert held < 0.3  # nothing a held-out row can be predicted from


def test_a_collapsed_model_sits_at_the_constant_baseline():
    gen = torch.Generator().manual_seed(1)
    targets = torch.randn(50, 6, generator=gen) + 3.0  # a shared direction plus spread
    mean = torch.nn.functional.normalize(torch.nn.functional.normalize(targets, dim=-1).mean(0), dim=0)
    collapsed = mean.expand(50, -1) + 1e-6 * torch.randn(50, 6, generator=gen)
    figures = alignment_figures(collapsed, targets)
    assert figures["cosine_to_teacher"] == pytest.approx(figures["constant_baseline"], abs=1e-4)
    assert figures["pairwise_model"] > 0.999 > figures["pairwise_teacher"]
    assert "ridge_heldout" not in figures  # no states given


def test_unigram_f1_by_hand():
    # pred "the cat sat" vs ref "The cat, the dog": common {the: 1, cat: 1} = 2;
    # precision 2/3, recall 2/4 -> F1 = 2 * (2/3)(1/2) / (2/3 + 1/2) = 4/7
    assert unigram_f1("the cat sat", "The cat, the dog") == pytest.approx(4 / 7)
    assert unigram_f1("a b", "a b") == 1.0
    assert unigram_f1("", "a") == 0.0 and unigram_f1("x", "y") == 0.0 and unigram_f1("!", "!") == 0.0


def test_decoding_overlap_pairs_each_decoding_with_another_answer():
    decoded = ["red apple", "blue sky", "green grass", "black night"]
    answers = ["an apple is red", "the sky is blue", "grass is green", "night is black"]
    figures = decoding_overlap(decoded, answers, seed=3)
    # paired: both words of each decoding are in its answer, precision 1; recall 2/4 for the
    # first two (F1 2/3), 2/3 for the last two (F1 4/5); shuffled: no word in common -> 0
    assert figures["f1_paired"] == pytest.approx((2 / 3 + 2 / 3 + 0.8 + 0.8) / 4)
    assert figures["f1_shuffled"] == 0.0
    assert figures["decoded"] == 4
    for seed in range(5):  # never a decoding against its own answer
        assert decoding_overlap(["a", "b"], ["a", "b"], seed=seed)["f1_shuffled"] == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        decoding_overlap(["a"], ["a"])


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false")


@pytest.mark.slow
def test_training_logs_the_collapse_figures_and_the_script_reports_a_checkpoint(tmp_path):
    (tmp_path / "texts.txt").write_text("".join(f"{t} Why?\n" for t in TEXTS))
    common = ["--llm2vec_gen.response_max_new_tokens", "12", "--llm2vec_gen.cache",
              "gen.sqlite", "--data.path", "texts.txt"]
    train = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--method", "llm2vec-gen",
                            "--model", "tiny-random", "--max-steps", "2", "--batch-size", "4",
                            "--output-dir", "OUT", *common], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "OUT" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for key in ("align/constant_baseline", "align/pairwise_model", "align/pairwise_teacher"):
            assert math.isfinite(row[key]) and -1.0 <= row[key] <= 1.0 + 1e-6, key
    out = tmp_path / "diag.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", "OUT", "--texts", "8",
                          "--decode", "3", "--decode-tokens", "4",
                          "--output", str(out), *common], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["texts"] == 8 and figures["checkpoint"].endswith("checkpoint-2")
    for key in ("cosine_to_teacher", "constant_baseline", "pairwise_model", "pairwise_teacher",
                "ridge_heldout", "ridge_train", "f1_paired", "f1_shuffled"):
        assert math.isfinite(figures[key]), key
    assert len(figures["samples"]) == 3 and set(figures["samples"][0]) == {"text", "decoded", "answer"}
    bad = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", "nowhere"], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not an LLM2Vec-Gen checkpoint" in bad.stderr


@pytest.mark.parametrize("head_init,align_init", [("scaled", "none"), ("default", "none"),
                                                   ("scaled", "ridge")])
def test_soft_token_gradient_norms_per_loss(tmp_path, head_init, align_init, one_thread):
    """grad_norm_every logs each loss's gradient norm on the soft tokens. With the 'scaled'
    init alone the alignment head starts at zero, so at step 1 the alignment loss sends exactly
    no gradient to the soft tokens (issue 13's point); with nn.Linear's init, or the ridge start
    of the alignment head, it does."""
    from grace.config.schema import load_config
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in TEXTS))
    # distinct hand-written answers (tiny-random's own are all empty: one target for every text,
    # which the ridge start would fit exactly, leaving no alignment gradient to measure)
    (tmp_path / "r.jsonl").write_text("".join(
        json.dumps({"text": t, "response": " ".join(reversed(t.split()))}) + "\n" for t in TEXTS))
    config = load_config(None, {
        "method": "llm2vec-gen", "model.name": "tiny-random", "data.path": str(data),
        "output_dir": str(tmp_path / "OUT"), "batch_size": 4, "max_steps": 1, "sample_every": 0,
        "llm2vec_gen.num_tokens": 4, "llm2vec_gen.teacher": "tiny-random",
        "llm2vec_gen.micro_batch_size": 2, "llm2vec_gen.response_max_new_tokens": 4,
        "llm2vec_gen.responses_file": str(tmp_path / "r.jsonl"), "llm2vec_gen.head_init": head_init,
        "llm2vec_gen.cache": str(tmp_path / "gen.sqlite"),
        "llm2vec_gen.align_init": align_init, "llm2vec_gen.grad_norm_every": 1,
    })
    trainer = LLM2VecGenTrainer(config)
    try:
        metrics, _ = trainer.step(1)
    finally:
        trainer.close()
    assert metrics["grad/recon_soft_tokens"] > 0
    if (head_init, align_init) == ("scaled", "none"):
        assert metrics["grad/align_soft_tokens"] == 0.0
    else:
        assert metrics["grad/align_soft_tokens"] > 0
    assert math.isfinite(metrics["loss/total"])


def test_training_texts_are_distinct_and_stop_with_the_epoch(tmp_path):
    from grace.config.schema import load_config
    from benchmarks.quality.llm2vec_gen_diagnostics import training_texts

    data = tmp_path / "texts.txt"
    data.write_text("same\nsame\nother\nsame\n")  # 2 distinct texts among 4 records
    config = load_config(None, {"method": "llm2vec-gen", "data.path": str(data), "batch_size": 2})
    texts = training_texts(config, 10)
    assert sorted(texts) == ["other", "same"]
    assert training_texts(config, 1) == texts[:1]
    assert training_texts(config, 5, skip=1) == texts[1:]  # the ones after the first
    assert training_texts(config, 5, skip=2) == []
