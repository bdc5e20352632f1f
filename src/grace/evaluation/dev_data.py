"""Derived task files: tasks of the types the shared data has no file for (clustering, pair
classification, reranking), built from one split of a data folder laid out like shared/data.

``derive_files(data_dir, split)`` writes (once; the folder is named after the split, a hash of
its sources and the derivation's version, so changed sources give new files) under
``$GRACE_CACHE/derived-tasks/<split>-<hash>/``. Split ``dev`` (the ``dev`` suite) reads only
training and dev splits, so that settings can be chosen without looking at any test split;
split ``test`` (the ``lite`` suite's extra tasks) reads only test splits:

- ``banking77-train.jsonl`` / ``banking77-test.jsonl`` (dev only): BANKING77's TRAIN file split
  in two, every 5th row of each intent to the test side (classification; ``lite`` uses the
  real test file);
- ``banking77-clustering.jsonl``: BANKING77 texts (dev: train file; test: test file) of
  ``CLUSTER_INTENTS`` intents (a seeded choice; with all 77 and a few hundred texts, V-measure
  rewards many tiny clusters), with their intents (clustering);
- ``stsb-pairs.jsonl``: STS-B pairs (dev: dev split; test: test split) scored >= 4 (label 1)
  or <= 1 (label 0) of 5, the rest dropped (pair classification);
- ``scifact-rerank.jsonl``: each SciFact query of the split's qrels (dev: train; test: test)
  with its relevant abstracts and, as hard negatives, the ``NEGATIVES`` most similar other
  abstracts by TF-IDF cosine (a lexical retriever standing in for BM25; scikit-learn's),
  reranking.

Abstracts are ``title + " " + text``, as the retrieval task's documents read.

``label_split_files(data_dir, name)`` does for any (text, label) training file what the dev
split does for BANKING77 (every 5th row of each label to the test side), for the dev suite's
tasks whose data set has no dev split of its own (TREC questions).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from grace.errors import GraceInputError

# split -> (role -> file under data_dir): the only files a split's derivation reads
SPLIT_SOURCES = {
    "dev": {"banking77": "classification/banking77-train.jsonl", "sts": "sts/stsb-dev.jsonl",
            "corpus": "retrieval/scifact/corpus.jsonl", "queries": "retrieval/scifact/queries.jsonl",
            "qrels": "retrieval/scifact/qrels-train.tsv"},
    "test": {"banking77": "classification/banking77-test.jsonl", "sts": "sts/stsb-test.jsonl",
             "corpus": "retrieval/scifact/corpus.jsonl", "queries": "retrieval/scifact/queries.jsonl",
             "qrels": "retrieval/scifact/qrels-test.tsv"},
}
SOURCES = tuple(SPLIT_SOURCES["dev"].values())  # the dev suite's sources
NEGATIVES = 10  # TF-IDF-hard negatives per reranking query
CLUSTER_INTENTS = 10
FILES = ("banking77-clustering.jsonl", "stsb-pairs.jsonl", "scifact-rerank.jsonl")
SPLIT_FILES = {"dev": ("banking77-train.jsonl", "banking77-test.jsonl") + FILES, "test": FILES}


def _rows(path: Path) -> list[dict]:
    from grace.data.readers import json_lines

    return [row for _, row in json_lines(path)]


def _write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)  # a killed run never leaves half a file under the final name


def split_by_label(rows: list[dict], every: int = 5) -> tuple[list[dict], list[dict]]:
    """(train, test): every ``every``-th row of each label (in file order) goes to test."""
    seen: dict[str, int] = defaultdict(int)
    train, test = [], []
    for row in rows:
        (test if seen[row["label"]] % every == every - 1 else train).append(row)
        seen[row["label"]] += 1
    return train, test


def sts_pairs(rows: list[dict], high: float = 4.0, low: float = 1.0) -> list[dict]:
    """Pair-classification rows from STS rows: score >= high -> 1, <= low -> 0, others dropped."""
    out = []
    for row in rows:
        score = float(row["score"])
        if score >= high or score <= low:
            out.append({"sentence1": row["sentence1"], "sentence2": row["sentence2"],
                        "label": int(score >= high)})
    return out


def rerank_rows(corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, set[str]],
                negatives: int = NEGATIVES) -> list[dict]:
    """Per query with relevant documents: {"query", "positive": their texts, "negative": the
    ``negatives`` most TF-IDF-similar other documents}."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    ids = list(corpus)
    vectorizer = TfidfVectorizer(sublinear_tf=True).fit([corpus[d] for d in ids])
    docs = vectorizer.transform([corpus[d] for d in ids])  # (D, V), rows L2-normalised
    out = []
    for qid, relevant in qrels.items():
        if qid not in queries or not relevant & set(ids):
            continue
        scores = (docs @ vectorizer.transform([queries[qid]]).T).toarray().ravel()  # (D,)
        ranked = [ids[i] for i in scores.argsort()[::-1] if ids[i] not in relevant][:negatives]
        out.append({"query": queries[qid], "positive": [corpus[d] for d in sorted(relevant) if d in corpus],
                    "negative": [corpus[d] for d in ranked]})
    return out


VERSION = 2  # bump when the derivation changes: the folder name changes with it


def _digest(root: Path, split: str) -> str:
    h = hashlib.sha256(f"{split} v{VERSION} negatives {NEGATIVES} intents {CLUSTER_INTENTS}".encode())
    for name in SPLIT_SOURCES[split].values():
        h.update(name.encode())
        h.update(hashlib.sha256((root / name).read_bytes()).digest())
    return h.hexdigest()[:16]


def derive_files(data_dir: str | Path, split: str = "dev") -> Path:
    """The folder holding ``split``'s derived files for ``data_dir`` (written if missing)."""
    if split not in SPLIT_SOURCES:
        raise GraceInputError(f"unknown split '{split}' for derived tasks: choose one of "
                              f"{', '.join(SPLIT_SOURCES)}")
    from grace.models.backbones import cache_dir

    root, sources = Path(data_dir), SPLIT_SOURCES[split]
    missing = [name for name in sources.values() if not (root / name).is_file()]
    if missing:
        only = "training/dev splits only" if split == "dev" else "test splits only"
        raise GraceInputError(f"the {split} split's derived tasks need {root / missing[0]} ({only})")
    out = cache_dir() / "derived-tasks" / f"{split}-{_digest(root, split)}"
    if all((out / f).is_file() for f in SPLIT_FILES[split]):
        return out
    out.mkdir(parents=True, exist_ok=True)
    banking = _rows(root / sources["banking77"])
    if split == "dev":
        train, test = split_by_label(banking)
        _write(out / "banking77-train.jsonl", train)
        _write(out / "banking77-test.jsonl", test)
    import random

    labels = sorted({r["label"] for r in banking})
    intents = set(random.Random(0).sample(labels, min(CLUSTER_INTENTS, len(labels))))
    _write(out / "banking77-clustering.jsonl",
           [{"text": r["text"], "label": r["label"]} for r in banking if r["label"] in intents])
    _write(out / "stsb-pairs.jsonl", sts_pairs(_rows(root / sources["sts"])))
    corpus = {str(r["_id"]): f"{r.get('title') or ''} {r.get('text') or ''}".strip()
              for r in _rows(root / sources["corpus"])}
    queries = {str(r["_id"]): r["text"] for r in _rows(root / sources["queries"])}
    qrels: dict[str, set[str]] = defaultdict(set)
    for line in (root / sources["qrels"]).read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and float(parts[2]) > 0:
            qrels[parts[0]].add(parts[1])
    _write(out / "scifact-rerank.jsonl", rerank_rows(corpus, queries, dict(qrels)))
    return out


def label_split_files(data_dir: str | Path, name: str, every: int = 5) -> tuple[Path, Path]:
    """(train, test) files of ``split_by_label``'s split of the (text, label) JSONL ``name``
    under ``data_dir``, written once under ``$GRACE_CACHE/derived-tasks/`` (the folder is named
    after the file's content hash, so a changed file gives new files)."""
    from grace.models.backbones import cache_dir

    source = Path(data_dir) / name
    if not source.is_file():
        raise GraceInputError(f"the dev suite needs {source} (training/dev splits only)")
    h = hashlib.sha256(f"label-split v{VERSION} every {every} {name}".encode())
    h.update(source.read_bytes())
    out = cache_dir() / "derived-tasks" / f"split-{Path(name).stem}-{h.hexdigest()[:16]}"
    train_path, test_path = out / "train.jsonl", out / "test.jsonl"
    if not (train_path.is_file() and test_path.is_file()):
        out.mkdir(parents=True, exist_ok=True)
        train, test = split_by_label(_rows(source), every)
        _write(train_path, train)
        _write(test_path, test)
    return train_path, test_path


def derive_dev_files(data_dir: str | Path) -> Path:
    """``derive_files(data_dir, "dev")``: the dev suite's files (training/dev splits only)."""
    return derive_files(data_dir, "dev")
