"""Where GRACE loses its Reranking cell (issue 25): the dev suite's reranking task alone, for a
trained GRACE checkpoint read three ways (greedy rationale with the paper's mean pooling, the same
rationales with the balanced pooling, and no rationale at all) beside a contrastive baseline.

    .venv/bin/python -m benchmarks.quality.rerank_probe \\
        --row "GRACE sup s1=runs/budget/grace-sup-contrastive-anchor10-s1-45m/checkpoint-125" \\
        --row "InfoNCE s1=runs/budget/infonce-s1-45m/checkpoint-171:none"

Each row is ``LABEL=SOURCE`` (every reading above) or ``LABEL=SOURCE:none`` (no rationale only).
One JSON per reading in ``results-data/budget/rerank-probe/`` (a reading whose file is there is
skipped: the probe resumes), and a table printed from all of them. The split is dev (choosing
on it is allowed); float32, 32-token greedy rationales as the budget runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import paths, report  # noqa: E402

OUT = Path(__file__).resolve().parent / "results-data" / "budget" / "rerank-probe"
TASK = "DevSciFactReranking"
READINGS = {"greedy-mean": ("greedy", "mean"), "greedy-balanced": ("greedy", "balanced"),
            "none": ("none", "mean")}


def parse_row(text: str) -> tuple[str, str, list[str]]:
    """'LABEL=SOURCE[:none]' -> (label, source, readings)."""
    label, sep, source = text.partition("=")
    if not sep or not label or not source:
        raise SystemExit(f"--row {text!r}: expected LABEL=SOURCE or LABEL=SOURCE:none")
    if source.endswith(":none"):
        return label, source[: -len(":none")], ["none"]
    return label, source, list(READINGS)


def dev_task(data_dir: Path):
    """``TASK`` as the dev suite builds it (its seeded subsample)."""
    from grace.evaluation.suite import build_suite

    tasks, _ = build_suite("dev", data_dir)
    return next(t for t in tasks if t.metadata.name == TASK)


def score(source: str, reading: str, task, cache: Path) -> dict:
    """``task`` for ``source`` read as ``reading``: mteb's main score and the seconds."""
    from grace.encoders import GraceEncoder
    from grace.evaluation.mteb_adapter import GraceMTEBModel
    from grace.evaluation.suite import evaluate_task

    rationale, pooling = READINGS[reading]
    encoder = GraceEncoder.from_pretrained(source, dtype="float32", cache=cache, rationale=rationale,
                                           max_new_tokens=32, pooling=pooling)
    start = time.perf_counter()
    row = evaluate_task(GraceMTEBModel(encoder), task)
    return {"source": source, "reading": reading, "task": TASK, "main_score": row["main_score"],
            "subsample": row.get("subsample"), "rationale_quality": row.get("rationale_quality"),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", action="append", default=[], help="LABEL=SOURCE or LABEL=SOURCE:none")
    parser.add_argument("--data-dir", default=str(paths.SHARED_DATA))
    parser.add_argument("--cache", default=str(paths.RUNS / "budget" / "rationales.sqlite"))
    args = parser.parse_args()
    task = None
    for label, source, readings in map(parse_row, args.row):
        for reading in readings:
            out = OUT / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', label)}-{reading}.json"
            if not out.is_file():
                print(f"[rerank {time.strftime('%H:%M:%S')}] {label}: {reading}", flush=True)
                task = task or dev_task(Path(args.data_dir))
                report.write_json(out, {"label": label, **score(source, reading, task, Path(args.cache))})
    for path in sorted(OUT.glob("*.json")) if OUT.is_dir() else []:
        r = json.loads(path.read_text())
        print(f"{r['label']:<28} {r['reading']:<16} {100 * r['main_score']:6.2f}  ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
