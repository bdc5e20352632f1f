"""The tasks of the ``lite`` and ``dev`` suites: which files each needs, how it is built and its
subsample limits (the table and the reasons are in grace.evaluation.suite's docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from grace.evaluation.dev_data import SPLIT_SOURCES


@dataclass(frozen=True)
class SuiteTask:
    name: str  # task name in mteb and in the results
    files: tuple[str, ...]  # needed under data_dir; () = built-in data
    build: Callable[..., Any]  # build(name, data_dir, seed=..., **limits) -> mteb task
    lite: dict = field(default_factory=dict)  # subsample limits of the lite suite


def _lee(name, data_dir, seed, **limits):
    from grace.evaluation.tasks import make_lee_task

    return make_lee_task(name, seed=seed, **limits)


def _sts(path, min_score, max_score):
    def build(name, data_dir, seed, **limits):
        from grace.evaluation.tasks import make_sts_task

        return make_sts_task(name, data_dir / path, seed=seed, min_score=min_score,
                             max_score=max_score, **limits)
    return build


def _scifact(name, data_dir, seed, **limits):
    from grace.evaluation.tasks import make_retrieval_task

    return make_retrieval_task(name, data_dir / "retrieval/scifact", split="test", seed=seed,
                               description="SciFact (BEIR test split: SciFact dev claims) against "
                               "the SciFact abstracts.", **limits)


def _banking77(name, data_dir, seed, **limits):
    from grace.evaluation.tasks import make_classification_task

    return make_classification_task(name, data_dir / "classification/banking77-train.jsonl",
                                    data_dir / "classification/banking77-test.jsonl", seed=seed,
                                    description="BANKING77 intent classification.", **limits)


def _derived(build, split):
    """A builder that reads ``split``'s derived files (grace.evaluation.dev_data)."""
    def wrapped(name, data_dir, seed, **limits):
        from grace.evaluation.dev_data import derive_files

        return build(name, derive_files(data_dir, split), data_dir, seed, **limits)
    return wrapped


def _dev_scifact(name, data_dir, seed, **limits):
    from grace.evaluation.tasks import make_retrieval_task

    return make_retrieval_task(name, data_dir / "retrieval/scifact", split="train", seed=seed,
                               description="SciFact TRAIN claims against the SciFact abstracts.",
                               **limits)


def _dev_banking77(name, derived, data_dir, seed, **limits):
    from grace.evaluation.tasks import make_classification_task

    return make_classification_task(name, derived / "banking77-train.jsonl",
                                    derived / "banking77-test.jsonl", seed=seed,
                                    description="BANKING77 intents, its TRAIN file split in two.",
                                    **limits)


def _from_file(factory: str, filename: str, description: str):
    """A builder of a derived-file task: grace.evaluation.tasks' ``factory`` on ``filename`` of
    the derived folder (used with ``_derived``)."""
    def build(name, derived, data_dir, seed, **limits):
        import grace.evaluation.tasks as tasks

        return getattr(tasks, factory)(name, derived / filename, seed=seed, description=description,
                                       **limits)
    return build


def _clustering(split_name):
    return _from_file("make_clustering_task", "banking77-clustering.jsonl",
                      f"BANKING77 {split_name} texts clustered by intent.")


def _pairs(split_name):
    return _from_file("make_pair_classification_task", "stsb-pairs.jsonl",
                      f"STS-B {split_name} pairs: >= 4 similar, <= 1 not.")


def _rerank(split_name):
    return _from_file("make_reranking_task", "scifact-rerank.jsonl",
                      f"Each SciFact {split_name} claim's relevant abstracts among TF-IDF-hard negatives.")


def _hotpotqa(split):
    def build(name, data_dir, seed, **limits):
        from grace.evaluation.tasks import make_retrieval_task

        return make_retrieval_task(
            name, data_dir / "retrieval/hotpotqa-500", split=split, seed=seed,
            description=f"HotpotQA multi-hop questions ({split.upper()} qrels of IRCoT's 500-question "
            "sample) against Wikipedia intro paragraphs (their supporting and distractor paragraphs).",
            **limits)
    return build


def _labelled(train: str, test: str, description: str):
    """A classification task on (text, label) files under data_dir: ``test`` None = ``train``
    split in two (grace.evaluation.dev_data.label_split_files), for the dev suite."""
    def build(name, data_dir, seed, **limits):
        from grace.evaluation.dev_data import label_split_files
        from grace.evaluation.tasks import make_classification_task

        train_path, test_path = ((data_dir / train, data_dir / test) if test is not None
                                 else label_split_files(data_dir, train))
        return make_classification_task(name, train_path, test_path, seed=seed,
                                        description=description, **limits)
    return build


def _file(factory: str, path: str, description: str):
    """grace.evaluation.tasks' ``factory`` on the file ``path`` under data_dir."""
    def build(name, data_dir, seed, **limits):
        import grace.evaluation.tasks as tasks

        return getattr(tasks, factory)(name, data_dir / path, seed=seed, description=description,
                                       **limits)
    return build


def _question_tasks(prefix: str, split: str, sizes: dict) -> tuple[SuiteTask, ...]:
    """The five tasks of questions, tweets and titles (shared/data's second batch) for the suite
    of ``split`` ("dev": choosing splits; "test": test splits), each of the files it reads."""
    dev = split == "dev"
    hotpot = ("retrieval/hotpotqa-500/corpus.jsonl", "retrieval/hotpotqa-500/queries.jsonl",
              f"retrieval/hotpotqa-500/qrels-{split}.tsv")
    trec = ("classification/trec-train.jsonl",) + (() if dev else ("classification/trec-test.jsonl",))
    emotion = ("classification/emotion-train.jsonl", f"classification/emotion-{split}.jsonl")
    quora = f"pairclassification/quora-{split}.jsonl"
    stack = f"clustering/stackoverflow-{'train' if dev else 'test'}.jsonl"
    which = "DEV" if dev else "TEST"
    return (
        SuiteTask(f"{prefix}HotpotQA", hotpot, _hotpotqa(split), sizes["HotpotQA"]),
        SuiteTask(f"{prefix}TREC", trec, _labelled(
            trec[0], None if dev else trec[1],
            "TREC question types (6 coarse labels): "
            + ("its TRAIN file split in two." if dev else "train pool, TEST questions.")),
            sizes["TREC"]),
        SuiteTask(f"{prefix}Emotion", emotion, _labelled(
            *emotion, f"Emotion of English tweets (6 labels): train pool, {which} tweets."),
            sizes["Emotion"]),
        SuiteTask(f"{prefix}QuoraPairs", (quora,), _file(
            "make_pair_classification_task", quora, f"Quora duplicate questions, BiMPM {which} split."),
            sizes["QuoraPairs"]),
        SuiteTask(f"{prefix}StackOverflowClustering", (stack,), _file(
            "make_clustering_task", stack,
            f"StackOverflow titles clustered by tag (20 tags), the {'TRAIN' if dev else 'TEST'} half."),
            sizes["StackOverflowClustering"]),
    )


TEST_SOURCES = tuple(SPLIT_SOURCES["test"].values())
LITE = (  # test splits only, for the final table (one SciFact query is still worth <= 2.5 points)
    SuiteTask("LeeDocSim", (), _lee),
    SuiteTask("LocalSTSBenchmark", ("sts/stsb-test.jsonl",), _sts("sts/stsb-test.jsonl", 0.0, 5.0),
              {"max_pairs": 400}),
    SuiteTask("LocalSICK-R", ("sts/sickr-test.jsonl",), _sts("sts/sickr-test.jsonl", 1.0, 5.0),
              {"max_pairs": 400}),
    SuiteTask("LocalSTSBPairs", TEST_SOURCES, _derived(_pairs("TEST"), "test"), {"max_pairs": 300}),
    SuiteTask("LocalSciFact", ("retrieval/scifact/corpus.jsonl", "retrieval/scifact/queries.jsonl",
                               "retrieval/scifact/qrels-test.tsv"), _scifact,
              {"max_queries": 40, "max_corpus": 150}),
    SuiteTask("LocalSciFactReranking", TEST_SOURCES, _derived(_rerank("TEST"), "test"),
              {"max_queries": 30}),
    SuiteTask("LocalBanking77", ("classification/banking77-train.jsonl",
                                 "classification/banking77-test.jsonl"), _banking77,
              {"max_labels": 10, "max_train_per_label": 8, "max_test": 400}),
    SuiteTask("LocalBanking77Clustering", TEST_SOURCES, _derived(_clustering("TEST"), "test"),
              {"max_docs": 300}),
) + _question_tasks("Local", "test", {
    "HotpotQA": {"max_queries": 80, "max_corpus": 320},
    "TREC": {"max_train_per_label": 8, "max_test": 400},
    "Emotion": {"max_train_per_label": 8, "max_test": 400},
    "QuoraPairs": {"max_pairs": 300},
    "StackOverflowClustering": {"max_docs": 400},
})

DEV_SOURCES = tuple(SPLIT_SOURCES["dev"].values())
DEV = (  # training/dev splits only: choose settings here, keep lite for the final table
    SuiteTask("DevSTSB", ("sts/stsb-dev.jsonl",), _sts("sts/stsb-dev.jsonl", 0.0, 5.0),
              {"max_pairs": 300}),
    SuiteTask("DevSTSBPairs", DEV_SOURCES, _derived(_pairs("DEV"), "dev"), {"max_pairs": 300}),
    SuiteTask("DevSciFact", ("retrieval/scifact/corpus.jsonl", "retrieval/scifact/queries.jsonl",
                             "retrieval/scifact/qrels-train.tsv"), _dev_scifact,
              {"max_queries": 60, "max_corpus": 200}),
    SuiteTask("DevSciFactReranking", DEV_SOURCES, _derived(_rerank("TRAIN"), "dev"),
              {"max_queries": 40}),
    SuiteTask("DevBanking77", DEV_SOURCES, _derived(_dev_banking77, "dev"),
              {"max_labels": 10, "max_train_per_label": 8, "max_test": 200}),
    SuiteTask("DevBanking77Clustering", DEV_SOURCES, _derived(_clustering("TRAIN"), "dev"),
              {"max_docs": 300}),
) + _question_tasks("Dev", "dev", {
    "HotpotQA": {"max_queries": 60, "max_corpus": 240},
    "TREC": {"max_train_per_label": 8, "max_test": 200},
    "Emotion": {"max_train_per_label": 8, "max_test": 200},
    "QuoraPairs": {"max_pairs": 200},
    "StackOverflowClustering": {"max_docs": 300},
})
# A few minutes with greedy rationales: what training curves score at every checkpoint (four
# dev tasks of four types, smaller subsamples; read it as a trend, not a result)
_MINI = {"DevSTSB": {"max_pairs": 100}, "DevHotpotQA": {"max_queries": 30, "max_corpus": 90},
         "DevTREC": {"max_train_per_label": 8, "max_test": 90},
         "DevQuoraPairs": {"max_pairs": 80}}
DEV_MINI = tuple(SuiteTask(t.name, t.files, t.build, _MINI[t.name]) for t in DEV if t.name in _MINI)
SUITE_TASKS = {"lite": LITE, "dev": DEV, "dev-mini": DEV_MINI}
