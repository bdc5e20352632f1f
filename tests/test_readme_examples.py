"""The README's `grace train` examples run as written on small files (6 texts, 6 triplets).

Every `.venv/bin/grace train` command of README.md that uses the tiny model is taken from the
README itself and run unchanged (our interpreter instead of .venv/bin/grace), in a folder that
holds the data files it names. The SmolLM2 examples (packaged configs, 50+ steps) are run with
the tiny model and one step, so the config, the flags and the small-data path are exercised.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sample_data import TEXTS, TRIPLETS

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[list[str]]:
    """Every `.venv/bin/grace train ...` command of the README's bash blocks, as argv."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(".venv/bin/grace train") and "..." not in line:  # not a sketch
                commands.append(shlex.split(line)[2:])
    return commands


def _data(folder: Path) -> None:
    lines = "".join(t + "\n" for t in TEXTS[:6])
    for name in ("texts.txt", "QUERIES.txt"):
        (folder / name).write_text(lines)
    import json

    (folder / "triplets.jsonl").write_text("".join(
        json.dumps(dict(zip(("query", "positive", "negative"), row))) + "\n" for row in TRIPLETS[:6]))


def _run(folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "grace.cli", "train", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)


TINY = [c for c in _commands() if "tiny-random" in c]
OTHERS = [c for c in _commands() if "tiny-random" not in c]


def test_the_readme_has_the_examples_we_run():
    assert len(TINY) >= 3 and OTHERS  # unsupervised, supervised, LLM2Vec-Gen; the config examples


@pytest.mark.slow
@pytest.mark.parametrize("args", TINY, ids=[" ".join(c[:8]) for c in TINY])
def test_a_tiny_readme_example_runs_as_written_on_six_lines(tmp_path, args):
    _data(tmp_path)
    result = _run(tmp_path, args)
    assert result.returncode == 0, result.stderr[-3000:]
    output = Path(tmp_path, args[args.index("--output-dir") + 1])
    steps = int(args[args.index("--max-steps") + 1])
    assert (output / f"checkpoint-{steps}" / "trainer_state.json").is_file()
    assert "effective batch size 6" in result.stderr  # 6 lines, fewer than the default batch


@pytest.mark.slow
@pytest.mark.parametrize("args", OTHERS, ids=[" ".join(c[:4]) for c in OTHERS])
def test_a_config_readme_example_runs_on_the_tiny_model_for_one_step(tmp_path, args):
    _data(tmp_path)
    args = list(args)
    if "--data" in args:  # the shared NLI file -> our 6 triplets
        args[args.index("--data") + 1] = "triplets.jsonl"
    if "--max-steps" in args:
        args[args.index("--max-steps") + 1] = "1"
    else:
        args += ["--max-steps", "1"]
    if "--output-dir" not in args:
        args += ["--output-dir", "OUT"]
    if "--data" not in args:  # a config that names its own corpus: keep it small
        args += ["--data", "texts.txt"]
    args += ["--model", "tiny-random"]
    result = _run(tmp_path, args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (Path(tmp_path, args[args.index("--output-dir") + 1]) / "checkpoint-1").is_dir()
