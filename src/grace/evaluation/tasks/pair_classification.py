"""Pair classification tasks: (sentence1, sentence2, label 0/1) JSONL; max average precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTaskPairClassification

from grace.errors import GraceInputError
from grace.evaluation.tasks.common import (
    LocalTask,
    file_task,
    read_jsonl,
)


class LocalPairClassificationTask(LocalTask, AbsTaskPairClassification):
    """Average precision of the pair similarity for telling positive pairs (label 1) from negatives."""

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl(self.path, {"sentence1": str, "sentence2": str, "label": (int, str)},
                          "pair_classification")
        rows = self.subsample(rows, "max_pairs")
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
    return file_task(LocalPairClassificationTask, "pair_classification", name, "PairClassification",
                     "max_ap", path, seed, description, "Pair classification of the pairs of {name}.",
                     {"max_pairs": max_pairs}, metadata)
