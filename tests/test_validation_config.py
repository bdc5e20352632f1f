"""Every config field is checked where it is defined (grace.config.schema), before any data or
model loads: ranges, finite numbers, known choices. A failure names the field and the value, and
the command line prints it in one line with exit code 2 and no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grace.config.methods import UNDRIVEN_LR_SCHEDULERS, lr_schedulers
from grace.config.schema import load_config
from grace.errors import GraceInputError

# (key, value, what the message must hold): every one of these was accepted, or ended in a
# traceback, before the checks
BAD = [
    ("rollout.temperature", "-1", "rollout.temperature must be > 0 and finite for GRPO rollouts", "-1.0"),
    ("rollout.temperature", "0", "0 would make every rollout of a group identical", "0.0"),
    ("rollout.temperature", "nan", "rollout.temperature must be > 0", "nan"),
    ("rollout.top_p", "2", "rollout.top_p must be in (0, 1]", "2.0"),
    ("rollout.top_p", "0", "rollout.top_p must be in (0, 1]", "0.0"),
    ("rollout.context_temperature", "-0.5", "rollout.context_temperature must be >= 0", "-0.5"),
    ("rollout.micro_batch_size", "0", "rollout.micro_batch_size must be >= 1", "0"),
    ("reward.scale", "nan", "reward.scale must be > 0 and finite", "nan"),
    ("reward.scale", "0", "reward.scale must be > 0 and finite", "0.0"),
    ("reward.consistency_weight", "inf", "reward.consistency_weight must be >= 0 and finite", "inf"),
    ("reward.hard_weight", "-0.2", "reward.hard_weight must be >= 0 and finite", "-0.2"),
    ("reward.truncation_penalty", "-inf", "reward.truncation_penalty must be finite", "-inf"),
    ("reward.repetition_penalty", "inf", "reward.repetition_penalty must be >= 0", "inf"),
    ("optim.learning_rate", "-1", "optim.learning_rate must be > 0 and finite", "-1.0"),
    ("optim.learning_rate", "inf", "optim.learning_rate must be > 0 and finite", "inf"),
    ("optim.warmup_steps", "-5", "optim.warmup_steps must be >= 0", "-5"),
    ("optim.lr_scheduler", "bogus", "optim.lr_scheduler 'bogus' (choose linear, cosine", "bogus"),
    ("optim.lr_scheduler", "reduce_lr_on_plateau", "optim.lr_scheduler 'reduce_lr_on_plateau'", "(choose"),
    ("optim.weight_decay", "-0.01", "optim.weight_decay must be >= 0", "-0.01"),
    ("optim.clip_low", "1", "optim.clip_low must be in (0, 1)", "1.0"),
    ("optim.clip_high", "0", "optim.clip_high must be > 0", "0.0"),
    ("optim.dual_clip", "0.5", "optim.dual_clip must be > 1 and finite, or null", "0.5"),
    ("optim.kl_coef", "nan", "optim.kl_coef must be >= 0", "nan"),
    ("optim.max_grad_norm", "0", "optim.max_grad_norm must be > 0", "0.0"),
    ("model.dtype", "int8", "model.dtype 'int8' (choose float32, bfloat16, float16)", "int8"),
    ("model.lora_rank", "0", "model.lora_rank must be >= 1", "0"),
    ("model.lora_dropout", "1", "model.lora_dropout must be in [0, 1)", "1.0"),
    ("data.max_prompt_tokens", "0", "data.max_prompt_tokens must be >= 1", "0"),
    ("baseline.learning_rate", "0", "baseline.learning_rate must be > 0", "0.0"),
    ("baseline.temperature", "inf", "baseline.temperature must be > 0", "inf"),
    ("llm2vec_gen.align_weight", "inf", "llm2vec_gen.align_weight must be >= 0", "inf"),
    ("llm2vec_gen.response_temperature", "-1", "llm2vec_gen.response_temperature must be >= 0", "-1.0"),
    ("seed", "-1", "seed must be in [0, 2**32)", "-1"),
    ("sample_every", "-1", "sample_every must be >= 0", "-1"),
    ("max_minutes", "inf", "max_minutes must be > 0 and finite, or null", "inf"),
]


@pytest.mark.parametrize("key, value, rule, shown", BAD, ids=[f"{k}={v}" for k, v, *_ in BAD])
def test_a_bad_value_names_the_field_and_the_value(key, value, rule, shown):
    with pytest.raises(GraceInputError) as err:
        load_config(None, {key: value})
    message = str(err.value)
    assert message.startswith("invalid config: ") and rule in message and shown in message


def test_defaults_and_packaged_configs_pass():
    load_config(None, {})
    for preset in ("sup-nli", "unsup-wiki", "demo-unsup-lee", "infonce-nli", "simcse-wiki",
                   "llm2vec-gen"):
        load_config(preset)


def test_every_accepted_lr_scheduler_runs_as_the_loop_drives_it():
    """The loop builds schedulers with warmup and total steps only and steps them without a
    metric: every name the config accepts must work that way, and the others are refused."""
    from transformers import get_scheduler

    names = lr_schedulers()
    assert "constant" in names and "linear" in names
    assert not set(names) & set(UNDRIVEN_LR_SCHEDULERS)
    for name in names:
        load_config(None, {"optim.lr_scheduler": name})
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=4)
        for _ in range(3):
            optimizer.step()
            scheduler.step()
    for name in UNDRIVEN_LR_SCHEDULERS:
        with pytest.raises(GraceInputError, match=f"optim.lr_scheduler '{name}'"):
            load_config(None, {"optim.lr_scheduler": name})


# --------------------------------------------------------------------------- command line

CLI_CASES = [
    (["--rollout.temperature", "-1"], "rollout.temperature must be > 0", "-1.0"),
    (["--rollout.temperature", "0"], "rollout.temperature must be > 0 and finite for GRPO rollouts", "0.0"),
    (["--rollout.top_p", "2"], "rollout.top_p must be in (0, 1]", "2.0"),
    (["--reward.scale", "nan"], "reward.scale must be > 0 and finite", "nan"),
    (["--optim.warmup_steps", "-5"], "optim.warmup_steps must be >= 0", "-5"),
    (["--optim.learning_rate", "-1"], "optim.learning_rate must be > 0 and finite", "-1.0"),
    (["--optim.lr_scheduler", "bogus"], "optim.lr_scheduler 'bogus' (choose", "bogus"),
]


@pytest.mark.parametrize("extra, rule, shown", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_bad_values_are_one_line_exit_2_before_anything_loads(tmp_path, extra, rule, shown):
    (tmp_path / "texts.txt").write_text("one text\nanother text\na third one\n")
    command = [sys.executable, "-m", "grace.cli", "train", "--model", "tiny-random", "--method",
               "grace", "--mode", "unsupervised", "--data", "texts.txt", "--max-steps", "1",
               "--rollout.num_rollouts", "2", "--rollout.max_new_tokens", "4", "--output-dir",
               "OUT", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grace: error: invalid config: ")
    assert rule in lines[0] and shown in lines[0]
    assert not Path(tmp_path / "OUT").exists()  # refused before the run started
