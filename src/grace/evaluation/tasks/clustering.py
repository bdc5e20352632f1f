"""Clustering tasks: a JSONL file of (text, label); v-measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTaskClustering

from grace.errors import GraceInputError
from grace.evaluation.tasks.common import (
    LocalTask,
    file_task,
    read_jsonl,
)


class LocalClusteringTask(LocalTask, AbsTaskClustering):
    """Mini-batch k-means with one cluster per gold label; V-measure over 10 bootstrap samples of
    the (already subsampled) documents, each as large as the set itself (mteb's fast clustering)."""

    max_fraction_of_documents_to_embed = None  # we subsample ourselves, seeded
    max_document_to_embed = None

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl(self.path, {"text": str, "label": (str, int)}, "clustering")
        rows = self.subsample(rows, "max_docs")
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
    return file_task(LocalClusteringTask, "clustering", name, "Clustering", "v_measure", path, seed,
                     description, "Clustering of the texts of {name} by label.",
                     {"max_docs": max_docs}, {"category": "t2c", **metadata})
