"""What every local task shares: the file layouts, readers whose errors name FILE:LINE,
seeded subsampling, and the metadata mteb needs."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from mteb.abstasks.task_metadata import TaskMetadata

from grace.data.readers import json_lines, read_utf8
from grace.errors import GraceInputError

LAYOUTS = {
    "sts": 'JSONL, one {"sentence1": str, "sentence2": str, "score": float} per line',
    "classification": 'JSONL, one {"text": str, "label": str} per line',
    "clustering": 'JSONL, one {"text": str, "label": str} per line',
    "pair_classification": 'JSONL, one {"sentence1": str, "sentence2": str, "label": 0 or 1} per line '
                           "(1 = positive pair)",
    "reranking": 'JSONL, one {"query": str, "positive": [str, ...], "negative": [str, ...]} per line',
    "retrieval": 'a BEIR folder: corpus.jsonl {"_id", "title", "text"}, queries.jsonl {"_id", "text"}, '
                 "qrels-<split>.tsv with header query-id<TAB>corpus-id<TAB>score",
}



# --- reading files


def require_file(path: str | Path, layout: str) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "file not found"
        raise GraceInputError(f"{path}: {what}; expected {LAYOUTS[layout]}")
    return path


def read_jsonl(path: str | Path, fields: dict[str, type | tuple], layout: str) -> list[dict]:
    """Records of a JSONL file with the given fields (name -> accepted type(s)); errors name the
    line: invalid UTF-8 or JSON, a missing field, a wrong type, a number that is NaN or infinite."""
    path = require_file(path, layout)
    rows = []
    for where, row in json_lines(path):
        if not isinstance(row, dict):
            raise GraceInputError(f"{where}: expected a JSON object; {LAYOUTS[layout]}")
        for name, kind in fields.items():
            if name not in row:
                raise GraceInputError(f"{where}: missing field '{name}'; expected {LAYOUTS[layout]}")
            value = row[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise GraceInputError(f"{where}: field '{name}' has type {type(value).__name__}; "
                                      f"expected {LAYOUTS[layout]}")
            if isinstance(value, float) and not math.isfinite(value):
                raise GraceInputError(f"{where}: field '{name}' is {value}; expected a finite number")
        rows.append(row)
    if not rows:
        raise GraceInputError(f"{path}: no records; expected {LAYOUTS[layout]}")
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with io.StringIO(read_utf8(path), newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header != ["query-id", "corpus-id", "score"]:
            raise GraceInputError(f"{path}:1: expected the header query-id<TAB>corpus-id<TAB>score")
        for number, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                query_id, corpus_id, score = row
                qrels[query_id][corpus_id] = int(score)
            except ValueError:
                raise GraceInputError(f"{path}:{number}: expected query-id<TAB>corpus-id<TAB>integer "
                                      "score") from None
    return dict(qrels)


def digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.read_bytes())
    return "sha256-" + sha.hexdigest()[:16]


# --- subsampling


def sample_indices(n: int, k: int | None, seed: int) -> list[int]:
    """A seeded sample of ``min(k, n)`` of ``range(n)`` in increasing order (all of it if k is None)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


def subsample_retrieval(query_ids: list[str], corpus_ids: list[str], qrels: dict[str, dict[str, int]],
                        max_queries: int | None = None, max_corpus: int | None = None,
                        seed: int = 0) -> tuple[list[str], list[str]]:
    """(kept query ids, kept corpus ids), both in their input order.

    Queries: those with at least one relevant (score > 0) document in the corpus, then a seeded
    sample of ``max_queries``. Corpus: every relevant document of the kept queries, plus a seeded
    sample of the others up to ``max_corpus`` in all. The relevant documents are always kept, so
    the corpus exceeds ``max_corpus`` when they alone outnumber it (with a warning).
    """
    in_corpus = set(corpus_ids)
    answerable = [q for q in query_ids
                  if any(score > 0 and d in in_corpus for d, score in qrels.get(q, {}).items())]
    kept_queries = [answerable[i] for i in sample_indices(len(answerable), max_queries, seed)]
    relevant = {d for q in kept_queries for d, score in qrels[q].items() if score > 0 and d in in_corpus}
    if max_corpus is None:
        return kept_queries, list(corpus_ids)
    if len(relevant) > max_corpus:
        warnings.warn(f"the {len(kept_queries)} kept queries have {len(relevant)} relevant documents, "
                      f"more than max_corpus={max_corpus}; keeping all of them", stacklevel=2)
    others = [d for d in corpus_ids if d not in relevant]
    picked = {others[i] for i in sample_indices(len(others), max(0, max_corpus - len(relevant)), seed)}
    return kept_queries, [d for d in corpus_ids if d in relevant or d in picked]


# --- metadata


def task_metadata(name: str, task_type: str, main_score: str, description: str, dataset_path: str,
              revision: str, category: str = "t2t", split: str = "test", **extra: Any) -> TaskMetadata:
    return TaskMetadata(
        name=name,
        description=description,
        dataset={"path": dataset_path, "revision": revision},
        type=task_type,
        category=category,
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score=main_score,
        date=None,
        domains=extra.pop("domains", None),
        task_subtypes=None,
        license=extra.pop("license", "not specified"),
        annotations_creators=extra.pop("annotations_creators", None),
        dialect=[],
        sample_creation="found",
        bibtex_citation=extra.pop("bibtex_citation", ""),
        reference=extra.pop("reference", None),
        **extra,
    )


def instantiate(base: type, metadata: TaskMetadata, seed: int, **params: Any):
    cls = type(metadata.name.replace("-", "_").replace(".", "_"), (base,),
               {"metadata": metadata, "__module__": __name__})
    return cls(seed=seed, **params)


class LocalTask:
    """Mixin of every local task: its files (``fields``: ``path``, ``folder`` ...), its limits
    and, after loading, the sizes kept."""

    def __init__(self, *, seed: int = 0, limits: dict[str, Any], **fields: Any) -> None:
        super().__init__(seed=seed)
        self.limits, self.sizes = limits, {}
        for name, value in fields.items():
            setattr(self, name, value)

    def subsample(self, rows: list, limit: str) -> list:
        """A seeded sample of at most ``limits[limit]`` of ``rows``, in their order."""
        return [rows[i] for i in sample_indices(len(rows), self.limits[limit], self.seed)]


def file_task(cls: type, layout: str, name: str, task_type: str, main_score: str, path,
              seed: int, description: str | None, default_description: str, limits: dict,
              metadata: dict, **fields: Any):
    """A task of ``cls`` read from one file ``path`` (checked against ``layout``); the
    description defaults to ``default_description`` with ``{name}`` the file's name."""
    path = require_file(path, layout)
    meta = task_metadata(name, task_type, main_score,
                         description or default_description.format(name=path.name), str(path),
                         digest(path), **metadata)
    return instantiate(cls, meta, seed, limits=limits, path=path, **fields)
