"""Shared helpers of the benchmark scripts: the machine description, the results file and the
command-line options of the scripts that run GRACE training steps.

Each benchmark owns one section of its results file (``benchmarks/speed/results-speed.md`` by
default; the load test's is ``benchmarks/server/results-server.md``), delimited by
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``. ``write_section(NAME, markdown)``
replaces that section (or appends it), leaving every other section as it is, so the scripts
can be re-run in any order.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "speed" / "results-speed.md"
HEADER = (
    "# Speed and memory benchmarks (issue 5)\n\n"
    "Each section is written by its script in `benchmarks/speed/` (re-running a script replaces only\n"
    "its own section). Ratios compare two pipelines measured in the same run on the same machine.\n"
)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def write_section(name: str, markdown: str, path: Path | str = RESULTS) -> Path:
    """Put ``markdown`` between the markers of section ``name`` in ``path``; keep the rest.

    The file is created (with a short header) when missing; a missing section is appended.
    The write goes through a temporary file and a rename, so a reader never sees half a file.
    """
    path = Path(path)
    start, end = _markers(name)
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)
    return path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*packages: str) -> str:
    """``torch 2.x, transformers 5.x, ...`` for the installed packages among ``packages``."""
    found = []
    for name in packages:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def machine(*packages: str, threads: int | None = None) -> str:
    """One markdown line describing the machine and the library versions.

    ``threads``: the torch thread count of the measured process (default: this process's).
    """
    import torch

    threads = threads or torch.get_num_threads()
    return (
        f"{cpu_model()}, {os.cpu_count()} cores visible, {threads} torch thread(s), "
        f"Python {platform.python_version()}; "
        + versions("torch", "transformers", "accelerate", *packages)
    )


def add_step_arguments(p: argparse.ArgumentParser, quick: dict, full: dict, steps_help: str, data) -> None:
    """The options shared by the scripts that time or measure GRACE training steps; the size
    options default to None and are filled from ``quick``/``full`` by ``resolve_presets``."""
    p.add_argument("--quick", action="store_true", help=f"small run (< 1 min): {quick}")
    p.add_argument("--model", help=f"backbone name (default {full['model']})")
    p.add_argument("--batch", type=int, help="B: texts (groups) per step")
    p.add_argument("--rollouts", type=int, help="G: rationales per text")
    p.add_argument("--max-new-tokens", type=int, help="rationale length cap")
    p.add_argument("--steps", type=int, help=steps_help)
    p.add_argument("--mini-batches", type=int, help="optimizer steps per rollout batch")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a busy 2-core machine 2 OpenMP threads "
                   "collapse, e.g. HF generate 7 vs 57 tokens/s; 0 = torch's default)")
    p.add_argument("--engine", help="our rollout engine, rollout.engine (default: the config's)")
    p.add_argument("--data", default=str(data), help="one text per line")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write the results section (default: only without --quick)")


def resolve_presets(args: argparse.Namespace, quick: dict, full: dict) -> argparse.Namespace:
    """Fill the size options left unset from the --quick or full preset; --write defaults to
    "not --quick"."""
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.write is None:
        args.write = not args.quick
    return args


def write_json(path: Path, value) -> None:
    """``value`` as indented JSON at ``path``, through a temporary file renamed into place, so a
    killed run never leaves half a file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
