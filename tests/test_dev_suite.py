"""The dev suite (grace.evaluation.dev_data + suite "dev"): derived files by hand, and a run
that reads only training and dev splits (the test files are removed first)."""

import json
import math

import pytest
from test_evaluation import LABELLED, make_data_dir

from grace.evaluation.dev_data import derive_dev_files, rerank_rows, split_by_label, sts_pairs
from grace.evaluation.suite import run_suite


def test_split_by_label_sends_every_fifth_row_of_each_label_to_test():
    rows = [{"text": f"a{i}", "label": "a"} for i in range(6)] + [{"text": "b0", "label": "b"}]
    train, test = split_by_label(rows)
    assert [r["text"] for r in test] == ["a4"]
    assert [r["text"] for r in train] == ["a0", "a1", "a2", "a3", "a5", "b0"]


def test_sts_pairs_keep_the_clear_cases():
    rows = [{"sentence1": "x", "sentence2": "y", "score": s} for s in (5.0, 4.0, 3.9, 1.1, 1.0, 0.0)]
    assert [r["label"] for r in sts_pairs(rows)] == [1, 1, 0, 0]


def test_rerank_rows_take_the_most_similar_other_documents_as_negatives():
    corpus = {"1": "cats purr loudly", "2": "cats sleep all day", "3": "stock markets fell",
              "4": "bread needs flour"}
    rows = rerank_rows(corpus, {"q": "why do cats purr"}, {"q": {"1"}, "lost": {"9"}}, negatives=2)
    assert rows == [{"query": "why do cats purr", "positive": ["cats purr loudly"],
                     "negative": ["cats sleep all day", rows[0]["negative"][1]]}]
    assert rows[0]["negative"][1] in ("stock markets fell", "bread needs flour")


@pytest.fixture
def dev_data(tmp_path, monkeypatch):
    monkeypatch.setenv("GRACE_CACHE", str(tmp_path / "cache"))
    root = make_data_dir(tmp_path / "data")
    (root / "sts/stsb-dev.jsonl").write_text((root / "sts/stsb-test.jsonl").read_text())
    (root / "retrieval/scifact/qrels-train.tsv").write_text(
        (root / "retrieval/scifact/qrels-test.tsv").read_text())
    rows = [{"text": f"{t} ({k})", "label": label} for k in range(3)  # 12 per intent: 2 to test
            for label, texts in LABELLED.items() for t in texts]
    (root / "classification/banking77-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for test_split in ("sts/stsb-test.jsonl", "sts/sickr-test.jsonl", "retrieval/scifact/qrels-test.tsv",
                       "classification/banking77-test.jsonl", "retrieval/hotpotqa-500/qrels-test.tsv",
                       "classification/trec-test.jsonl", "classification/emotion-test.jsonl",
                       "pairclassification/quora-test.jsonl", "clustering/stackoverflow-test.jsonl"):
        (root / test_split).unlink()  # the dev suite must not need any test split
    return root


def test_dev_suite_runs_on_training_and_dev_splits_only(dev_data, tmp_path):
    out = tmp_path / "dev.json"
    results = run_suite("tiny-random", suite="dev", rationale="none", data_dir=dev_data, cache=False,
                        show=False, output=out)
    assert results["skipped"] == {}
    types = {row["type"] for row in results["tasks"].values()}
    assert types == {"STS", "PairClassification", "Retrieval", "Reranking", "Classification",
                     "Clustering"}
    for name, row in results["tasks"].items():
        assert math.isfinite(row["main_score"]), name
    averages = results["averages"]
    assert results["overall_by_type"] == pytest.approx(sum(averages.values()) / len(averages))
    assert json.loads(out.read_text())["overall_by_type"] == pytest.approx(results["overall_by_type"])
    assert results["tasks"]["DevTREC"]["subsample"]["sizes"]["test"] == 6  # every 5th of 10 per type
    again = derive_dev_files(dev_data)  # written once, found again
    assert sorted(p.name for p in again.iterdir()) == sorted(
        ["banking77-train.jsonl", "banking77-test.jsonl", "banking77-clustering.jsonl",
         "stsb-pairs.jsonl", "scifact-rerank.jsonl"])


def test_dev_suite_names_a_missing_source(tmp_path, monkeypatch):
    from grace.errors import GraceInputError

    monkeypatch.setenv("GRACE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(GraceInputError, match="banking77-train.jsonl"):
        derive_dev_files(tmp_path)
