"""Training texts from the parts of shared/data's train splits that no suite scores (issue 25):
questions and titles, beside the Wikipedia sentences, for GRACE's unsupervised mode.

    .venv/bin/python -m benchmarks.quality.unscored_data [--data-dir ../shared/data] [--out runs/data]

- ``questions.txt``: TREC's train questions less every one the ``dev`` suite scores (the test
  side of its split, whole) and the few-shot training pools of ``dev``, ``dev-mini`` and
  ``lite`` (which encode them too);
- ``titles.txt``: StackOverflow's train-half titles less the ones ``dev`` clusters;
- ``mixed.txt``: the Wikipedia sentences, the questions and the titles, shuffled together
  (seeded).
Texts are compared lower-cased, without punctuation and spaces (the data README's rule); a
check at the end asserts that no written text is one any suite scores. "Scores" means the
suites as they are run here: seed 0 and their subsamples (``--full`` or another ``--seed``
draws other few-shot pools). The files are rebuilt at every call (seconds), so a changed suite
never leaves stale training texts behind.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from benchmarks.common import paths


def norm(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def scored_texts(data_dir: Path) -> set[str]:
    """Every text (normalised) that a task of ``dev``, ``dev-mini`` or ``lite`` encodes, from the
    tasks as the suites load them; for DevTREC the whole test side of its split."""
    from grace.evaluation.dev_data import label_split_files
    from grace.evaluation.suite import build_suite

    seen: set[str] = set()
    for suite in ("dev", "dev-mini", "lite"):
        tasks, _ = build_suite(suite, data_dir)
        for task in tasks:
            task.load_data()
            data = task.dataset
            for split in data.values() if isinstance(data, dict) and "default" not in data else []:
                for column in ("text", "sentences", "sentence1", "sentence2"):
                    if column in split.column_names:
                        seen.update(norm(t) for t in split[column])
            if isinstance(data, dict) and "default" in data:  # retrieval: queries and corpus
                for part in data["default"].values():
                    seen.update(norm(t) for t in part["queries"]["text"])
                    seen.update(norm(t) for t in part["corpus"]["text"])
    _, trec_test_side = label_split_files(data_dir, "classification/trec-train.jsonl")
    seen.update(norm(r["text"]) for r in _rows(trec_test_side))
    return seen


def write_unscored(data_dir: Path, out: Path, seed: int = 0) -> dict[str, Path]:
    """(Re)write the three files and return their paths (unchanged files are left as they are)."""
    files = {name: out / f"{name}.txt" for name in ("questions", "titles", "mixed")}
    scored = scored_texts(data_dir)

    def keep(texts):
        kept, seen = [], set()
        for text in texts:
            key = norm(text)
            if key and key not in scored and key not in seen:
                seen.add(key)
                kept.append(" ".join(text.split()))
        return kept

    questions = keep(r["text"] for r in _rows(data_dir / "classification/trec-train.jsonl"))
    titles = keep(r["text"] for r in _rows(data_dir / "clustering/stackoverflow-train.jsonl"))
    wiki = keep((data_dir / "texts/wiki-sentences.txt").read_text(encoding="utf-8").splitlines())
    mixed = wiki + questions + titles
    random.Random(seed).shuffle(mixed)
    out.mkdir(parents=True, exist_ok=True)
    for name, texts in (("questions", questions), ("titles", titles), ("mixed", mixed)):
        assert not {norm(t) for t in texts} & scored  # nothing a suite scores
        content = "".join(t + "\n" for t in texts)
        if files[name].is_file() and files[name].read_text(encoding="utf-8") == content:
            continue  # a training run may be reading it
        tmp = files[name].with_suffix(".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(files[name])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(paths.SHARED_DATA))
    parser.add_argument("--out", default=str(paths.RUNS / "data"))
    args = parser.parse_args()
    for name, path in write_unscored(Path(args.data_dir), Path(args.out)).items():
        print(f"{name}: {sum(1 for _ in path.open(encoding='utf-8'))} texts in {path}")


if __name__ == "__main__":
    main()
