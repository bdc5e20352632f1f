"""Bad input to the ``grace`` command: each case is one line on stderr, exit code 2 (Ctrl-C: 130),
no traceback, and no work done before the check. Through the real command line (a fresh Python
process per run) unless the case needs a stand-in for the slow part."""

import importlib.metadata
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import cli_env, run_cli
from sample_data import TEXTS

from grace.errors import GraceInputError
from grace.training.checkpoint import checkpoint_problem, checkpoints

SMALL = ["--model", "tiny-random", "--mode", "unsupervised", "--batch-size", "2",
         "--rollout.num_rollouts", "2", "--rollout.max_new_tokens", "4"]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grace: error: ")
    return lines[0]


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("".join(text + "\n" for text in TEXTS))
    return path


# --------------------------------------------------------------------------- grace eval --output

def test_eval_output_that_is_a_folder_stops_before_any_work(tmp_path):
    (tmp_path / "RESULTS").mkdir()
    # an unknown model: had the model been loaded first, the error would name it instead
    line = one_line_error(run_cli(tmp_path, "eval", "--model", "no-such-model-xyz", "--output", "RESULTS"))
    assert "output RESULTS is a folder" in line and "RESULTS/results.json" in line


@pytest.mark.parametrize("where, expected", [
    ("A_FILE/results.json", "A_FILE is a file, not a folder"),
    ("A_FILE/deeper/results.json", "A_FILE is a file, not a folder"),
    ("/proc/grace-no-such/results.json", "folder /proc is not writable"),
], ids=["parent-is-a-file", "ancestor-is-a-file", "read-only-folder"])
def test_eval_output_that_cannot_be_written_stops_before_any_work(tmp_path, where, expected):
    if where.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    (tmp_path / "A_FILE").write_text("not a folder\n")
    line = one_line_error(run_cli(tmp_path, "eval", "--model", "no-such-model-xyz", "--output", where))
    assert expected in line


def test_a_missing_output_folder_is_made(tmp_path):
    from grace.evaluation.suite import check_output, save_results

    path = check_output(tmp_path / "new" / "deeper" / "r.json")
    assert save_results({"overall": 0.5}, path) == path
    assert json.loads(path.read_text()) == {"overall": 0.5}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def _fake_task_row(model, task):
    return {"type": "STS", "category": "t2t", "main_score_name": "cosine_spearman",
            "main_score": 0.25, "metrics": {}, "subsample": {"limits": {}, "sizes": {}},
            "texts_encoded": 0, "seconds": 0.0, "dataset": {}}


def test_results_are_kept_when_the_output_cannot_be_written_at_the_end(tmp_path, monkeypatch, capsys):
    """The path was fine at the start, and a folder took its name during the run: the scores go
    to a sibling file, the error says where, and the table is still printed."""
    from grace.evaluation import suite

    out = tmp_path / "R.json"

    def task_then_block_the_path(model, task):
        out.mkdir()  # e.g. another job made a folder of that name meanwhile
        return _fake_task_row(model, task)

    monkeypatch.setattr(suite, "evaluate_task", task_then_block_the_path)
    with pytest.raises(GraceInputError, match="could not write .*R.json.*saved in .*R.json.recovered.json"):
        suite.run_suite("tiny-random", rationale="none", cache=False, output=out)
    saved = json.loads((tmp_path / "R.json.recovered.json").read_text())
    assert saved["tasks"]["LeeDocSim"]["main_score"] == 0.25 and saved["overall"] == 0.25
    assert "LeeDocSim" in capsys.readouterr().out  # the table too


def test_the_tasks_scores_are_written_before_the_capability_probes(tmp_path, monkeypatch):
    from grace.evaluation import suite

    def interrupted_probes(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "evaluate_task", _fake_task_row)
    monkeypatch.setattr(suite, "_capability_function", lambda: interrupted_probes)
    out = tmp_path / "R.json"
    with pytest.raises(KeyboardInterrupt):
        suite.run_suite("tiny-random", rationale="none", cache=False, output=out, capability=True,
                        show=False)
    saved = json.loads(out.read_text())
    assert saved["tasks"]["LeeDocSim"]["main_score"] == 0.25
    assert "unfinished" in saved["capability"]


def test_eval_capability_figures_are_in_the_printed_table(tmp_path):
    (tmp_path / "data" / "capability").mkdir(parents=True)
    (tmp_path / "data" / "capability" / "arc-easy-test.jsonl").write_text("".join(
        json.dumps({"question": q, "choices": c, "answer": 0}) + "\n" for q, c in (
            ("Which gas do plants take in?", ["carbon dioxide", "helium", "neon"]),
            ("What does a thermometer measure?", ["temperature", "weight"]))))
    result = run_cli(tmp_path, "eval", "--model", "tiny-random", "--rationale", "none", "--no-cache",
                   "--capability", "--data-dir", "data", "--output", "R.json")
    assert result.returncode == 0, result.stderr[-3000:]
    capability = json.loads((tmp_path / "R.json").read_text())["capability"]
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if cells and cells[0] in ("ARC-Easy", "perplexity"):
            rows[(cells[0], cells[2])] = cells[3]
    assert rows[("ARC-Easy", "acc")] == f"{100 * capability['arc_easy']['acc']:.2f}"
    assert rows[("ARC-Easy", "acc_norm")] == f"{100 * capability['arc_easy']['acc_norm']:.2f}"
    assert rows[("perplexity", "held-out text")] == f"{capability['perplexity']['perplexity']:.2f}"


def test_eval_pooling_takes_a_text_share_and_names_a_bad_one(capsys):
    from grace.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["eval", "--model", "m", "--pooling", "text:0.7"]).pooling == "text:0.7"
    assert parser.parse_args(["eval", "--model", "m", "--pooling", "balanced"]).pooling == "balanced"
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["eval", "--model", "m", "--pooling", "text:2"])
    assert stop.value.code == 2
    assert "--pooling: pooling must be one of ('mean', 'balanced') or text:W with 0 < W < 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- grace train

@pytest.mark.parametrize("where, expected", [
    ("A_FILE", "--output-dir A_FILE is a file, not a folder"),
    ("A_FILE/run", "--output-dir A_FILE/run cannot be made: A_FILE is a file"),
], ids=["a-file", "inside-a-file"])
def test_train_output_dir_that_is_a_file_stops_before_the_model_loads(tmp_path, texts, where, expected):
    (tmp_path / "A_FILE").write_text("not a folder\n")
    line = one_line_error(run_cli(tmp_path, "train", *SMALL, "--data", texts.name, "--max-steps", "1",
                                "--output-dir", where, "--model", "no-such-model-xyz"))
    assert expected in line


def test_override_config_reaches_train_and_is_documented(tmp_path, texts, monkeypatch, capsys):
    import grace.train as registry
    from grace.cli import build_parser, main

    calls = []
    monkeypatch.setattr(registry, "train", lambda config, **kwargs: calls.append(kwargs) or "CK")
    args = ["train", *SMALL, "--data", str(texts), "--output-dir", str(tmp_path / "OUT")]
    assert main(args) == 0 and main([*args, "--override-config"]) == 0
    assert [call["override_config"] for call in calls] == [False, True]
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert ("--override-config rerun an existing output dir with settings that differ from its "
            "recorded config") in help_text


def test_ctrl_c_during_training_is_one_line_and_exit_130(tmp_path, texts):
    """SIGINT once the first checkpoint is written: `grace: interrupted (...)`, exit 130, no
    KeyboardInterrupt traceback; and what the line promises holds: every checkpoint-N left is
    complete and intact (the next run resumes from the newest)."""
    out = tmp_path / "OUT"
    args = [*SMALL, "--data", texts.name, "--max-steps", "10000", "--save_every", "1",
            "--output-dir", "OUT"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "grace.cli", "train", *args], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell without job control starts background jobs with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while len(checkpoints(out)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("grace: interrupted (") and "resumes from the newest" in last
    assert checkpoints(out) and all(checkpoint_problem(c) is None for c in checkpoints(out))


# --------------------------------------------------------------------------- grace explain

def test_explain_unknown_rationale_is_one_line_before_the_model_loads(tmp_path):
    line = one_line_error(run_cli(tmp_path, "explain", "a", "b", "--model", "tiny-random",
                                "--rationale", "bogus"))
    assert "rationale must be one of" in line and "'bogus'" in line


# --------------------------------------------------------------------------- version, python -m

def test_version_and_python_dash_m(tmp_path):
    expected = f"grace {importlib.metadata.version('grace')}"
    for module in ("grace.cli", "grace"):
        result = run_cli(tmp_path, "--version", module=module)
        assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr
    result = run_cli(tmp_path, "eval", "--model", "x", "--output", ".", module="grace")
    assert result.returncode == 2 and "is a folder" in result.stderr  # main's exit code passes through
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
