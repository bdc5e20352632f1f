"""The contrastive baselines (``--method infonce`` / ``--method simcse``): the pure losses against
hand-computed values, the gather that keeps gradients, the embedding (= ``rationale="none"``
encoding), one training step on the tiny random model, and CLI runs with checkpoint, metrics,
resume and the wrong-mode error.

All vectors in the loss tests are 2-D unit vectors, so every cosine is a dot product written out
below; the expected losses are written as the log-sum-exp they come from, then as a number.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sample_data import TEXTS as ALL_TEXTS, TRIPLETS

from grace.contrastive.trainers import InfoNCETrainer, SimCSETrainer, embed_with_grad, gather_with_grad
from grace.config.schema import load_config
from grace.contrastive.losses import info_nce, simcse_unsup
from grace.errors import GraceInputError
from grace.grpo.trainer import GraceTrainer
from grace.train import trainer_class

T = torch.tensor
Q = T([[1.0, 0.0], [0.0, 1.0]])  # two queries


# --------------------------------------------------------------------------- pure losses


def test_info_nce_in_batch_negatives_only():
    """p1 = (.6, .8), p2 = (0, 1); tau = 1.
    row 1: cos(q1, p1) = .6 (target), cos(q1, p2) = 0   -> log(1 + e^-0.6)
    row 2: cos(q2, p1) = .8, cos(q2, p2) = 1 (target)   -> log(1 + e^-0.2)"""
    loss, stats = info_nce(Q, T([[0.6, 0.8], [0.0, 1.0]]), None, temperature=1.0)
    expected = (math.log(1 + math.exp(-0.6)) + math.log(1 + math.exp(-0.2))) / 2  # 0.517813
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.5178134, abs=1e-6)
    assert stats == pytest.approx({"accuracy": 1.0, "pos_cos": 0.8, "neg_cos": 0.4})


def test_info_nce_scores_every_rows_hard_negatives():
    """p1 = (.8, .6), p2 = (.6, .8), n1 = (0, 1), n2 = (.6, -.8); tau = 0.5.
    Candidates of every query: [p1, p2, n1, n2].
    row 1 cosines [.8, .6, 0, .6], target p1   -> log(1 + 2 e^-0.4 + e^-1.6)            = 0.933162
    row 2 cosines [.6, .8, 1, -.8], target p2  -> log(e^-0.4 + 1 + e^0.4 + e^-3.2)      = 1.164059
    Row 2's best candidate is ROW 1's hard negative n1, so accuracy is 1/2."""
    positives = T([[0.8, 0.6], [0.6, 0.8]])
    negatives = T([[[0.0, 1.0]], [[0.6, -0.8]]])  # (B=2, M=1, D=2)
    loss, stats = info_nce(Q, positives, negatives, temperature=0.5)
    row1 = math.log(1 + 2 * math.exp(-0.4) + math.exp(-1.6))
    row2 = math.log(math.exp(-0.4) + 1 + math.exp(0.4) + math.exp(-3.2))
    assert loss.item() == pytest.approx((row1 + row2) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(1.0486105, abs=1e-6)
    assert stats["accuracy"] == 0.5
    assert stats["pos_cos"] == pytest.approx(0.8)
    assert stats["neg_cos"] == pytest.approx((0.6 + 0 + 0.6 + 0.6 + 1 - 0.8) / 6)  # 1/3
    assert stats["hard_neg_cos"] == pytest.approx((0 - 0.8) / 2)  # own negatives only
    # unnormalised inputs give the same loss (cosine), and the gradient reaches the inputs
    q = (3 * Q).requires_grad_()
    again, _ = info_nce(q, 2 * positives, 5 * negatives, temperature=0.5)
    again.backward()
    assert again.item() == pytest.approx(loss.item(), abs=1e-6)
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_info_nce_default_temperature_is_0_05():
    """The first example at tau = 0.05: cosines x 20 -> log(1 + e^-12) and log(1 + e^-4)."""
    loss, _ = info_nce(Q, T([[0.6, 0.8], [0.0, 1.0]]))
    expected = (math.log(1 + math.exp(-12)) + math.log(1 + math.exp(-4))) / 2  # 0.009078
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_scores_memory_rows_as_negatives_of_every_query():
    """The first example (p1 = (.6, .8), p2 = (0, 1), tau = 1) with one memory row m = (1, 0):
    row 1 cosines [.6, 0, 1], target p1  -> -0.6 + log(e^0.6 + 1 + e^1)   = 1.112067
    row 2 cosines [.8, 1, 0], target p2  -> -1 + log(e^0.8 + e^1 + 1)     = 0.782352
    The memory takes no gradient, and an empty memory is no memory."""
    positives = T([[0.6, 0.8], [0.0, 1.0]]).requires_grad_()
    memory = T([[1.0, 0.0]]).requires_grad_()
    loss, stats = info_nce(Q, positives, None, temperature=1.0, memory=memory)
    row1 = -0.6 + math.log(math.exp(0.6) + 1 + math.e)
    row2 = -1 + math.log(math.exp(0.8) + math.e + 1)
    assert loss.item() == pytest.approx((row1 + row2) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.9472097, abs=1e-6)
    assert stats["accuracy"] == 0.5  # row 1's best candidate is the memory row
    assert stats["neg_cos"] == pytest.approx((0 + 1 + 0.8 + 0) / 4)
    loss.backward()
    assert memory.grad is None and positives.grad.abs().sum() > 0
    plain, _ = info_nce(Q, positives.detach(), None, temperature=1.0)
    empty, _ = info_nce(Q, positives.detach(), None, temperature=1.0, memory=torch.zeros(0, 2))
    assert empty.item() == pytest.approx(plain.item(), abs=1e-7)
    # with hard negatives the memory comes after them: each query's own negatives stay its own
    negatives = T([[[0.0, 1.0]], [[0.6, -0.8]]])
    _, hard = info_nce(Q, T([[0.8, 0.6], [0.6, 0.8]]), negatives, 0.5, memory=T([[1.0, 0.0]]))
    assert hard["hard_neg_cos"] == pytest.approx((0 - 0.8) / 2)


def test_simcse_is_one_directional():
    """view1 = queries, view2 = [(.6, .8), (0, 1)], tau = 1: view1 -> view2 is the first InfoNCE
    example (0.517813); the other direction would be
    (log(1 + e^0.2) + log(1 + e^-1)) / 2 = 0.555700, and a symmetric loss their mean."""
    view2 = T([[0.6, 0.8], [0.0, 1.0]])
    loss, stats = simcse_unsup(Q, view2, temperature=1.0)
    assert loss.item() == pytest.approx(0.5178134, abs=1e-6)
    reverse, _ = simcse_unsup(view2, Q, temperature=1.0)
    assert reverse.item() == pytest.approx(
        (math.log(1 + math.exp(0.2)) + math.log(1 + math.exp(-1))) / 2, abs=1e-6)  # 0.555700
    assert stats["pos_cos"] == pytest.approx(0.8) and "hard_neg_cos" not in stats


# --------------------------------------------------------------------------- gather with grad


class FakeAccelerator:
    """Rank ``rank`` of ``world``; ``gather`` returns ``everyone`` (all ranks' rows, rank order)."""

    def __init__(self, world: int, rank: int = 0, everyone: torch.Tensor | None = None):
        self.num_processes, self.process_index, self.everyone = world, rank, everyone

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        assert not tensor.requires_grad  # accelerate's gather carries no gradient anyway
        return self.everyone


def test_gather_with_grad_single_process_is_the_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(FakeAccelerator(1), x) is x


def test_gather_with_grad_puts_the_local_tensor_back():
    everyone = torch.arange(12.0).view(6, 2)  # 3 ranks x 2 rows
    x = everyone[2:4].clone().requires_grad_()  # rank 1's rows
    full = gather_with_grad(FakeAccelerator(3, rank=1, everyone=everyone), x)
    assert torch.equal(full.detach(), everyone)
    (full * torch.arange(1.0, 7.0)[:, None]).sum().backward()
    assert torch.equal(x.grad, T([[3.0, 3.0], [4.0, 4.0]]))  # the weights of rows 2 and 3


# --------------------------------------------------------------------------- embedding


def test_embedding_is_rationale_none_encoding(tiny):
    """The baselines train exactly the embedding that ``rationale="none"`` encoding computes."""
    from grace.encoders.encode import EncodeOptions, embed_texts
    from grace.models.prompt import build_prompts

    model, tokenizer = tiny
    texts = ["A man plays a guitar.", "Two dogs run across a snowy field in the morning.", "Hi"]
    with torch.no_grad():
        trained, tie = embed_with_grad(model, build_prompts(tokenizer, texts))
    encoded, _ = embed_texts(model, tokenizer, texts, EncodeOptions(rationale="none", batch_size=2))
    torch.testing.assert_close(trained, torch.from_numpy(encoded), atol=1e-5, rtol=1e-4)
    assert tie.item() == 0.0


# --------------------------------------------------------------------------- one step

TEXTS = ALL_TEXTS[:6]
METHOD = {"infonce": ("supervised", "triplets.jsonl"), "simcse": ("unsupervised", "texts.txt")}
METRIC_KEYS = ("contrastive/loss", "contrastive/accuracy", "contrastive/pos_cos",
               "contrastive/neg_cos", "contrastive/grad_norm", "lr", "time/step_s",
               "throughput/tokens_per_s")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "triplets.jsonl").write_text("".join(
        json.dumps(dict(zip(("query", "positive", "negative"), row))) + "\n" for row in TRIPLETS))
    (tmp_path / "texts.txt").write_text("".join(text + "\n" for text in TEXTS))
    return tmp_path


def _config(data: Path, method: str, **extra):
    mode, name = METHOD[method]
    overrides = {"model.name": "tiny-random", "method": method, "mode": mode,
                 "data.path": str(data / name), "output_dir": str(data / "OUT"), "batch_size": 2,
                 "max_steps": 2, "optim.weight_decay": 0.0, **extra}
    return load_config(None, overrides)


def test_train_dispatches_on_method():
    assert trainer_class("grace") is GraceTrainer
    assert trainer_class("infonce") is InfoNCETrainer
    assert trainer_class("simcse") is SimCSETrainer


@pytest.mark.parametrize("name, method, mode", [("infonce-nli", "infonce", "supervised"),
                                                ("simcse-wiki", "simcse", "unsupervised")])
def test_packaged_configs(name, method, mode):
    config = load_config(name)
    assert (config.method, config.mode) == (method, mode)
    assert config.baseline.temperature == 0.05 and config.baseline.learning_rate == 2e-5


def test_baseline_config_is_checked():
    with pytest.raises(GraceInputError, match="baseline.temperature must be > 0"):
        load_config(None, {"baseline.temperature": 0})
    with pytest.raises(GraceInputError, match=r"baseline.dropout must be in \[0, 1\)"):
        load_config(None, {"baseline.dropout": 1.0})


@pytest.mark.parametrize("method", ["infonce", "simcse"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_step_changes_every_trainable_parameter(data, method, lora, one_thread):
    """A finite loss, and every trainable parameter moved (weight decay 0, so by the gradient);
    frozen LoRA base weights did not. LoRA's B starts at 0, so A only gets a gradient in the
    second step: LoRA runs two steps."""
    trainer = trainer_class(method)(_config(data, method, **{"model.lora": lora}))
    params = dict(trainer.policy.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    trainable = [name for name, p in params.items() if p.requires_grad]
    assert trainable and (len(trainable) < len(params)) == lora
    for step in range(1, 3 if lora else 2):
        metrics, samples = trainer.step(step)
        assert math.isfinite(metrics["contrastive/loss"]) and metrics["contrastive/grad_norm"] > 0
    assert samples == [] and all(key in metrics for key in METRIC_KEYS)
    assert metrics["lr"] == 2e-5  # baseline.learning_rate, constant
    assert not [name for name in trainable if torch.equal(params[name].detach(), before[name])]
    assert not [name for name, p in params.items()
                if not p.requires_grad and not torch.equal(p.detach(), before[name])]


def test_simcse_views_differ_by_attention_dropout_only(data, one_thread):
    """Llama has no hidden dropout: baseline.dropout lands on every attention module (not on
    model.config, so checkpoints keep the backbone's own), and makes the two views differ."""
    trainer = SimCSETrainer(_config(data, "simcse", **{"baseline.dropout": 0.1}))
    attention = [m for m in trainer.policy.modules() if hasattr(m, "attention_dropout")]
    assert len(attention) == 2 and all(m.attention_dropout == 0.1 for m in attention)
    assert trainer.policy.config.attention_dropout == 0.0
    metrics, _ = trainer.step(1)
    assert metrics["contrastive/pos_cos"] < 1 - 1e-6  # dropout views of a text differ
    with pytest.warns(UserWarning, match="identical"):
        quiet = SimCSETrainer(_config(data, "simcse", **{"baseline.dropout": 0.0,
                                                         "output_dir": str(data / "QUIET")}))
    metrics, _ = quiet.step(1)
    assert metrics["contrastive/pos_cos"] == pytest.approx(1.0, abs=1e-5)  # identical views


@pytest.mark.parametrize("method, mode", [("infonce", "unsupervised"), ("simcse", "supervised")])
def test_wrong_mode_is_refused(data, method, mode):
    config = _config(data, method, mode=mode)
    with pytest.raises(GraceInputError, match=f"method '{method}' needs mode"):
        trainer_class(method)(config)


# --------------------------------------------------------------------------- command line
# One run goes through a fresh process (the exit code); the others call ``grace.cli.main`` in
# this process: the same parsing and dispatch, without 5-10 s of imports per run.


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _argv(method: str, *args: str, mode: str | None = None) -> list[str]:
    default_mode, name = METHOD[method]
    return ["train", "--model", "tiny-random", "--method", method, "--mode", mode or default_mode,
            "--data", name, "--output-dir", "OUT", "--batch-size", "2", *args]


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def _check_run(out: Path, steps: int) -> list[dict]:
    checkpoint = out / f"checkpoint-{steps}"
    assert (checkpoint / "model.safetensors").is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == steps
    rows = _metrics(out)
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    assert all(key in row for row in rows for key in METRIC_KEYS)
    return rows


def test_cli_infonce_run(data):
    command = [sys.executable, "-m", "grace.cli", *_argv("infonce", "--max-steps", "2")]
    result = subprocess.run(command, cwd=data, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint-2" in result.stdout
    _check_run(data / "OUT", 2)


def test_cli_simcse_run_and_resume(data, monkeypatch, capsys, one_thread):
    """2 steps, then the same command with --max-steps 3 resumes at step 3; every step is logged
    once, and the steps match an uninterrupted 3-step run (dropout RNG included)."""
    from grace.cli import main

    monkeypatch.chdir(data)
    assert main(_argv("simcse", "--max-steps", "2")) == 0
    _check_run(data / "OUT", 2)
    assert main(_argv("simcse", "--max-steps", "3")) == 0
    captured = capsys.readouterr()
    assert "resuming from OUT/checkpoint-2 (step 2)" in captured.out + captured.err
    rows = _check_run(data / "OUT", 3)

    straight = _config(data, "simcse", max_steps=3, output_dir=str(data / "STRAIGHT"))
    trainer_class("simcse")(straight).train()
    for row, ref in zip(rows, _metrics(data / "STRAIGHT"), strict=True):
        for key in ("contrastive/loss", "contrastive/pos_cos", "contrastive/grad_norm"):
            assert row[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), (row["step"], key)


def test_cli_wrong_mode_is_one_line_exit_2(data, monkeypatch, capsys):
    from grace.cli import main

    monkeypatch.chdir(data)
    assert main(_argv("infonce", "--max-steps", "1", mode="unsupervised")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == ("grace: error: method 'infonce' needs mode supervised (got mode "
                        "'unsupervised'): pass --mode supervised")
    assert not (data / "OUT").exists()
