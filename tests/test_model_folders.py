"""A training output folder given as --model stands for its newest good checkpoint, for every
command that loads an encoder (GraceEncoder.from_pretrained, and LLM2VecGenEncoder's own
loader that `grace decode` uses): it is named on stderr, a bad newer checkpoint is skipped with
a line naming the bad file, and a folder with no good checkpoint is one error naming the folder
and what it holds."""

import json
from pathlib import Path

import pytest
from cli_run import run_cli
from sample_data import TEXTS

from grace.encoders.base import GraceEncoder
from grace.errors import GraceInputError


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A GRACE training output folder with checkpoint-1, -2 and -3 (tiny model)."""
    root = tmp_path_factory.mktemp("run")
    (root / "texts.txt").write_text("".join(text + "\n" for text in TEXTS))
    result = run_cli(root, "train", "--model", "tiny-random", "--mode", "unsupervised", "--data",
                   "texts.txt", "--max-steps", "3", "--save_every", "1", "--batch-size", "2",
                   "--rollout.num_rollouts", "2", "--rollout.max_new_tokens", "4",
                   "--output-dir", "OUT")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (root / "OUT").iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-1", "checkpoint-2", "checkpoint-3"]
    return root


def test_eval_takes_a_training_output_folder(run, tmp_path):
    result = run_cli(run, "eval", "--model", "OUT", "--rationale", "none", "--no-cache",
                   "--output", str(tmp_path / "R.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grace: using OUT/checkpoint-3 (newest of 3)" in result.stderr
    results = json.loads((tmp_path / "R.json").read_text())
    assert results["model"] == "OUT/checkpoint-3" and results["tasks"]["LeeDocSim"]["main_score"] is not None


def test_explain_skips_a_bad_newest_checkpoint_naming_it(run, tmp_path):
    out = tmp_path / "OUT"
    for step in (1, 2, 3):
        source = run / "OUT" / f"checkpoint-{step}"
        (out / source.name).mkdir(parents=True)
        for path in source.iterdir():
            (out / source.name / path.name).symlink_to(path)
    (out / "grace_config.yaml").symlink_to(run / "OUT" / "grace_config.yaml")
    weights = out / "checkpoint-3" / "model.safetensors"
    weights.unlink()
    weights.write_bytes((run / "OUT" / "checkpoint-3" / "model.safetensors").read_bytes()[:1000])
    result = run_cli(tmp_path, "explain", "a cat", "a dog", "--model", "OUT", "--rationale", "none",
                   "--no-cache", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grace: OUT/checkpoint-3/model.safetensors: 1000 bytes" in result.stderr
    assert "using checkpoint-2 instead" in result.stderr
    assert "grace: using OUT/checkpoint-2 (newest good one of 3)" in result.stderr
    assert json.loads(result.stdout)["model"] == "OUT/checkpoint-2"


def test_a_folder_without_a_good_checkpoint_is_one_error_naming_what_it_holds(run, tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "grace_config.yaml").write_text((run / "OUT" / "grace_config.yaml").read_text())
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(GraceInputError, match=r"OUT is a training output folder without a "
                       r"checkpoint-N folder \(it holds grace_config.yaml, metrics.jsonl\)"):
        GraceEncoder.from_pretrained(str(out))
    (out / "checkpoint-4").mkdir()  # never completed: no trainer_state.json
    with pytest.raises(GraceInputError, match=r"no usable checkpoint \(.*checkpoint-4/trainer_state"
                       r".json: missing.*\); it holds checkpoint-4, grace_config.yaml, metrics.jsonl"):
        GraceEncoder.from_pretrained(str(out))
    result = run_cli(tmp_path, "explain", "a", "b", "--model", "OUT")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "no usable checkpoint" in result.stderr


def test_anything_else_is_left_as_given(run, tmp_path):
    from grace.encoders.base import training_output_checkpoint

    said = []
    checkpoint = run / "OUT" / "checkpoint-2"
    for name in ("tiny-random", "some-org/some-model", str(checkpoint), str(tmp_path)):
        assert training_output_checkpoint(name, said.append) == name
    assert said == []
    assert training_output_checkpoint(str(run / "OUT"), said.append) == str(run / "OUT" / "checkpoint-3")
    assert said == [f"grace: using {run / 'OUT' / 'checkpoint-3'} (newest of 3)"]


def test_decode_goes_through_the_same_resolution(run):
    """`grace decode` (LLM2VecGenEncoder's loader) on a GRACE run: the newest checkpoint is
    found, and then refused as not LLM2Vec-Gen, in one line."""
    result = run_cli(run, "decode", "--model", "OUT", "a text")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "grace: using OUT/checkpoint-3 (newest of 3)" in result.stderr
    assert "'OUT/checkpoint-3' is not an LLM2Vec-Gen checkpoint" in result.stderr
