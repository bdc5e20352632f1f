"""Shared helpers of the benchmark scripts: the machine description and the results file.

Each benchmark owns one section of ``benchmarks/results-speed.md``, delimited by
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``. ``write_section(NAME, markdown)``
replaces that section (or appends it), leaving every other section as it is, so the scripts
can be re-run in any order.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results-speed.md"
HEADER = (
    "# Speed and memory benchmarks (issue 5)\n\n"
    "Each section is written by its script in `benchmarks/` (re-running a script replaces only\n"
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
