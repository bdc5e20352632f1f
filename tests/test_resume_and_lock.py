"""Checkpoint verification and fallback, the one-run-per-folder lock, and the data order with a
last smaller batch (pure library level; the command-line runs are in test_cli_train.py)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from grace.training.checkpoint import (
    MANIFEST,
    STATE_FILE,
    checkpoint_problem,
    resumable_checkpoint,
    write_manifest,
)
from grace.errors import GraceInputError
from grace.training.run_lock import LOCK_FILE, RunLock
from grace.training.loop import DataOrder


def _checkpoint(folder, step, manifest=True):
    """A small checkpoint folder as save_checkpoint lays it out."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, path / "model.safetensors")
    torch.save({"state": {0: {"exp_avg": torch.ones(8)}}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / STATE_FILE).write_text(json.dumps({"step": step}))
    if manifest:
        write_manifest(path)
    return path


def _truncate(path, keep=20):
    path.write_bytes(path.read_bytes()[:keep])


# --------------------------------------------------------------------------- verification


def test_an_intact_checkpoint_passes_and_the_manifest_lists_every_file(tmp_path):
    path = _checkpoint(tmp_path, 2)
    assert checkpoint_problem(path) is None
    files = json.loads((path / MANIFEST).read_text())["files"]
    assert set(files) == {"model.safetensors", "optimizer.pt", "scheduler.pt", "config.json", STATE_FILE}
    assert files["config.json"]["size"] == (path / "config.json").stat().st_size


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "older-checkpoint"])
@pytest.mark.parametrize("damage, expected", [
    (lambda p: _truncate(p / "model.safetensors"), "model.safetensors"),
    (lambda p: _truncate(p / "optimizer.pt"), "optimizer.pt"),
    (lambda p: (p / STATE_FILE).write_text('{"step": 2'), STATE_FILE),
    (lambda p: (p / STATE_FILE).unlink(), STATE_FILE),
], ids=["truncated-weights", "broken-optimizer", "broken-state", "no-state"])
def test_damaged_checkpoints_are_named(tmp_path, manifest, damage, expected):
    path = _checkpoint(tmp_path, 2, manifest=manifest)
    damage(path)
    problem = checkpoint_problem(path)
    assert problem is not None and problem.startswith(expected), problem


def test_a_changed_byte_is_caught_by_the_manifest(tmp_path):
    path = _checkpoint(tmp_path, 2)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # same size, one tensor value altered
    (path / "model.safetensors").write_bytes(bytes(data))
    assert "SHA-256 differs" in checkpoint_problem(path)


def test_resume_falls_back_to_the_previous_good_checkpoint(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4)
    newest = _checkpoint(tmp_path, 6)
    _truncate(newest / "model.safetensors")
    lines = []
    assert resumable_checkpoint(tmp_path, lines.append) == tmp_path / "checkpoint-4"
    assert len(lines) == 1 and str(newest / "model.safetensors") in lines[0]
    assert "resuming from checkpoint-4" in lines[0]
    assert (newest / "model.safetensors").is_file()  # nothing deleted


def test_resume_without_any_good_checkpoint_names_every_bad_file(tmp_path):
    assert resumable_checkpoint(tmp_path / "none") is None  # a new run
    for step in (2, 4):
        _truncate(_checkpoint(tmp_path, step) / "optimizer.pt")
    with pytest.raises(GraceInputError, match="no usable checkpoint") as info:
        resumable_checkpoint(tmp_path, lambda line: None)
    for step in (2, 4):
        assert str(tmp_path / f"checkpoint-{step}" / "optimizer.pt") in str(info.value)


# --------------------------------------------------------------------------- the run lock


def test_a_second_lock_on_the_same_folder_is_refused_until_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    assert f"PID {os.getpid()}" in (tmp_path / LOCK_FILE).read_text()
    with pytest.raises(GraceInputError, match=f"used by another training run \\(PID {os.getpid()} on"):
        RunLock(tmp_path).acquire()
    first.release()
    with RunLock(tmp_path) as again:
        assert again.previous == ""  # released cleanly: nothing stale
    assert (tmp_path / LOCK_FILE).exists()  # never deleted


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal
        from grace.training.run_lock import RunLock
        lock = RunLock({str(tmp_path)!r}).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9
    left = (tmp_path / LOCK_FILE).read_text()
    assert left.startswith("PID ")
    lock = RunLock(tmp_path).acquire()
    assert lock.previous == left.strip()
    lock.release()


# --------------------------------------------------------------------------- data order


def _epoch(order):
    return [order.batch(step) for step in range(1, order.steps_per_epoch + 1)]


def test_the_last_batch_of_an_epoch_holds_the_rest():
    records = list(range(10))
    order = DataOrder(records, 4, seed=0, shuffle=True, rank=0, world=1)
    batches = _epoch(order)
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(sum(batches, [])) == records
    assert sorted(sum([order.batch(s) for s in (4, 5, 6)], [])) == records
    assert order.position(3) == {"epoch": 0, "offset": 8} and order.position(4) == {"epoch": 1, "offset": 0}


def test_two_processes_split_every_batch_evenly():
    records = list(range(11))  # 11 = 2 x 4 + 3: the last batch keeps 2 (one per process)
    ranks = [DataOrder(records, 4, 0, False, rank, 2) for rank in (0, 1)]
    assert ranks[0].steps_per_epoch == 3
    assert [ranks[0].batch(s) + ranks[1].batch(s) for s in (1, 2, 3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_data_smaller_than_a_batch_trains_on_all_of_it_with_a_warning():
    with pytest.warns(UserWarning, match="6 records, fewer than batch_size 64: every step trains on 6"):
        order = DataOrder(list(range(6)), 64, 0, True, 0, 1)
    assert order.steps_per_epoch == 1 and sorted(order.batch(1)) == sorted(order.batch(2)) == list(range(6))
    with pytest.raises(GraceInputError, match="the data has 1 record"):
        DataOrder(["only"], 64, 0, True, 0, 1)
    a_tail_of_one = DataOrder(list(range(9)), 4, 0, False, 0, 1)  # 4 + 4 + 1: the single one is dropped
    assert a_tail_of_one.steps_per_epoch == 2
