"""README command 1's job (`grace demo`) as a subprocess, with the packaged demo config and the
tiny model for two steps: before/after scores, the checkpoint and the figures file. The demo's
real figures (SmolLM2, 12 steps) are in the packaged config's comment."""

import json
import os
import subprocess
import sys


def test_grace_demo_runs_its_packaged_config_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "grace.cli", "demo", "--model", "tiny-random",
                             "--max-steps", "2", "--output-dir", "OUT"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "OUT" / "lee_before_after.json").read_text())
    assert report["checkpoint"].endswith("checkpoint-2")
    for when in ("before", "after"):
        for mode in ("none", "greedy"):
            assert -1 <= report[when][mode]["spearman"] <= 1 and report[when][mode]["num_pairs"] == 1225
    config = report["config"]  # the packaged demo settings, but the overridden steps
    assert config["max_steps"] == 2 and config["optim"]["learning_rate"] == 3e-5
    assert config["rollout"]["dtype"] == "policy" and config["model"]["mixed_precision"] == "no"
    assert "Lee document similarity" in result.stdout
