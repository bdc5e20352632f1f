"""STS tasks: pairs from a JSONL file, and the Lee document-similarity benchmark; Spearman of
cosine vs the human score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTaskSTS

from grace.errors import GraceInputError
from grace.evaluation.tasks.common import (
    LocalTask,
    digest,
    file_task,
    instantiate,
    read_jsonl,
    task_metadata,
)


class LocalSTSTask(LocalTask, AbsTaskSTS):
    """STS pairs from a JSONL file; Spearman of cosine vs the human score."""

    def _pairs(self) -> list[tuple[str, str, float]]:
        rows = read_jsonl(self.path, {"sentence1": str, "sentence2": str, "score": (int, float)}, "sts")
        return [(r["sentence1"], r["sentence2"], float(r["score"])) for r in rows]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        pairs = self._pairs()
        pairs = self.subsample(pairs, "max_pairs")
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
    return file_task(LocalSTSTask, "sts", name, "STS", "cosine_spearman", path, seed, description,
                     "Semantic textual similarity pairs read from {name}.", {"max_pairs": max_pairs},
                     metadata, min_score=min_score, max_score=max_score)


def make_lee_task(name: str = "LeeDocSim", max_pairs: int | None = None, seed: int = 0) -> LeeSTSTask:
    """The Lee document-similarity benchmark (50 docs, 1,225 pairs, scores 0-1, gensim test data)."""
    from grace.data.readers import gensim_test_file

    files = [gensim_test_file("lee.cor"), gensim_test_file("similarities0-1.txt")]
    meta = task_metadata(
        name, "STS", "cosine_spearman",
        "Lee, Pincombe & Welsh (2005): 50 short news documents, mean human similarity rating "
        "(0-1) of each of the 1,225 pairs; from the gensim wheel's test data.",
        "gensim:lee.cor+similarities0-1.txt", digest(*files), domains=["News", "Written"],
        reference="https://hdl.handle.net/2440/28910", annotations_creators="human-annotated",
    )
    return instantiate(LeeSTSTask, meta, seed, path=files[0], limits={"max_pairs": max_pairs},
                       min_score=0.0, max_score=1.0)
