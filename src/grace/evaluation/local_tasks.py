"""mteb tasks built from local files, so every score comes from mteb's own evaluators, offline.

Each factory returns an instance of a subclass of one of mteb's task classes (written against
mteb 2.26) whose ``load_data`` reads files instead of the Hugging Face Hub:

| factory                        | mteb class                 | type               | main score        |
|--------------------------------|----------------------------|--------------------|-------------------|
| ``make_sts_task``              | AbsTaskSTS                 | STS                | cosine_spearman   |
| ``make_lee_task``              | AbsTaskSTS                 | STS                | cosine_spearman   |
| ``make_retrieval_task``        | AbsTaskRetrieval           | Retrieval          | ndcg_at_10        |
| ``make_reranking_task``        | AbsTaskRetrieval (+top_ranked) | Reranking      | map_at_1000       |
| ``make_classification_task``   | AbsTaskClassification      | Classification     | accuracy          |
| ``make_clustering_task``       | AbsTaskClustering          | Clustering         | v_measure         |
| ``make_pair_classification_task`` | AbsTaskPairClassification | PairClassification | max_ap          |

The main scores are the ones mteb's own tasks of each type use (STSBenchmark, SciFact,
SciDocsRR, Banking77Classification, TwentyNewsgroupsClustering.v2, SprintDuplicateQuestions).
In mteb 2 reranking is retrieval over each query's own candidate list (``top_ranked``); the old
``AbsTaskReranking`` is deprecated. Layouts (as in shared/data/README.md) are in ``LAYOUTS``.

Subsampling is seeded (``random.Random(seed)``) and keeps file order, so a given file, limit and
seed always give the same subset. ``task.limits`` holds the requested limits and, after loading,
``task.sizes`` what was kept. ``metadata.dataset`` names the file(s) and a content hash of them.

mteb detail: a task's metadata must live on its class (``AbsTask.unload_data`` drops an
instance-level ``metadata``), so each factory call makes a small subclass named after the task.
"""

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

from datasets import Dataset, DatasetDict
from mteb.abstasks import (
    AbsTaskClassification,
    AbsTaskClustering,
    AbsTaskPairClassification,
    AbsTaskRetrieval,
    AbsTaskSTS,
)
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
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


# --------------------------------------------------------------------------- reading files


def _require_file(path: str | Path, layout: str) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "file not found"
        raise GraceInputError(f"{path}: {what}; expected {LAYOUTS[layout]}")
    return path


def read_jsonl(path: str | Path, fields: dict[str, type | tuple], layout: str) -> list[dict]:
    """Records of a JSONL file with the given fields (name -> accepted type(s)); errors name the
    line: invalid UTF-8 or JSON, a missing field, a wrong type, a number that is NaN or infinite."""
    path = _require_file(path, layout)
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


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
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


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.read_bytes())
    return "sha256-" + sha.hexdigest()[:16]


# --------------------------------------------------------------------------- subsampling


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


# --------------------------------------------------------------------------- metadata


def _metadata(name: str, task_type: str, main_score: str, description: str, dataset_path: str,
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


def _instantiate(base: type, metadata: TaskMetadata, seed: int, **params: Any):
    cls = type(metadata.name.replace("-", "_").replace(".", "_"), (base,),
               {"metadata": metadata, "__module__": __name__})
    return cls(seed=seed, **params)


class _LocalTask:
    """Mixin: limits and sizes of a task read from local files."""

    def _init_local(self, limits: dict[str, Any]) -> None:
        self.limits = limits
        self.sizes: dict[str, int] = {}


# --------------------------------------------------------------------------- STS


class LocalSTSTask(_LocalTask, AbsTaskSTS):
    """STS pairs from a JSONL file; Spearman of cosine vs the human score."""

    def __init__(self, path: Path, max_pairs: int | None, min_score: float, max_score: float,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._init_local({"max_pairs": max_pairs})
        self.path, self.min_score, self.max_score = path, min_score, max_score

    def _pairs(self) -> list[tuple[str, str, float]]:
        rows = read_jsonl(self.path, {"sentence1": str, "sentence2": str, "score": (int, float)}, "sts")
        return [(r["sentence1"], r["sentence2"], float(r["score"])) for r in rows]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        pairs = self._pairs()
        pairs = [pairs[i] for i in sample_indices(len(pairs), self.limits["max_pairs"], self.seed)]
        if len(pairs) < 2:
            raise GraceInputError(f"{self.metadata.name}: an STS task needs at least 2 pairs")
        s1, s2, score = zip(*pairs)
        self.dataset = DatasetDict({self.metadata.eval_splits[0]: Dataset.from_dict(
            {"sentence1": list(s1), "sentence2": list(s2), "score": list(score)})})
        self.sizes = {"pairs": len(pairs), "texts": len(set(s1) | set(s2))}
        self.data_loaded = True


class LeeSTSTask(LocalSTSTask):
    """The Lee benchmark as STS: every pair of the 50 documents, rated 0-1."""

    def _pairs(self) -> list[tuple[str, str, float]]:
        from grace.evaluation.lee import load_lee

        docs, ratings = load_lee()
        n = len(docs)
        return [(docs[i], docs[j], float(ratings[i, j])) for i in range(n) for j in range(i + 1, n)]


def make_sts_task(name: str, path: str | Path, max_pairs: int | None = None, seed: int = 0,
                  min_score: float = 0.0, max_score: float = 5.0, description: str | None = None,
                  **metadata: Any) -> LocalSTSTask:
    """STS task from ``{"sentence1","sentence2","score"}`` JSONL. ``min_score``/``max_score``: the
    rating scale (mteb normalises to 0-1; correlations do not change)."""
    path = _require_file(path, "sts")
    meta = _metadata(name, "STS", "cosine_spearman",
                     description or f"Semantic textual similarity pairs read from {path.name}.",
                     str(path), _digest(path), **metadata)
    return _instantiate(LocalSTSTask, meta, seed, path=path, max_pairs=max_pairs,
                        min_score=min_score, max_score=max_score)


def make_lee_task(name: str = "LeeDocSim", max_pairs: int | None = None, seed: int = 0) -> LeeSTSTask:
    """The Lee document-similarity benchmark (50 docs, 1,225 pairs, scores 0-1, gensim test data)."""
    from grace.data.readers import gensim_test_file

    files = [gensim_test_file("lee.cor"), gensim_test_file("similarities0-1.txt")]
    meta = _metadata(
        name, "STS", "cosine_spearman",
        "Lee, Pincombe & Welsh (2005): 50 short news documents, mean human similarity rating "
        "(0-1) of each of the 1,225 pairs; from the gensim wheel's test data.",
        "gensim:lee.cor+similarities0-1.txt", _digest(*files), domains=["News", "Written"],
        reference="https://hdl.handle.net/2440/28910", annotations_creators="human-annotated",
    )
    return _instantiate(LeeSTSTask, meta, seed, path=files[0], max_pairs=max_pairs,
                        min_score=0.0, max_score=1.0)


# --------------------------------------------------------------------------- retrieval / reranking


class LocalRetrievalTask(_LocalTask, AbsTaskRetrieval):
    """BEIR-layout retrieval from a folder; qrels of ``split``; seeded query/corpus subsample."""

    def __init__(self, folder: Path, split: str, max_queries: int | None, max_corpus: int | None,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._init_local({"max_queries": max_queries, "max_corpus": max_corpus})
        self.folder, self.split = folder, split

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        corpus = read_jsonl(self.folder / "corpus.jsonl", {"_id": (str, int), "text": str}, "retrieval")
        queries = read_jsonl(self.folder / "queries.jsonl", {"_id": (str, int), "text": str}, "retrieval")
        qrels = _read_qrels(_require_file(self.folder / f"qrels-{self.split}.tsv", "retrieval"))
        docs = {str(r["_id"]): r for r in corpus}
        query_text = {str(r["_id"]): r["text"] for r in queries}
        query_ids = [q for q in query_text if q in qrels]
        kept_q, kept_d = subsample_retrieval(query_ids, list(docs), qrels, self.limits["max_queries"],
                                             self.limits["max_corpus"], self.seed)
        kept = set(kept_d)
        relevant = {q: {d: s for d, s in qrels[q].items() if d in kept} for q in kept_q}
        self.dataset = {"default": {self.split: RetrievalSplitData(
            corpus=Dataset.from_dict({"id": kept_d,
                                      "title": [str(docs[d].get("title") or "") for d in kept_d],
                                      "text": [docs[d]["text"] for d in kept_d]}),
            queries=Dataset.from_dict({"id": kept_q, "text": [query_text[q] for q in kept_q]}),
            relevant_docs=relevant,
            top_ranked=None,
        )}}
        self.sizes = {"queries": len(kept_q), "corpus": len(kept_d),
                      "relevant": sum(1 for r in relevant.values() for s in r.values() if s > 0)}
        self.data_loaded = True


class LocalRerankingTask(_LocalTask, AbsTaskRetrieval):
    """Reranking as mteb 2 does it: each query ranks only its own candidates (top_ranked)."""

    def __init__(self, path: Path, max_queries: int | None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._init_local({"max_queries": max_queries})
        self.path = path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl(self.path, {"query": str, "positive": list, "negative": list}, "reranking")
        # as mteb's own conversion: an example without a positive or a negative cannot be scored
        rows = [r for r in rows if r["positive"] and r["negative"]]
        if not rows:
            raise GraceInputError(f"{self.path}: no record has both a positive and a negative")
        rows = [rows[i] for i in sample_indices(len(rows), self.limits["max_queries"], self.seed)]
        ids, titles, texts, queries, query_ids = [], [], [], [], []
        relevant: dict[str, dict[str, int]] = {}
        top_ranked: dict[str, list[str]] = {}
        for qi, row in enumerate(rows):
            qid = f"q{qi}"
            query_ids.append(qid)
            queries.append(row["query"])
            relevant[qid], top_ranked[qid] = {}, []
            for label, docs in ((1, row["positive"]), (0, row["negative"])):
                for di, doc in enumerate(docs):
                    if not isinstance(doc, str):
                        raise GraceInputError(f"{self.path}: query {qi}: candidates must be strings")
                    did = f"{qid}-{'pos' if label else 'neg'}{di}"
                    ids.append(did)
                    titles.append("")
                    texts.append(doc)
                    relevant[qid][did] = label
                    top_ranked[qid].append(did)
        self.dataset = {"default": {self.metadata.eval_splits[0]: RetrievalSplitData(
            corpus=Dataset.from_dict({"id": ids, "title": titles, "text": texts}),
            queries=Dataset.from_dict({"id": query_ids, "text": queries}),
            relevant_docs=relevant,
            top_ranked=top_ranked,
        )}}
        self.sizes = {"queries": len(rows), "candidates": len(ids)}
        self.data_loaded = True


def make_retrieval_task(name: str, folder: str | Path, split: str = "test", max_queries: int | None = None,
                        max_corpus: int | None = None, seed: int = 0, description: str | None = None,
                        **metadata: Any) -> LocalRetrievalTask:
    """Retrieval task from a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels-<split>.tsv``).

    ``max_queries``: seeded sample of the queries that have a relevant document. ``max_corpus``:
    corpus size; every relevant document of the kept queries is kept, the rest is a seeded sample.
    """
    folder = Path(folder)
    files = [_require_file(folder / f, "retrieval")
             for f in ("corpus.jsonl", "queries.jsonl", f"qrels-{split}.tsv")]
    meta = _metadata(name, "Retrieval", "ndcg_at_10",
                     description or f"Retrieval on the BEIR folder {folder.name} ({split} qrels).",
                     str(folder), _digest(*files), split=split, **metadata)
    return _instantiate(LocalRetrievalTask, meta, seed, folder=folder, split=split,
                        max_queries=max_queries, max_corpus=max_corpus)


def make_reranking_task(name: str, path: str | Path, max_queries: int | None = None, seed: int = 0,
                        description: str | None = None, **metadata: Any) -> LocalRerankingTask:
    """Reranking task from ``{"query","positive":[...],"negative":[...]}`` JSONL."""
    path = _require_file(path, "reranking")
    meta = _metadata(name, "Reranking", "map_at_1000",
                     description or f"Reranking of each query's candidates read from {path.name}.",
                     str(path), _digest(path), **metadata)
    return _instantiate(LocalRerankingTask, meta, seed, path=path, max_queries=max_queries)


# --------------------------------------------------------------------------- classification


class LocalClassificationTask(_LocalTask, AbsTaskClassification):
    """Logistic regression on embeddings, trained on a few examples per label (mteb's protocol).

    mteb draws ``samples_per_label`` (8) training examples per label in each of ``n_experiments``
    (10) experiments and reports the mean. With ``max_train_per_label`` the training pool itself
    is a seeded sample of that many per label, so at most that many per label are encoded; when
    the pool holds no more than ``samples_per_label`` per label every experiment would train on
    the same examples, so one experiment is run.
    """

    def __init__(self, train_path: Path, test_path: Path, max_train_per_label: int | None,
                 max_test: int | None, max_labels: int | None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._init_local({"max_train_per_label": max_train_per_label, "max_test": max_test,
                                "max_labels": max_labels})
        self.train_path, self.test_path = train_path, test_path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        fields = {"text": str, "label": (str, int)}
        train = read_jsonl(self.train_path, fields, "classification")
        test = read_jsonl(self.test_path, fields, "classification")
        seed, limits = self.seed, self.limits
        labels = sorted({str(r["label"]) for r in train} & {str(r["label"]) for r in test})
        if len(labels) < 2:
            raise GraceInputError(f"{self.train_path}, {self.test_path}: need at least 2 labels "
                                  "present in both files")
        labels = [labels[i] for i in sample_indices(len(labels), limits["max_labels"], seed)]
        keep = set(labels)
        by_label: dict[str, list[int]] = defaultdict(list)  # label -> row numbers in train
        for i, row in enumerate(train):
            if str(row["label"]) in keep:
                by_label[str(row["label"])].append(i)
        cap = limits["max_train_per_label"]
        pool = sorted(by_label[label][j] for label in labels
                      for j in sample_indices(len(by_label[label]), cap, seed))
        train = [train[i] for i in pool]
        test = [r for r in test if str(r["label"]) in keep]
        test = [test[i] for i in sample_indices(len(test), limits["max_test"], seed)]
        label_id = {label: i for i, label in enumerate(labels)}
        if cap is not None:
            self.samples_per_label = min(type(self).samples_per_label, cap)
        largest_pool = max(len(by_label[label]) if cap is None else min(cap, len(by_label[label]))
                           for label in labels)
        if largest_pool <= self.samples_per_label:
            self.n_experiments = 1  # every experiment would train on the same examples
        self.label_names = labels

        def table(rows):
            return Dataset.from_dict({"text": [r["text"] for r in rows],
                                      "label": [label_id[str(r["label"])] for r in rows]})

        self.dataset = DatasetDict({self.train_split: table(train), self.metadata.eval_splits[0]: table(test)})
        self.sizes = {"labels": len(labels), "train": len(train), "test": len(test),
                      "samples_per_label": self.samples_per_label, "n_experiments": self.n_experiments}
        self.data_loaded = True


def make_classification_task(name: str, train_path: str | Path, test_path: str | Path,
                             max_train_per_label: int | None = None, max_test: int | None = None,
                             max_labels: int | None = None, seed: int = 0,
                             description: str | None = None, **metadata: Any) -> LocalClassificationTask:
    """Classification from ``{"text","label"}`` JSONL train and test files.

    ``max_labels``: seeded sample of the labels (rows of other labels are dropped from both files);
    ``max_train_per_label``: seeded training pool per label; ``max_test``: seeded test sample.
    """
    train_path = _require_file(train_path, "classification")
    test_path = _require_file(test_path, "classification")
    meta = _metadata(name, "Classification", "accuracy",
                     description or f"Classification: train {train_path.name}, test {test_path.name}.",
                     f"{train_path}+{test_path}", _digest(train_path, test_path), category="t2c",
                     **metadata)
    return _instantiate(LocalClassificationTask, meta, seed, train_path=train_path, test_path=test_path,
                        max_train_per_label=max_train_per_label, max_test=max_test, max_labels=max_labels)


# --------------------------------------------------------------------------- clustering


class LocalClusteringTask(_LocalTask, AbsTaskClustering):
    """Mini-batch k-means with one cluster per gold label; V-measure over 10 bootstrap samples of
    the (already subsampled) documents, each as large as the set itself (mteb's fast clustering)."""

    max_fraction_of_documents_to_embed = None  # we subsample ourselves, seeded
    max_document_to_embed = None

    def __init__(self, path: Path, max_docs: int | None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._init_local({"max_docs": max_docs})
        self.path = path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl(self.path, {"text": str, "label": (str, int)}, "clustering")
        rows = [rows[i] for i in sample_indices(len(rows), self.limits["max_docs"], self.seed)]
        labels = [str(r["label"]) for r in rows]
        if len(set(labels)) < 2:
            raise GraceInputError(f"{self.path}: clustering needs at least 2 labels")
        self.max_documents_per_cluster = min(len(rows), type(self).max_documents_per_cluster)
        self.dataset = DatasetDict({self.metadata.eval_splits[0]: Dataset.from_dict(
            {"sentences": [r["text"] for r in rows], "labels": labels})})
        self.sizes = {"docs": len(rows), "labels": len(set(labels))}
        self.data_loaded = True


def make_clustering_task(name: str, path: str | Path, max_docs: int | None = None, seed: int = 0,
                         description: str | None = None, **metadata: Any) -> LocalClusteringTask:
    """Clustering from ``{"text","label"}`` JSONL; ``max_docs``: seeded document sample."""
    path = _require_file(path, "clustering")
    meta = _metadata(name, "Clustering", "v_measure",
                     description or f"Clustering of the texts of {path.name} by label.",
                     str(path), _digest(path), category="t2c", **metadata)
    return _instantiate(LocalClusteringTask, meta, seed, path=path, max_docs=max_docs)


# --------------------------------------------------------------------------- pair classification


class LocalPairClassificationTask(_LocalTask, AbsTaskPairClassification):
    """Average precision of the pair similarity for telling positive pairs (label 1) from negatives."""

    def __init__(self, path: Path, max_pairs: int | None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._init_local({"max_pairs": max_pairs})
        self.path = path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl(self.path, {"sentence1": str, "sentence2": str, "label": (int, str)},
                          "pair_classification")
        rows = [rows[i] for i in sample_indices(len(rows), self.limits["max_pairs"], self.seed)]
        labels = []
        for row in rows:
            if str(row["label"]) not in ("0", "1"):
                raise GraceInputError(f"{self.path}: label {row['label']!r} is not 0 or 1")
            labels.append(int(row["label"]))
        # mteb reads a 1-row split as the old one-row-per-subset format, so insist on 2+ pairs
        if len(rows) < 2 or len(set(labels)) < 2:
            raise GraceInputError(f"{self.path}: pair classification needs positive and negative pairs")
        self.dataset = DatasetDict({self.metadata.eval_splits[0]: Dataset.from_dict(
            {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows],
             "labels": labels})})
        self.sizes = {"pairs": len(rows), "positives": sum(labels)}
        self.data_loaded = True


def make_pair_classification_task(name: str, path: str | Path, max_pairs: int | None = None,
                                  seed: int = 0, description: str | None = None,
                                  **metadata: Any) -> LocalPairClassificationTask:
    """Pair classification from ``{"sentence1","sentence2","label"}`` JSONL (label 1 = positive)."""
    path = _require_file(path, "pair_classification")
    meta = _metadata(name, "PairClassification", "max_ap",
                     description or f"Pair classification of the pairs of {path.name}.",
                     str(path), _digest(path), **metadata)
    return _instantiate(LocalPairClassificationTask, meta, seed, path=path, max_pairs=max_pairs)
