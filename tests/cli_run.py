"""Running the CLI as a user does, in a subprocess, offline and on one thread (shared by the
CLI tests)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def cli_env(**extra: str) -> dict:
    """The environment of a CLI subprocess: offline, one thread, a private mteb cache."""
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                MTEB_CACHE=os.path.join(tempfile.gettempdir(), "grace-tests-mteb-cache"), **extra)


def run_cli(cwd: Path, *args: str, module: str = "grace.cli") -> subprocess.CompletedProcess:
    """``python -m grace.cli ARGS`` (or another module) in ``cwd``."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
