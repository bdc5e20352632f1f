"""`grace train` end to end on the tiny random model: through the real command line (a fresh
Python process per run), plus one training step at the library level that checks every
trainable parameter moved.

The random model almost never samples EOS, so every rollout is cut at ``max_new_tokens``; with
the default truncation penalty every reward is then -1, every advantage 0 and the gradient 0.
Runs that must produce a gradient pass ``--reward.penalize_truncation false``.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sample_data import TEXTS, TRIPLETS
from safetensors.torch import load_file

NLI_TRIPLETS = Path("/work/shared/data/triplets/nli-triplets.jsonl")
SMALL = [
    "--model", "tiny-random", "--batch-size", "2", "--rollout.num_rollouts", "2",
    "--rollout.max_new_tokens", "8", "--rollout.micro_batch_size", "8",
    "--optim.num_mini_batches", "2",
]
# Runs that must produce a real gradient (see the module docstring).
LEARN = ["--reward.penalize_truncation", "false", "--optim.learning_rate", "1e-2",
         "--optim.weight_decay", "0"]
METRIC_KEYS = (
    "reward/contrastive", "reward/consistency", "reward/hard", "reward/mean", "advantage/std",
    "policy/clip_frac", "rationale/length_mean", "rationale/truncation_rate", "time/step_s",
    "throughput/tokens_per_s", "rationale/copy_rate", "rationale/distinct_2",
    "rationale/empty_rate", "rationale/eos_rate", "rationale/repetition_rate",
    "rationale/template_rate",
)


def _env() -> dict:
    # One thread: the model is tiny, and on a busy 2-core machine two OpenMP threads per process
    # spin against each other (10x slower).
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "grace.cli", "train", *args]


def grace_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=600)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def _samples(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "samples.jsonl").read_text().splitlines()]


def _state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("".join(text + "\n" for text in TEXTS))
    return path


@pytest.fixture
def triplets(tmp_path: Path) -> Path:
    """Six (query, positive, negative) lines: the shared NLI sample if present, else our own."""
    path = tmp_path / "triplets.jsonl"
    if NLI_TRIPLETS.is_file():
        lines = NLI_TRIPLETS.read_text(encoding="utf-8").splitlines()[:6]
    else:
        lines = [json.dumps(dict(zip(("query", "positive", "negative"), row))) for row in TRIPLETS]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- training runs


def test_unsupervised_run_writes_checkpoint_and_metrics(tmp_path, texts):
    """The README command on tiny settings; full fine-tuning with a real gradient, so the saved
    weights must all differ from the base model's."""
    from grace.models.backbones import load_backbone

    result = _ok(grace_train(tmp_path, "--method", "grace", "--mode", "unsupervised", "--data",
                             texts.name, "--max-steps", "2", "--output-dir", "OUT", *SMALL, *LEARN))
    out = tmp_path / "OUT"
    assert "checkpoint-2" in result.stdout
    checkpoint = out / "checkpoint-2"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "optimizer.bin",
                 "scheduler.bin", "random_states_0.pkl", "grace_config.yaml"):
        assert (checkpoint / name).is_file(), name
    assert _state(checkpoint)["step"] == 2
    rows = _metrics(out)
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        missing = [key for key in METRIC_KEYS if key not in row]
        assert not missing
        assert all(isinstance(row[key], (int, float)) for key in METRIC_KEYS)
        assert row["rationale/length_mean"] <= 8 and 0 <= row["rationale/truncation_rate"] <= 1
        assert row["rationale/eos_rate"] == pytest.approx(1 - row["rationale/truncation_rate"])
        assert 0 <= row["rationale/copy_rate"] <= 1 and 0 < row["rationale/distinct_2"] <= 1
        assert row["advantage/std"] > 0

    saved = load_file(checkpoint / "model.safetensors")
    base, _ = load_backbone("tiny-random")
    base_weights = {name: p.detach() for name, p in base.named_parameters()}
    assert set(base_weights) <= set(saved) | {"lm_head.weight"}  # lm_head is tied to the embeddings
    unchanged = [name for name, w in base_weights.items()
                 if name in saved and torch.equal(saved[name], w)]
    assert not unchanged
    assert all(torch.isfinite(t).all() for t in saved.values())
    reloaded, _ = load_backbone(str(checkpoint))  # the checkpoint is a loadable model folder
    for name, p in reloaded.named_parameters():
        if name in saved:
            assert torch.equal(p.detach(), saved[name]), name


@pytest.mark.parametrize("variant, steps", [("reference", 2), ("decoupled", 1)])
def test_supervised_variants_train(tmp_path, triplets, variant, steps):
    _ok(grace_train(tmp_path, "--mode", "supervised", "--variant", variant, "--data", triplets.name,
                    "--max-steps", str(steps), "--output-dir", "OUT", *SMALL))
    out = tmp_path / "OUT"
    assert _state(out / f"checkpoint-{steps}")["step"] == steps
    assert (out / f"checkpoint-{steps}" / "model.safetensors").is_file()
    rows = _metrics(out)
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    assert all(key in rows[-1] for key in METRIC_KEYS)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_one_step_changes_every_trainable_parameter(tmp_path, texts, lora, one_thread):
    """TRL-style: after one step every trainable parameter moved (with weight decay off, so only
    the gradient moves them) and, with LoRA, no frozen base weight did."""
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    overrides = {
        "model.name": "tiny-random", "model.lora": lora, "mode": "unsupervised",
        "data.path": str(texts), "output_dir": str(tmp_path / "OUT"), "batch_size": 2,
        "max_steps": 1, "rollout.num_rollouts": 2, "rollout.max_new_tokens": 8,
        "rollout.micro_batch_size": 8, "optim.num_mini_batches": 2,
        "optim.learning_rate": 1e-2, "optim.weight_decay": 0.0,
        "reward.penalize_truncation": False,
    }
    trainer = GraceTrainer(load_config(None, overrides))
    params = dict(trainer.policy.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    trainable = [name for name, p in params.items() if p.requires_grad]
    assert trainable and (len(trainable) < len(params)) == lora
    metrics, _ = trainer.step(1)
    assert torch.isfinite(torch.tensor(metrics["policy/loss"]))
    assert metrics["advantage/std"] > 0 and metrics["policy/grad_norm"] > 0
    unchanged = [name for name in trainable if torch.equal(params[name].detach(), before[name])]
    assert not unchanged
    frozen_changed = [name for name, p in params.items()
                      if not p.requires_grad and not torch.equal(p.detach(), before[name])]
    assert not frozen_changed


@pytest.mark.parametrize("lora", [False, True], ids=["full-frozen-copy", "lora-adapter-off"])
def test_kl_to_the_initial_policy_is_measured(tmp_path, texts, lora, one_thread):
    """With kl_coef > 0 the reference is the initial policy (a frozen copy, or the LoRA adapter
    switched off): zero on the first mini-batch, positive once the policy has moved."""
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    overrides = {
        "model.name": "tiny-random", "model.lora": lora, "mode": "unsupervised",
        "data.path": str(texts), "output_dir": str(tmp_path / "OUT"), "batch_size": 2,
        "max_steps": 1, "rollout.num_rollouts": 2, "rollout.max_new_tokens": 8,
        "optim.num_mini_batches": 2, "optim.learning_rate": 1e-2, "optim.kl_coef": 0.1,
        "reward.penalize_truncation": False,
    }
    trainer = GraceTrainer(load_config(None, overrides))
    assert (trainer.ref_model is None) == lora
    metrics, _ = trainer.step(1)
    assert metrics["policy/kl"] > 0 and torch.isfinite(torch.tensor(metrics["policy/loss"]))


# --------------------------------------------------------------------------- bad inputs

TRIPLET = '{"query": "a", "positive": "b", "negative": "c"}\n'
BAD_INPUTS = {
    "bad-json": ("bad.jsonl", TRIPLET + '{"query": "a",\n' + TRIPLET, "supervised",
                 ["bad.jsonl:2", "invalid JSON"]),
    "missing-field": ("missing.jsonl", TRIPLET * 2 + '{"query": "a", "positive": "b"}\n',
                      "supervised", ["missing.jsonl:3", "'negative'", "missing"]),
    "empty-line": ("texts.txt", "one text\n\nthree\n", "unsupervised", ["texts.txt:2", "empty"]),
    "empty-field": ("empty.jsonl", TRIPLET + '{"query": "a", "positive": " ", "negative": "c"}\n',
                    "supervised", ["empty.jsonl:2", "'positive'", "empty"]),
}


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_data_is_one_line_naming_file_line_and_field(tmp_path, case):
    name, content, mode, expected = BAD_INPUTS[case]
    (tmp_path / name).write_text(content)
    line = _one_line_error(grace_train(tmp_path, "--mode", mode, "--data", name, "--max-steps", "1",
                                       "--output-dir", "OUT", *SMALL))
    for part in expected:
        assert part in line
    assert not (tmp_path / "OUT" / "checkpoint-1").exists()


@pytest.mark.parametrize("extra, expected", [
    (["--model", "no-such-model-xyz"], ["unknown model", "no-such-model-xyz"]),
    (["--data", "no-such-file.txt"], ["not found", "no-such-file.txt"]),
    (["--config", "no-such-config.yaml"], ["not found", "no-such-config.yaml"]),
], ids=["unknown-model", "missing-data", "missing-config"])
def test_bad_arguments_are_one_line(tmp_path, texts, extra, expected):
    # argparse keeps the last --model / --data / --config, so ``extra`` wins over those before it
    line = _one_line_error(grace_train(tmp_path, "--mode", "unsupervised", "--data", texts.name,
                                       "--max-steps", "1", "--output-dir", "OUT", *SMALL, *extra))
    for part in expected:
        assert part in line


# --------------------------------------------------------------------------- kill and resume

COMPARED = ("reward/contrastive", "reward/consistency", "reward/hard", "reward/mean",
            "advantage/std", "policy/loss", "policy/clip_frac", "policy/grad_norm")
# absolute tolerance per key: the tiny random model's rollouts of a group get nearly equal
# rewards, so the std of their advantages is ~1e-4 and ill-conditioned (two fresh runs of the
# same seed once differed by 1.3e-6 there, from float noise in the rewards far below 1e-6)
ABS = {"advantage/std": 1e-5}


def test_resume_after_sigkill_continues_exactly(tmp_path, texts):
    """Kill -9 after the second checkpoint, truncate the newest complete checkpoint's weights
    and plant a half-written checkpoint folder, rerun the same command: it reports the bad
    checkpoint, takes over the dead run's lock, resumes from the previous good checkpoint, logs
    every step once, and ends where an uninterrupted run ends."""
    args = ["--mode", "unsupervised", "--data", texts.name, "--max-steps", "8", "--save_every",
            "2", "--output-dir", "OUT", *SMALL, "--reward.penalize_truncation", "false",
            "--optim.learning_rate", "1e-3"]
    out = tmp_path / "OUT"
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(_command(*args), cwd=tmp_path, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (out / "checkpoint-4").is_dir() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint-4 after 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (out / "checkpoint-8").exists()

    done = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if p.suffix != ".tmp")
    newest = out / f"checkpoint-{done[-1]}"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated write
    planted = out / f"checkpoint-{done[-1] + 2}.tmp"  # as if killed while saving the next one
    planted.mkdir(exist_ok=True)
    (planted / "trainer_state.json").write_text(json.dumps({"step": done[-1] + 2}))
    (planted / "model.safetensors").write_bytes(b"half-written")

    resumed = _ok(grace_train(tmp_path, *args))
    log = resumed.stdout + resumed.stderr
    assert f"{Path('OUT', newest.name, 'model.safetensors')}: " in log and "truncated" in log
    assert f"resuming from checkpoint-{done[-2]} instead" in log
    assert "was left by a run that is no longer running" in log  # the dead run's lock
    resumed_from = Path("OUT") / f"checkpoint-{done[-2]}"
    assert f"resuming from {resumed_from} (step {done[-2]})" in log
    assert _state(out / "checkpoint-8")["step"] == 8
    assert not list(out.glob("*.tmp"))
    rows = _metrics(out)
    assert [row["step"] for row in rows] == list(range(1, 9))

    # the same command, never interrupted, in another folder
    straight = [a if a != "OUT" else "STRAIGHT" for a in args]
    _ok(grace_train(tmp_path, *straight))
    for row, ref in zip(rows, _metrics(tmp_path / "STRAIGHT")):
        for key in COMPARED:
            assert row[key] == pytest.approx(ref[key], rel=1e-4, abs=ABS.get(key, 1e-6)), (row["step"], key)
    final = load_file(out / "checkpoint-8" / "model.safetensors")
    ref_final = load_file(tmp_path / "STRAIGHT" / "checkpoint-8" / "model.safetensors")
    for name, tensor in ref_final.items():
        torch.testing.assert_close(final[name], tensor, rtol=1e-4, atol=1e-6)


def test_a_checkpoint_of_the_older_layout_still_resumes_exactly(tmp_path, texts):
    """Checkpoints written before accelerate's save_state (optimizer.pt, scheduler.pt,
    rng_state_0.pt, no manifest) resume through their own loader and end where a straight run
    ends."""
    args = ["--mode", "unsupervised", "--data", texts.name, "--max-steps", "2", "--save_every",
            "2", "--output-dir", "OUT", *SMALL, *LEARN]
    _ok(grace_train(tmp_path, *args))
    old = tmp_path / "OUT" / "checkpoint-2"
    # the older writer: torch.save of the state dicts, its own RNG dict
    torch.save(torch.load(old / "optimizer.bin", weights_only=False), old / "optimizer.pt")
    torch.save(torch.load(old / "scheduler.bin", weights_only=False), old / "scheduler.pt")
    rng = torch.load(old / "random_states_0.pkl", weights_only=False)
    torch.save({"python": rng["random_state"], "numpy": rng["numpy_random_seed"],
                "torch": rng["torch_manual_seed"], "cuda": None}, old / "rng_state_0.pt")
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                 "custom_checkpoint_0.pkl", "checkpoint_manifest.json"):
        (old / name).unlink()
    more = [a if a != "2" or prev != "--max-steps" else "4" for prev, a in zip([""] + args, args)]
    resumed = _ok(grace_train(tmp_path, *more))
    assert "resuming from OUT/checkpoint-2 (step 2)" in resumed.stdout + resumed.stderr
    straight = [a if a != "OUT" else "STRAIGHT" for a in more]
    _ok(grace_train(tmp_path, *straight))
    rows, ref = _metrics(tmp_path / "OUT"), _metrics(tmp_path / "STRAIGHT")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row, expected in zip(rows, ref):
        for key in COMPARED:
            assert row[key] == pytest.approx(expected[key], rel=1e-4, abs=ABS.get(key, 1e-6)), (row["step"], key)


def test_report_to_tensorboard_writes_the_metrics_as_events(tmp_path, texts):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _ok(grace_train(tmp_path, "--mode", "unsupervised", "--data", texts.name, "--max-steps", "2",
                    "--output-dir", "OUT", "--report-to", "tensorboard", *SMALL))
    logs = tmp_path / "OUT" / "tensorboard"
    events = EventAccumulator(str(logs)).Reload()
    loss = events.Scalars("policy/loss")
    assert [e.step for e in loss] == [1, 2]
    rows = _metrics(tmp_path / "OUT")  # metrics.jsonl is still written, with the same values
    assert [e.value for e in loss] == pytest.approx([r["policy/loss"] for r in rows], rel=1e-6)
    assert "reward/mean" in events.Tags()["scalars"]


def test_an_unknown_tracker_is_one_line(tmp_path, texts):
    line = _one_line_error(grace_train(tmp_path, "--mode", "unsupervised", "--data", texts.name,
                                       "--max-steps", "1", "--output-dir", "OUT", "--report-to",
                                       "tensorbored", *SMALL))
    assert "unknown tracker 'tensorbored'" in line


def test_no_good_checkpoint_stops_with_exit_2_naming_the_file(tmp_path, texts):
    args = ["--mode", "unsupervised", "--data", texts.name, "--max-steps", "2", "--output-dir",
            "OUT", *SMALL]
    _ok(grace_train(tmp_path, *args))
    (tmp_path / "OUT" / "checkpoint-2" / "trainer_state.json").write_text('{"step": 2,')
    line = _one_line_error(grace_train(tmp_path, *args))
    assert "no usable checkpoint" in line and "checkpoint-2/trainer_state.json" in line


def test_a_second_run_on_the_same_output_dir_exits_2(tmp_path, texts):
    args = ["--mode", "unsupervised", "--data", texts.name, "--max-steps", "1000",
            "--save_every", "1000", "--output-dir", "OUT", *SMALL]
    lock = tmp_path / "OUT" / ".grace-train.lock"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(_command(*args), cwd=tmp_path, env=_env(), stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not (lock.is_file() and lock.read_text().startswith("PID")):
                assert first.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "first.log").read_text()[-3000:]
                time.sleep(0.05)
            line = _one_line_error(grace_train(tmp_path, *args))
            assert f"used by another training run (PID {first.pid} on" in line and "OUT/.grace-train.lock" in line
            assert first.poll() is None  # the first run goes on
        finally:
            first.kill()
            first.wait()
    from grace.training.run_lock import RunLock

    RunLock(tmp_path / "OUT").acquire().release()  # the killed run's lock is free again


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_bf16_rollout_copy_follows_the_float32_policy(tmp_path, texts, lora, one_thread):
    """rollout.dtype=bfloat16 + mixed_precision=bf16: rollouts come from a bf16 copy refreshed
    from the float32 policy every step; the policy's own log-probs are the old ones."""
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    overrides = {
        "model.name": "tiny-random", "model.lora": lora, "model.mixed_precision": "bf16",
        "rollout.dtype": "bfloat16", "mode": "unsupervised", "data.path": str(texts),
        "output_dir": str(tmp_path / "OUT"), "batch_size": 2, "max_steps": 2,
        "rollout.num_rollouts": 2, "rollout.max_new_tokens": 8, "optim.learning_rate": 1e-2,
        "reward.penalize_truncation": False,
    }
    trainer = GraceTrainer(load_config(None, overrides))
    metrics, _ = trainer.step(1)
    policy = dict(trainer.policy.named_parameters())
    assert all(p.dtype == torch.float32 for p in policy.values())  # master weights stay float32
    assert metrics["policy/rollout_logprob_gap"] < 0.5 and torch.isfinite(torch.tensor(metrics["policy/loss"]))
    copy_ = trainer.rollout_policy()  # refreshed from the updated policy
    for name, param in copy_.named_parameters():
        assert param.dtype == torch.bfloat16
        assert torch.equal(param, policy[name].detach().to(torch.bfloat16)), name
    assert trainer.step(2)[0]["step"] == 2


def test_mixed_precision_old_logprobs_come_from_the_updates_forward(tmp_path, texts, one_thread):
    """mixed_precision=bf16 with rollouts on the policy itself: the engine decodes outside
    accelerate's autocast (float32 log-probs), the update runs inside it; the old log-probs are
    recomputed by the update's own forward, so the first PPO ratio is exactly 1."""
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    trainer = GraceTrainer(load_config(None, {
        "model.name": "tiny-random", "model.mixed_precision": "bf16", "mode": "unsupervised",
        "data.path": str(texts), "output_dir": str(tmp_path / "OUT"), "batch_size": 2,
        "max_steps": 1, "rollout.num_rollouts": 2, "rollout.max_new_tokens": 8,
    }))
    batch = trainer.rollout_stage(1)
    trainer.reward_stage(batch)
    trainer.model.train()
    with torch.no_grad():
        update_forward = trainer._logprobs(batch.trained.seqs, 1.0)  # the update's forward
    torch.testing.assert_close(batch.old_logprobs, update_forward.float(), atol=1e-6, rtol=0)
    assert (batch.trained.logprobs - update_forward).abs().max() > 1e-4  # what the engine gave
    trainer.close()


def test_token_mean_over_micro_batches_gives_the_one_batch_gradient(tmp_path, texts, one_thread):
    """The update weights each micro-batch's token-mean loss by its share of the mini-batch's
    tokens: micro-batches of 1 sequence give the same gradient as one micro-batch of all."""
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    trainer = GraceTrainer(load_config(None, {
        "model.name": "tiny-random", "mode": "unsupervised", "data.path": str(texts),
        "output_dir": str(tmp_path / "OUT"), "batch_size": 2, "max_steps": 1,
        "rollout.num_rollouts": 3, "rollout.max_new_tokens": 8, "optim.num_mini_batches": 1,
        "reward.penalize_truncation": False, "rollout.micro_batch_size": 64,
    }))
    batch = trainer.rollout_stage(1)
    trainer.reward_stage(batch)
    assert batch.advantages.abs().max() > 0
    import dataclasses

    mask = batch.trained.seqs.response_mask.clone()  # the tiny model never ends early:
    mask[0, 2:] = 0  # give rows different lengths, so that token and row weights differ
    mask[3, 5:] = 0
    seqs = dataclasses.replace(batch.trained.seqs, response_mask=mask)
    assert len(set(mask.sum(dim=1).tolist())) == 3
    grads = {}

    def capture(tag):
        def optimizer_step():
            grads[tag] = [p.grad.detach().clone() for p in trainer.policy.parameters() if p.grad is not None]
            trainer.optimizer.zero_grad(set_to_none=True)
            return 0.0
        return optimizer_step

    args = (seqs, batch.old_logprobs * mask, batch.ref_logprobs, batch.advantages, 1)
    trainer.optimizer_step = capture("one")
    trainer._update(*args)
    trainer.config.rollout.micro_batch_size = 1
    trainer.optimizer_step = capture("micro")
    trainer._update(*args)
    # the one micro-batch ran each prompt once for its 3 rollouts (optim.share_prompts); the
    # plain layout (every row with its prompt) gives the same gradient
    trainer.config.rollout.micro_batch_size = 64
    trainer.config.optim.share_prompts = False
    trainer.optimizer_step = capture("plain")
    trainer._update(*args)
    assert len(grads["one"]) == len(grads["micro"]) == len(grads["plain"]) > 0
    for a, b, c in zip(grads["one"], grads["micro"], grads["plain"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-7)
    trainer.close()


@pytest.mark.parametrize("variant", ["reference", "decoupled"])
def test_each_role_gets_its_rollouts_and_temperature(tmp_path, triplets, variant, monkeypatch, one_thread):
    """Which text is rolled out how often and at which temperature, and which embedding the
    reward reads as which role: swapping the query and the negative, or the two temperatures,
    fails here."""
    import grace.grpo.trainer as grpo_trainer
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer
    from grace.rollout.roles import reward_inputs

    calls = []
    real = grpo_trainer.generate_and_score

    def recording(model, tokenizer, prompts, **kwargs):
        texts = [tokenizer.decode(row[mask.bool()]) for row, mask in
                 zip(prompts.input_ids, prompts.attention_mask)]
        calls.append((texts, kwargs["num_samples"], kwargs["temperature"]))
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(grpo_trainer, "generate_and_score", recording)
    G = 3
    trainer = GraceTrainer(load_config(None, {
        "model.name": "tiny-random", "mode": "supervised", "reward.variant": variant,
        "data.path": str(triplets), "output_dir": str(tmp_path / "OUT"), "batch_size": 2,
        "max_steps": 1, "rollout.num_rollouts": G, "rollout.max_new_tokens": 4,
        "rollout.temperature": 0.9, "rollout.context_temperature": 0.4,
    }))
    records = trainer.order.batch(1)
    trainer.rollout_stage(1)
    (texts, counts, temps), = calls
    q, p, n = ([getattr(r, f) for r in records] for f in ("query", "positive", "negative"))
    if variant == "reference":  # q and d- once at the context temperature, d+ G times
        expected = [(t, 1, 0.4) for t in q + n] + [(t, G, 0.9) for t in p]
    else:  # decoupled: d- once; q and d+ G times each
        expected = [(t, 1, 0.4) for t in n] + [(t, G, 0.9) for t in q + p]
    assert [(c, t) for c, t in zip(counts, temps)] == [(c, t) for _, c, t in expected]
    for prompt, (text, _, _) in zip(texts, expected):
        assert text in prompt
    B = len(records)
    context = torch.arange(len(counts) - (2 * B if variant == "decoupled" else B), dtype=torch.float)[:, None]
    trained = torch.arange(100, 100 + G * (2 * B if variant == "decoupled" else B), dtype=torch.float)[:, None]
    emb, _ = reward_inputs("supervised", variant, context, trained, torch.zeros(len(trained), dtype=torch.bool), G)
    if variant == "reference":  # context rows: queries first, then negatives
        assert emb["query"][:, 0].tolist() == [0, 1] and emb["negative"][:, 0].tolist() == [2, 3]
        assert emb["positive"].shape == (B, G, 1)
    else:
        assert emb["negative"][:, 0].tolist() == [0, 1]
        assert emb["query"][0, :, 0].tolist() == [100, 101, 102]
        assert emb["positive"][0, :, 0].tolist() == [106, 107, 108]
    trainer.close()


def test_defaults_on_a_cpu_with_bf16_units_train_in_bf16(tmp_path, texts):
    """The default path of machines with AMX / AVX512-BF16 (model.mixed_precision auto -> bf16,
    rollout.dtype auto -> a bf16 copy), as `grace train` runs it there: a subprocess with the
    detection forced on; the steps finish with finite losses."""
    env = dict(_env(), GRACE_CPU_BF16="1")
    result = subprocess.run(
        _command("--model.name", "tiny-random", "--mode", "unsupervised", "--data.path", str(texts),
                 "--output_dir", str(tmp_path / "OUT"), "--batch_size", "2", "--max_steps", "2",
                 "--rollout.num_rollouts", "2", "--rollout.max_new_tokens", "6", *LEARN),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    _ok(result)
    rows = _metrics(tmp_path / "OUT")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["policy/loss"]) for r in rows)
    assert "policy/rollout_logprob_gap" in rows[0]  # recorded when a bf16 copy samples


def test_rollout_decode_reaches_the_engine(tmp_path, texts, monkeypatch, one_thread):
    """``rollout.decode`` is the engine's decoding step (here ``hf``: the HF decoder)."""
    import grace.grpo.trainer as grpo_trainer
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    seen = []
    real = grpo_trainer.generate_and_score

    def recording(model, tokenizer, prompts, **kwargs):
        seen.append(kwargs.get("decode"))
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(grpo_trainer, "generate_and_score", recording)
    trainer = GraceTrainer(load_config(None, {
        "model.name": "tiny-random", "mode": "unsupervised", "data.path": str(texts),
        "output_dir": str(tmp_path / "OUT"), "batch_size": 2, "max_steps": 1,
        "rollout.num_rollouts": 2, "rollout.max_new_tokens": 3, "rollout.decode": "hf",
    }))
    trainer.rollout_stage(1)
    assert seen == ["hf"]
    trainer.close()


@pytest.mark.parametrize("fused", [True, False])
def test_the_optimizer_is_torchs_fused_adamw_unless_turned_off(tmp_path, texts, fused):
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    overrides = {"model.name": "tiny-random", "mode": "unsupervised", "data.path": str(texts),
                 "output_dir": str(tmp_path / "OUT"), "batch_size": 2, "max_steps": 1}
    if not fused:
        overrides["optim.fused_adamw"] = False
    else:
        assert load_config(None, overrides).optim.fused_adamw  # the default
    trainer = GraceTrainer(load_config(None, overrides))
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper
    assert isinstance(inner, torch.optim.AdamW)
    assert inner.defaults["fused"] is (True if fused else None)
    trainer.close()


def test_a_time_budget_stops_and_checkpoints_and_a_rerun_does_nothing_more(tmp_path, texts):
    """--max-minutes: the run stops after the first step past the budget, checkpoints it (off
    the save_every grid) with its training time, and the same command again trains no step."""
    args = ["--mode", "unsupervised", "--data", texts.name, "--max-steps", "50", "--save_every",
            "25", "--max-minutes", "0.0001", "--output-dir", "OUT", *SMALL]
    first = _ok(grace_train(tmp_path, *args))
    out = tmp_path / "OUT"
    assert "time budget of 0.0001 min reached after step 1" in first.stdout + first.stderr
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-1"]
    state = _state(out / "checkpoint-1")
    rows = _metrics(out)
    assert len(rows) == 1 and state["train_seconds"] > 0
    assert rows[0]["time/train_min"] == pytest.approx(state["train_seconds"] / 60, abs=1e-4)
    again = _ok(grace_train(tmp_path, *args))
    assert "nothing to do" in again.stdout + again.stderr
    assert len(_metrics(out)) == 1


def test_a_time_budget_must_be_positive(tmp_path, texts):
    result = grace_train(tmp_path, "--mode", "unsupervised", "--data", texts.name,
                         "--max-minutes", "-1", "--output-dir", "OUT", *SMALL)
    assert result.returncode == 2 and "max_minutes must be > 0" in result.stderr


def test_balanced_pooling_trains_and_a_bad_pooling_is_named(tmp_path, texts):
    args = ["--mode", "unsupervised", "--data", texts.name, "--max-steps", "1", *SMALL]
    _ok(grace_train(tmp_path, *args, "--rollout.pooling", "balanced", "--output-dir", "OUT"))
    assert (tmp_path / "OUT" / "checkpoint-1").is_dir()
    bad = grace_train(tmp_path, *args, "--rollout.pooling", "max", "--output-dir", "BAD")
    assert bad.returncode == 2 and "rollout.pooling 'max' (choose mean, balanced or text:W, 0 < W < 1)" in bad.stderr


def _with_and_without(tmp_path: Path, texts: Path, flag: str, weight: str):
    """One seeded unsupervised step with near-greedy rollouts, run without and with ``flag
    weight`` (a reward penalty): -> (its arguments, both metrics rows, the logged samples paired)."""
    args = ["--mode", "unsupervised", "--data", texts.name, "--max-steps", "1", *SMALL, *LEARN,
            "--sample_every", "1", "--num_samples_logged", "2", "--rollout.temperature", "0.05"]
    _ok(grace_train(tmp_path, *args, "--output-dir", "PLAIN"))
    _ok(grace_train(tmp_path, *args, flag, weight, "--output-dir", "PEN"))
    pairs = list(zip(_samples(tmp_path / "PLAIN"), _samples(tmp_path / "PEN")))
    return args, _metrics(tmp_path / "PLAIN")[0], _metrics(tmp_path / "PEN")[0], pairs


def test_repetition_penalty_lowers_rewards_by_the_logged_amount(tmp_path, texts):
    """reward.repetition_penalty: the same seeded step with and without it (near-greedy
    rollouts of the random model loop, so there is something to penalise): the same rollouts,
    the logged penalty is the weight times the logged repetition rate, and each logged sample's
    reward is lower by at most the weight (a rate is at most 1)."""
    args, plain, pen, pairs = _with_and_without(tmp_path, texts, "--reward.repetition_penalty", "5")
    assert "reward/repetition_penalty" not in plain and pen["reward/repetition_penalty"] >= 0
    assert pen["rationale/repetition_rate"] == pytest.approx(plain["rationale/repetition_rate"])
    assert pen["reward/repetition_penalty"] == pytest.approx(5 * pen["rationale/repetition_rate"], abs=1e-6)
    assert pen["reward/repetition_penalty"] > 0
    for a, b in pairs:
        assert a["rationale"] == b["rationale"] and 0 < a["reward"] - b["reward"] <= 5
    bad = grace_train(tmp_path, *args, "--reward.repetition_penalty", "-1", "--output-dir", "BAD")
    assert bad.returncode == 2 and "reward.repetition_penalty must be >= 0" in bad.stderr


def test_template_penalty_lowers_rewards_by_the_logged_amount(tmp_path, texts):
    """reward.template_penalty: the same seeded step with and without it: the same rollouts,
    the logged penalty is the weight times the logged template rate, and no repetition
    penalty is logged (each penalty has its own metric)."""
    _, plain, pen, pairs = _with_and_without(tmp_path, texts, "--reward.template_penalty", "3")
    assert "reward/template_penalty" not in plain and "reward/repetition_penalty" not in pen
    assert pen["rationale/template_rate"] == pytest.approx(plain["rationale/template_rate"])
    assert pen["reward/template_penalty"] == pytest.approx(3 * pen["rationale/template_rate"], abs=1e-6)
    assert pen["reward/template_penalty"] > 0  # the random model's near-greedy rollouts share trigrams
    for a, b in pairs:
        assert a["rationale"] == b["rationale"] and 0 <= a["reward"] - b["reward"] <= 3


def test_copy_penalty_lowers_rewards_within_its_weight(tmp_path, texts):
    """reward.copy_penalty: the same seeded step with and without it: the same rollouts, only
    the copy penalty logged, each logged sample's reward lower by at most the weight (a copy
    rate is at most 1), and a negative weight refused."""
    args, plain, pen, pairs = _with_and_without(tmp_path, texts, "--reward.copy_penalty", "3")
    assert "reward/copy_penalty" not in plain and "reward/template_penalty" not in pen
    assert pen["rationale/copy_rate"] == pytest.approx(plain["rationale/copy_rate"])
    assert 0 <= pen["reward/copy_penalty"] <= 3
    for a, b in pairs:
        assert a["rationale"] == b["rationale"] and 0 <= a["reward"] - b["reward"] <= 3
    bad = grace_train(tmp_path, *args, "--reward.copy_penalty", "-1", "--output-dir", "BAD")
    assert bad.returncode == 2 and "reward.copy_penalty must be >= 0" in bad.stderr
