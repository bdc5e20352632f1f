"""The model cache sweeps temporary folders of killed conversions (and only those); the explain
renderer shows a whitespace-only rationale as what it is, not as a missing one."""

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from grace.explain.pair import Explanation, SideExplanation, TokenShare
from grace.explain.render import render, shown_rationale
from grace.models import backbones

# A conversion that writes part of a model, says where, and then waits to be killed.
_STUCK_CONVERSION = """
import sys, time
from pathlib import Path
from grace.models.backbones import _write_atomically

def build(tmp):
    (tmp / "model.safetensors").write_bytes(b"half a model")
    print(tmp, flush=True)
    time.sleep(600)

_write_atomically(Path(sys.argv[1]), build)
"""


def _start_stuck_conversion(target: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", _STUCK_CONVERSION, str(target)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the conversion subprocess printed no temporary folder"
    return proc, Path(line)


def _tmp_folders(target: Path) -> list[Path]:
    return sorted(target.parent.glob(target.name + ".tmp-*"))


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL: no finally clause runs in the subprocess
    proc.wait()
    proc.stdout.close()


def test_killed_conversions_are_swept_and_live_ones_kept(tmp_path, monkeypatch):
    real_smollm2 = backbones.prepare_smollm2()  # the real cache's tokenizer source, before moving
    monkeypatch.setenv("GRACE_CACHE", str(tmp_path))
    monkeypatch.setattr(backbones, "prepare_smollm2", lambda: real_smollm2)
    target = tmp_path / "tiny-random-seed0"

    killed, killed_tmp = _start_stuck_conversion(target)
    _kill(killed)
    assert (killed_tmp / "model.safetensors").exists()  # what a kill leaves behind
    live, live_tmp = _start_stuck_conversion(target)  # a second process, still converting
    try:
        path = backbones.resolve_model_path("tiny-random")  # the real conversion path
        assert Path(path) == target
        assert not killed_tmp.exists()
        assert (live_tmp / "model.safetensors").exists()  # a live conversion is not touched
    finally:
        _kill(live)
    assert not (target / backbones.TMP_LOCK).exists()
    model, tokenizer = backbones.load_backbone(path)
    assert model.config.num_hidden_layers == 2 and tokenizer.eos_token_id is not None

    # folders from an older grace (no lock file): one untouched for two hours, one fresh
    old_unlocked = tmp_path / "tiny-random-seed0.tmp-old"
    old_unlocked.mkdir()
    (old_unlocked / "config.json").write_text("{}")
    two_hours_ago = time.time() - 2 * 3600
    for p in (old_unlocked / "config.json", old_unlocked):
        os.utime(p, (two_hours_ago, two_hours_ago))
    fresh_unlocked = tmp_path / "tiny-random-seed0.tmp-fresh"
    fresh_unlocked.mkdir()
    other_entry = tmp_path / "smollm2-135m-instruct.tmp-dead"  # another entry's: swept by its own
    other_entry.mkdir()
    (other_entry / backbones.TMP_LOCK).write_text("")

    # the next start, with the entry cached, sweeps the dead process's folder and the old one
    assert backbones.resolve_model_path("tiny-random") == path
    assert _tmp_folders(target) == [fresh_unlocked]
    assert other_entry.is_dir()
    assert (target / "config.json").exists() and (target / "model.safetensors").exists()
    assert backbones.load_backbone(path)[0].config.num_hidden_layers == 2


def test_a_conversion_that_raises_or_is_interrupted_leaves_no_temporary_folder(tmp_path):
    target = tmp_path / "entry"

    def failing(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("conversion failed")

    def interrupted(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(RuntimeError, match="conversion failed"):
        backbones._write_atomically(target, failing)
    with pytest.raises(KeyboardInterrupt):
        backbones._write_atomically(target, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_two_conversions_at_once_both_succeed_and_leave_one_entry(tmp_path):
    target = tmp_path / "entry"
    started, release = threading.Event(), threading.Event()
    results = []

    def slow(tmp: Path) -> None:
        (tmp / "weights").write_text("slow")
        started.set()
        assert release.wait(30)

    def fast(tmp: Path) -> None:
        (tmp / "weights").write_text("fast")

    thread = threading.Thread(target=lambda: results.append(backbones._write_atomically(target, slow)))
    thread.start()
    try:
        assert started.wait(30)
        slow_tmp = _tmp_folders(target)
        assert len(slow_tmp) == 1
        assert backbones._write_atomically(target, fast) == target  # sweeps, but not a live one
        assert slow_tmp[0].is_dir()
    finally:
        release.set()
        thread.join(30)
    assert results == [target]  # the slower one found the entry there and dropped its copy
    assert (target / "weights").read_text() == "fast"
    assert _tmp_folders(target) == []


def test_shown_rationale():
    assert shown_rationale("") == "(no rationale)"
    assert shown_rationale("\n" * 64) == "(whitespace only: 64 newlines)"
    assert shown_rationale(" \n\t\n") == "(whitespace only: 1 space, 2 newlines, 1 tab)"
    assert shown_rationale("\u00a0") == "(whitespace only: 1 no-break space)"
    assert shown_rationale("\n\nA cat.") == "\n\nA cat."


def _side(text: str, rationale: str) -> SideExplanation:
    tokens = [TokenShare(text, 0.3, "text")]
    if rationale:
        tokens.append(TokenShare(rationale[:2], 0.2, "rationale"))
    return SideExplanation(text, rationale, tokens)


def _rendered(ex: Explanation) -> str:
    out = io.StringIO()
    render(ex, console=Console(file=out, width=120, color_system=None))
    return out.getvalue()


def test_render_tells_a_whitespace_rationale_from_a_missing_one():
    ex = Explanation(0.5, _side("A cat.", "\n" * 64), _side("A dog.", ""), model="m", kind="grace")
    text = _rendered(ex)
    assert "rationale: (whitespace only: 64 newlines)" in text
    assert "rationale: (no rationale)" in text
    assert "\n" * 3 not in text  # the 64 newlines are not printed as blank lines

    ex = Explanation(0.5, _side("A cat.", "A small cat."), _side("A dog.", "A dog."), kind="grace")
    text = _rendered(ex)
    assert "rationale: A small cat." in text and "(no rationale)" not in text

    # kinds without rationales print no rationale line
    st = Explanation(0.5, _side("A cat.", ""), _side("A dog.", ""), kind="sentence-transformers")
    assert "rationale:" not in _rendered(st)
