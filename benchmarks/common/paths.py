"""Where the benchmarks read and write outside their own folders: the repo root, the shared
data beside it (``../shared/data``) and the uncommitted work folder (``runs/``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repo root (benchmarks/common/paths.py)
SHARED_DATA = REPO.parent / "shared" / "data"  # datasets shared by the worktrees, not committed
WIKI_SENTENCES = SHARED_DATA / "texts" / "wiki-sentences.txt"
RUNS = REPO / "runs"  # checkpoints and caches of the benchmarks, not committed
