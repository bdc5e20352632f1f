"""Retrieval (a BEIR folder) and reranking (each query's own candidates, mteb 2's
``top_ranked``) tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset
from mteb.abstasks import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from grace.errors import GraceInputError
from grace.evaluation.tasks.common import (
    LocalTask,
    digest,
    file_task,
    instantiate,
    read_jsonl,
    read_qrels,
    require_file,
    subsample_retrieval,
    task_metadata,
)


class LocalRetrievalTask(LocalTask, AbsTaskRetrieval):
    """BEIR-layout retrieval from a folder; qrels of ``split``; seeded query/corpus subsample."""

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        corpus = read_jsonl(self.folder / "corpus.jsonl", {"_id": (str, int), "text": str}, "retrieval")
        queries = read_jsonl(self.folder / "queries.jsonl", {"_id": (str, int), "text": str}, "retrieval")
        qrels = read_qrels(require_file(self.folder / f"qrels-{self.split}.tsv", "retrieval"))
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


class LocalRerankingTask(LocalTask, AbsTaskRetrieval):
    """Reranking as mteb 2 does it: each query ranks only its own candidates (top_ranked)."""

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl(self.path, {"query": str, "positive": list, "negative": list}, "reranking")
        # as mteb's own conversion: an example without a positive or a negative cannot be scored
        rows = [r for r in rows if r["positive"] and r["negative"]]
        if not rows:
            raise GraceInputError(f"{self.path}: no record has both a positive and a negative")
        rows = self.subsample(rows, "max_queries")
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
    files = [require_file(folder / f, "retrieval")
             for f in ("corpus.jsonl", "queries.jsonl", f"qrels-{split}.tsv")]
    meta = task_metadata(name, "Retrieval", "ndcg_at_10",
                     description or f"Retrieval on the BEIR folder {folder.name} ({split} qrels).",
                     str(folder), digest(*files), split=split, **metadata)
    return instantiate(LocalRetrievalTask, meta, seed, folder=folder, split=split,
                       limits={"max_queries": max_queries, "max_corpus": max_corpus})


def make_reranking_task(name: str, path: str | Path, max_queries: int | None = None, seed: int = 0,
                        description: str | None = None, **metadata: Any) -> LocalRerankingTask:
    """Reranking task from ``{"query","positive":[...],"negative":[...]}`` JSONL."""
    return file_task(LocalRerankingTask, "reranking", name, "Reranking", "map_at_1000", path, seed,
                     description, "Reranking of each query's candidates read from {name}.",
                     {"max_queries": max_queries}, metadata)
