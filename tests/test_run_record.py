"""What a run leaves in its output folder stays true: a nan / inf step stops the run without
saving it (grace.training.loop), a rerun with other settings is refused unless overridden and
never rewrites the run's recorded config (grace.training.checkpoint), and reruns repeat the
run's numbers (bitwise on one thread; to a stated tolerance on two)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sample_data import TEXTS
from safetensors.torch import load_file

from grace.config.schema import load_config
from grace.errors import GraceInputError, NonFiniteTrainingError
from grace.training.checkpoint import HISTORY, RECORD, check_config_changes
from grace.train import train


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("".join(text + "\n" for text in TEXTS))
    return path


def _grace(texts: Path, out: Path, **extra):
    return load_config(None, {
        "model.name": "tiny-random", "mode": "unsupervised", "data.path": str(texts),
        "output_dir": str(out), "batch_size": 2, "max_steps": 2, "save_every": 1,
        "rollout.num_rollouts": 2, "rollout.max_new_tokens": 4, "rollout.micro_batch_size": 8,
        "optim.num_mini_batches": 2, "reward.penalize_truncation": False,
        "optim.learning_rate": 1e-3, **extra})


def _weights(checkpoint: Path) -> dict:
    return load_file(checkpoint / "model.safetensors")


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- nan / inf guard


def test_a_nan_grace_loss_stops_the_run_and_saves_nothing_of_it(tmp_path, texts, monkeypatch, one_thread):
    """Step 2's policy loss is made nan: the run stops naming step 2 and the nan loss, step 1's
    checkpoint stays, no checkpoint-2 is written, and the weights in memory are still
    step 1's (the optimizer never stepped on the nan gradient)."""
    import grace.grpo.trainer as grpo
    from grace.grpo.trainer import GraceTrainer

    real_loss, real_update = grpo.policy_loss, GraceTrainer.update_stage

    def nan_loss(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        return loss * float("nan"), stats

    def update(self, batch, step):
        if step == 2:
            monkeypatch.setattr(grpo, "policy_loss", nan_loss)
        return real_update(self, batch, step)

    monkeypatch.setattr(GraceTrainer, "update_stage", update)
    out = tmp_path / "OUT"
    trainer = GraceTrainer(_grace(texts, out, max_steps=3))
    with pytest.raises(NonFiniteTrainingError) as err:
        trainer.train()
    message = str(err.value)
    assert message.startswith("training stopped at step 2: ")
    assert "the loss is nan" in message
    assert f"last checkpoint: {out / 'checkpoint-1'}" in message
    assert err.value.exit_code == 3
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert _steps(out) == [1]
    saved = _weights(out / "checkpoint-1")
    for name, p in trainer.policy.named_parameters():
        assert torch.isfinite(p).all(), name
        if name in saved:
            assert torch.equal(p.detach(), saved[name]), name


def test_an_inf_contrastive_loss_is_one_line_exit_3_and_saves_nothing_of_it(
        tmp_path, texts, monkeypatch, capsys, one_thread):
    """The baselines share the guard: SimCSE's loss made inf at its second call (step 2) stops
    `grace train` with one line and exit code 3; checkpoint-1 stays, no checkpoint-2."""
    import grace.contrastive.trainers as contrastive
    from grace.cli import main

    real, calls = contrastive.simcse_unsup, []

    def inf_at_step_2(*args, **kwargs):
        calls.append(1)
        loss, stats = real(*args, **kwargs)
        return (loss + float("inf") if len(calls) == 2 else loss), stats

    monkeypatch.setattr(contrastive, "simcse_unsup", inf_at_step_2)
    out = tmp_path / "OUT"
    code = main(["train", "--model", "tiny-random", "--method", "simcse", "--mode", "unsupervised",
                 "--data", str(texts), "--batch-size", "2", "--max-steps", "3", "--save_every", "1",
                 "--output-dir", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    errors = [line for line in lines if line.startswith("grace: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines)
    assert errors[0].startswith("grace: error: training stopped at step 2: ")
    assert "the loss is inf" in errors[0]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert all(torch.isfinite(t).all() for t in _weights(out / "checkpoint-1").values())


# --------------------------------------------------------------------------- the run record


def test_a_rerun_with_other_settings_is_refused_in_one_line_and_changes_nothing(tmp_path, texts, one_thread):
    """A finished run, then the same command with --model.dtype float16 through the command
    line: exit 2, one line listing the key as old -> new, before anything loads; the record and
    the checkpoints are as they were."""
    out = tmp_path / "OUT"
    train(_grace(texts, out, max_steps=1))
    record = (out / RECORD).read_bytes()
    command = [sys.executable, "-m", "grace.cli", "train", "--model", "tiny-random", "--mode",
               "unsupervised", "--data", str(texts), "--output-dir", str(out), "--batch-size", "2",
               "--max-steps", "2", "--save_every", "1", "--rollout.num_rollouts", "2",
               "--rollout.max_new_tokens", "4", "--rollout.micro_batch_size", "8",
               "--optim.num_mini_batches", "2", "--reward.penalize_truncation", "false",
               "--optim.learning_rate", "1e-3", "--model.dtype", "float16"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{out} holds a run with other settings" in lines[0]
    assert "model.dtype 'float32' -> 'float16'" in lines[0]
    assert "max_steps" not in lines[0]  # a budget may change on resume
    assert "--override-config" in lines[0]
    assert (out / RECORD).read_bytes() == record
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / HISTORY).exists()


def test_budgets_may_change_and_an_override_continues_with_the_record_kept(tmp_path, texts, one_thread):
    """Resuming with a bigger max_steps is allowed; another learning rate is refused unless
    override_config=True. The record keeps the first run's settings, config_history.jsonl lists
    each change with the step it applies after, and the new checkpoint holds the settings it
    was trained with; the same new settings again are then no change at all."""
    out = tmp_path / "OUT"
    train(_grace(texts, out, max_steps=1))
    record = (out / RECORD).read_bytes()

    train(_grace(texts, out, max_steps=2))  # a budget: no override needed
    assert _steps(out) == [1, 2]
    with pytest.raises(GraceInputError, match=r"optim.learning_rate 0.001 -> 0.002"):
        train(_grace(texts, out, max_steps=3, **{"optim.learning_rate": 2e-3}))
    assert not (out / "checkpoint-3").exists()
    train(_grace(texts, out, max_steps=3, **{"optim.learning_rate": 2e-3}), override_config=True)
    assert _steps(out) == [1, 2, 3]

    assert (out / RECORD).read_bytes() == record  # never rewritten
    assert load_config(str(out / RECORD)).optim.learning_rate == 1e-3
    assert load_config(str(out / "checkpoint-3" / RECORD)).optim.learning_rate == 2e-3
    history = [json.loads(x) for x in (out / HISTORY).read_text().splitlines()]
    assert [h["after_step"] for h in history] == [1, 2]
    assert history[0]["changes"] == {"max_steps": {"old": 1, "new": 2}}
    assert history[1]["changes"] == {"max_steps": {"old": 2, "new": 3},
                                     "optim.learning_rate": {"old": 1e-3, "new": 2e-3}}
    train(_grace(texts, out, max_steps=3, **{"optim.learning_rate": 2e-3}))  # nothing changes now
    assert len((out / HISTORY).read_text().splitlines()) == 2


def test_a_run_stopped_before_its_first_checkpoint_is_compared_with_its_record(tmp_path):
    """No checkpoint yet: the folder's record is what a rerun is compared with; a new folder and
    the recorded settings themselves pass."""
    out = tmp_path / "OUT"
    config = load_config(None, {"output_dir": str(out), "model.name": "tiny-random"})
    check_config_changes(out, config)  # no folder yet
    out.mkdir()
    config.save(out / RECORD)
    check_config_changes(out, config)
    check_config_changes(out, load_config(None, {"output_dir": str(out), "model.name": "tiny-random",
                                                 "max_minutes": 5, "report_to": "tensorboard"}))
    changed = load_config(None, {"output_dir": str(out), "model.name": "tiny-random", "seed": 1,
                                 "rollout.top_p": 0.9})
    with pytest.raises(GraceInputError) as err:
        check_config_changes(out, changed)
    assert "seed 0 -> 1" in str(err.value) and "rollout.top_p 1.0 -> 0.9" in str(err.value)
    check_config_changes(out, changed, override=True)


# --------------------------------------------------------------------------- repeatability


def test_on_one_thread_a_rerun_and_a_resume_end_bitwise_equal(tmp_path, texts, one_thread):
    """With one torch thread (the one_thread fixture) two identical runs, and a run stopped after
    step 1 and resumed, end with bitwise equal weights at every checkpoint."""
    train(_grace(texts, tmp_path / "A"))
    train(_grace(texts, tmp_path / "B"))
    train(_grace(texts, tmp_path / "R", max_steps=1))
    train(_grace(texts, tmp_path / "R"))
    for step in (1, 2):
        a = _weights(tmp_path / "A" / f"checkpoint-{step}")
        for other in ("B", "R"):
            b = _weights(tmp_path / other / f"checkpoint-{step}")
            assert all(torch.equal(a[name], b[name]) for name in a), (other, step)


def test_on_two_threads_identical_runs_agree_to_float_rounding(tmp_path, texts):
    """With two threads the CPU kernels' sums vary from run to run: two identical 2-step runs
    at lr 1e-3 agree within 1e-4 (about 1e-5 apart when measured), not bitwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(_grace(texts, tmp_path / "A"))
        train(_grace(texts, tmp_path / "B"))
    finally:
        torch.set_num_threads(threads)
    a, b = _weights(tmp_path / "A" / "checkpoint-2"), _weights(tmp_path / "B" / "checkpoint-2")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-4)
