"""Classification tasks: train and test JSONL files of (text, label)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTaskClassification

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


class LocalClassificationTask(LocalTask, AbsTaskClassification):
    """Logistic regression on embeddings, trained on a few examples per label (mteb's protocol).

    mteb draws ``samples_per_label`` (8) training examples per label in each of ``n_experiments``
    (10) experiments and reports the mean. With ``max_train_per_label`` the training pool itself
    is a seeded sample of that many per label, so at most that many per label are encoded; when
    the pool holds no more than ``samples_per_label`` per label every experiment would train on
    the same examples, so one experiment is run.
    """

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
    train_path = require_file(train_path, "classification")
    test_path = require_file(test_path, "classification")
    meta = task_metadata(name, "Classification", "accuracy",
                     description or f"Classification: train {train_path.name}, test {test_path.name}.",
                     f"{train_path}+{test_path}", digest(train_path, test_path), category="t2c",
                     **metadata)
    return instantiate(LocalClassificationTask, meta, seed, train_path=train_path, test_path=test_path,
                       limits={"max_train_per_label": max_train_per_label, "max_test": max_test,
                               "max_labels": max_labels})
