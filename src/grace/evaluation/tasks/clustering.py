"""Clustering tasks: a JSONL file of (text, label); v-measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTaskClustering

from grace.errors import GraceInputError
from grace.evaluation.tasks.common import (
    LocalTask,
    digest,
    instantiate,
    read_jsonl,
    require_file,
    sample_indices,
    task_metadata,
)


class LocalClusteringTask(LocalTask, AbsTaskClustering):
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
    path = require_file(path, "clustering")
    meta = task_metadata(name, "Clustering", "v_measure",
                     description or f"Clustering of the texts of {path.name} by label.",
                     str(path), digest(path), category="t2c", **metadata)
    return instantiate(LocalClusteringTask, meta, seed, path=path, max_docs=max_docs)
