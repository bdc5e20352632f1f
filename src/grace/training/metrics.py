"""Per-step metrics as JSON lines, safe across kill-and-resume.

On resume, lines for steps after the checkpoint being resumed are dropped (those steps will be
run again), so ``metrics.jsonl`` holds each step once. Every line is flushed when written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from grace.data.readers import json_lines


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    def __init__(self, path: str | Path, resume_step: int = 0, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.path.exists():  # a line cut by a kill is dropped
            for _, row in json_lines(self.path, skip_invalid=True):
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    kept.append(json.dumps(row))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            handle.flush()
