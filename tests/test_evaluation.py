"""mteb adapter, local mteb tasks, the evaluation suite and ``grace eval`` (tiny model, tiny files)."""

import json
import math
import os
import re
import sys
import tempfile

# mteb must not touch the network nor write under ~/.cache/mteb (it creates its result-cache
# folder at import time).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MTEB_CACHE", os.path.join(tempfile.gettempdir(), "grace-tests-mteb-cache"))

import mteb  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from datasets import Dataset  # noqa: E402
from mteb._create_dataloaders import create_dataloader  # noqa: E402
from mteb.models import CrossEncoderProtocol, EncoderProtocol, SearchProtocol  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from grace import GraceEncoder  # noqa: E402
from grace.cli import main  # noqa: E402
from grace.errors import GraceInputError  # noqa: E402
from grace.evaluation import tasks as lt  # noqa: E402
from grace.evaluation.lee import load_lee, score_lee  # noqa: E402
from grace.evaluation.mteb_adapter import GraceMTEBModel  # noqa: E402
from grace.evaluation.suite import build_suite, run_suite, summarise  # noqa: E402

STS = [("A man is playing a guitar.", "A person plays the guitar.", 4.6),
       ("A cat sleeps on the sofa.", "The stock market fell today.", 0.2),
       ("Two dogs run in a field.", "Dogs are running on grass.", 4.0),
       ("A woman slices an onion.", "Someone is cutting vegetables.", 3.1),
       ("The train leaves at noon.", "A child draws a picture.", 0.5),
       ("He is reading a book.", "A man reads a novel.", 4.2)]
CORPUS = [("d1", "Cats", "Cats are small domestic felines that purr."),
          ("d2", "Dogs", "Dogs are loyal animals kept as pets."),
          ("d3", "", "The stock market closed lower on Friday."),
          ("d4", "Rain", "Rain falls when clouds are heavy with water."),
          ("d5", "Guitars", "A guitar has six strings and a hollow body."),
          ("d6", "Bread", "Bread is baked from flour, water and yeast.")]
QUERIES = [("q1", "Which animal purrs?"), ("q2", "How many strings does a guitar have?"),
           ("q3", "What is bread made of?"), ("q4", "A query without qrels")]
QRELS = [("q1", "d1", 1), ("q2", "d5", 1), ("q3", "d6", 1)]
LABELLED = {"card": ["Where is my card?", "My card has not arrived.", "I lost my card.", "Card not delivered yet."],
            "refund": ["I want a refund.", "Refund my purchase please.", "How do I get my money back?",
                       "Refund status?"],
            "rate": ["What is the exchange rate?", "Rates for euros?", "Why is the rate so bad?", "Currency rate"]}


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_data_dir(root):
    """A folder laid out like shared/data, with a few rows per file."""
    sts = [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in STS]
    _jsonl(root / "sts/stsb-test.jsonl", sts)
    _jsonl(root / "sts/sickr-test.jsonl", [{**r, "score": 1 + r["score"] * 0.8} for r in sts])
    _jsonl(root / "retrieval/scifact/corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, t, x in CORPUS])
    _jsonl(root / "retrieval/scifact/queries.jsonl", [{"_id": i, "text": x} for i, x in QUERIES])
    (root / "retrieval/scifact/qrels-test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    rows = [{"text": t, "label": label} for label, texts in LABELLED.items() for t in texts]
    _jsonl(root / "classification/banking77-train.jsonl", [r for i, r in enumerate(rows) if i % 4 != 3])
    _jsonl(root / "classification/banking77-test.jsonl", [r for i, r in enumerate(rows) if i % 4 == 3])
    _jsonl(root / "clustering/topics.jsonl", rows)
    _jsonl(root / "pairs/pairs.jsonl", [{"sentence1": a, "sentence2": b, "label": int(s > 2.5)} for a, b, s in STS])
    _jsonl(root / "reranking/rerank.jsonl", [
        {"query": "Which animal purrs?", "positive": [CORPUS[0][2]], "negative": [CORPUS[1][2], CORPUS[2][2]]},
        {"query": "What is bread made of?", "positive": [CORPUS[5][2]], "negative": [CORPUS[3][2]]}])
    add_question_data(root)
    return root


QUESTIONS = {"location": ["Where is Paris?", "Where do pandas live?", "Where is the Nile?",
                          "Which country has Lima?", "Where was Mozart born?"],
             "human": ["Who wrote Hamlet?", "Who painted the Mona Lisa?", "Who is the pope?",
                       "Who invented the telephone?", "Who discovered penicillin?"],
             "numeric": ["How tall is Everest?", "How many legs has a spider?", "When did WW2 end?",
                         "How old is the sun?", "How far is the moon?"]}


def add_question_data(root):
    """shared/data's second batch in small: HotpotQA-like retrieval (dev and test qrels), TREC,
    emotion, Quora pairs and StackOverflow clustering, each with its choosing and test splits."""
    folder = root / "retrieval/hotpotqa-500"
    _jsonl(folder / "corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, t, x in CORPUS])
    _jsonl(folder / "queries.jsonl", [{"_id": i, "text": x} for i, x in QUERIES])
    for split, rows in (("dev", QRELS[:2]), ("test", QRELS[1:])):
        (folder / f"qrels-{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows))
    questions = [{"text": f"{t} ({k})", "label": label} for k in range(2)
                 for label, texts in QUESTIONS.items() for t in texts]
    _jsonl(root / "classification/trec-train.jsonl", questions)
    _jsonl(root / "classification/trec-test.jsonl", [{"text": t, "label": label}
                                                      for label, texts in QUESTIONS.items() for t in texts])
    moods = [{"text": t, "label": label} for label, texts in LABELLED.items() for t in texts]
    for split in ("train", "dev", "test"):
        _jsonl(root / f"classification/emotion-{split}.jsonl", moods)
        _jsonl(root / f"clustering/stackoverflow-{split}.jsonl", moods)
    for split in ("dev", "test"):
        _jsonl(root / f"pairclassification/quora-{split}.jsonl",
               [{"sentence1": a, "sentence2": b, "label": int(s > 2.5)} for a, b, s in STS])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    encoder = GraceEncoder.from_pretrained("tiny-random", cache=tmp_path_factory.mktemp("c") / "c.sqlite",
                                           max_new_tokens=4)
    return GraceMTEBModel(encoder)


def _evaluate(model, task):
    result = mteb.evaluate(model, task, cache=None, co2_tracker=False, show_progress_bar=False,
                           overwrite_strategy="always")
    return result.task_results[0].scores["test"][0]


# --------------------------------------------------------------------------- adapter


def test_adapter_satisfies_mteb_protocol_and_meta(model):
    assert isinstance(model, EncoderProtocol)
    assert not isinstance(model, SearchProtocol) and not isinstance(model, CrossEncoderProtocol)
    meta = model.mteb_model_meta
    assert meta.name == "grace/tiny-random" and meta.revision == model.encoder.fingerprint
    assert meta.embed_dim == model.encoder.embedding_dim and meta.n_parameters > 0
    assert meta.similarity_fn_name.value == "cosine" and meta.framework == ["PyTorch"]
    assert meta.experiment_kwargs == {"rationale": "greedy", "max_new_tokens": 4}


def test_model_meta_loads_the_same_encoder_back(model):
    loaded = model.mteb_model_meta.load_model(cache=False)
    assert isinstance(loaded, GraceMTEBModel) and loaded.encoder.cache is None
    assert loaded.encoder.options.max_new_tokens == 4 and loaded.encoder.options.rationale == "greedy"
    assert loaded.mteb_model_meta.revision == model.mteb_model_meta.revision


def test_adapter_encodes_dataloader_texts_and_joins_title_like_mteb(model, data_dir):
    task = lt.make_sts_task("T", data_dir / "sts/stsb-test.jsonl")
    texts = ["first text", "second text", "first text"]
    loader = create_dataloader(Dataset.from_dict({"text": texts}), task_metadata=task.metadata, batch_size=2)
    emb = model.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default")
    assert emb.shape == (3, model.encoder.embedding_dim)
    np.testing.assert_allclose(emb, model.encoder.encode(texts), atol=1e-5)
    np.testing.assert_allclose(np.diag(np.asarray(model.similarity(emb, emb))), 1.0, atol=1e-5)
    corpus = Dataset.from_dict({"id": ["a"], "title": ["Cats"], "text": ["They purr."]})
    loader = create_dataloader(corpus, task_metadata=task.metadata, prompt_type=PromptType.document)
    doc = model.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default",
                       prompt_type=PromptType.document)
    np.testing.assert_allclose(doc[0], model.encoder.encode("Cats They purr."), atol=1e-5)


# --------------------------------------------------------------------------- local tasks


KINDS = {
    "sts": lambda d: lt.make_sts_task("LocalSTS", d / "sts/stsb-test.jsonl"),
    "retrieval": lambda d: lt.make_retrieval_task("LocalRetrieval", d / "retrieval/scifact"),
    "reranking": lambda d: lt.make_reranking_task("LocalReranking", d / "reranking/rerank.jsonl"),
    "classification": lambda d: lt.make_classification_task(
        "LocalClassification", d / "classification/banking77-train.jsonl",
        d / "classification/banking77-test.jsonl"),
    "clustering": lambda d: lt.make_clustering_task("LocalClustering", d / "clustering/topics.jsonl"),
    "pair_classification": lambda d: lt.make_pair_classification_task("LocalPairs", d / "pairs/pairs.jsonl"),
}
MAIN = {"sts": "cosine_spearman", "retrieval": "ndcg_at_10", "reranking": "map_at_1000",
        "classification": "accuracy", "clustering": "v_measure", "pair_classification": "max_ap"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_local_task_kind_runs_through_mteb(kind, model, data_dir):
    task = KINDS[kind](data_dir)
    assert task.metadata.main_score == MAIN[kind]
    scores = _evaluate(model, task)
    assert math.isfinite(scores["main_score"]) and scores["main_score"] == scores[MAIN[kind]]
    assert task.sizes  # filled by load_data


def test_lee_task_is_scored_by_mteb_like_score_lee(tmp_path):
    encoder = GraceEncoder.from_pretrained("tiny-random", cache=False, rationale="none")
    task = lt.make_lee_task()
    scores = _evaluate(GraceMTEBModel(encoder), task)
    assert task.sizes == {"pairs": 1225, "texts": 50}
    docs, ratings = load_lee()
    # mteb and this call batch the 50 documents differently (other padding): float32 noise of
    # ~1e-7 in the vectors can swap two nearly tied cosines, which moves Spearman by ~1e-6
    assert scores["main_score"] == pytest.approx(score_lee(encoder.encode(docs), ratings).spearman, abs=1e-5)


def test_retrieval_subsample_is_seeded_and_keeps_relevant_docs():
    corpus = [f"d{i}" for i in range(100)]
    queries = [f"q{i}" for i in range(30)]
    qrels = {f"q{i}": {f"d{3 * i}": 1, f"d{3 * i + 1}": 0} for i in range(30)}
    qrels["q0"]["missing-doc"] = 1
    a = lt.subsample_retrieval(queries, corpus, qrels, max_queries=10, max_corpus=25, seed=1)
    assert a == lt.subsample_retrieval(queries, corpus, qrels, max_queries=10, max_corpus=25, seed=1)
    assert a != lt.subsample_retrieval(queries, corpus, qrels, max_queries=10, max_corpus=25, seed=2)
    kept_q, kept_d = a
    assert len(kept_q) == 10 and len(kept_d) == 25 and kept_d == sorted(kept_d, key=corpus.index)
    assert all(f"d{3 * int(q[1:])}" in kept_d for q in kept_q)  # every relevant doc kept
    with pytest.warns(UserWarning, match="relevant documents"):
        _, small = lt.subsample_retrieval(queries, corpus, qrels, max_queries=10, max_corpus=5, seed=1)
    assert len(small) == 10


def test_classification_subsample_is_seeded(data_dir):
    def texts(seed):
        task = lt.make_classification_task("C", data_dir / "classification/banking77-train.jsonl",
                                           data_dir / "classification/banking77-test.jsonl",
                                           max_train_per_label=2, max_labels=2, max_test=1, seed=seed)
        task.load_data()
        return task.dataset["train"]["text"], task.dataset["test"]["text"], task.sizes

    first = texts(0)
    assert first == texts(0)
    assert first[2] == {"labels": 2, "train": 4, "test": 1, "samples_per_label": 2, "n_experiments": 1}
    assert any(texts(s)[:2] != first[:2] for s in range(1, 6))


def test_missing_files_name_the_path_and_layout(tmp_path):
    with pytest.raises(GraceInputError, match=r"nope\.jsonl: file not found.*sentence1"):
        lt.make_sts_task("X", tmp_path / "nope.jsonl")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    with pytest.raises(GraceInputError, match=r"qrels-test\.tsv: file not found.*BEIR"):
        lt.make_retrieval_task("X", tmp_path)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"sentence1": "a", "sentence2": "b"}])
    with pytest.raises(GraceInputError, match=r"bad\.jsonl:1: missing field 'score'"):
        lt.make_sts_task("X", bad).load_data()


# --------------------------------------------------------------------------- suite and CLI


def test_suite_runs_what_it_finds(tmp_path, data_dir):
    tasks, skipped = build_suite("lite", None)
    assert [t.metadata.name for t in tasks] == ["LeeDocSim"] and len(skipped) == 12
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts/stsb-test.jsonl").write_text((data_dir / "sts/stsb-test.jsonl").read_text())
    tasks, skipped = build_suite("lite", tmp_path)
    assert [t.metadata.name for t in tasks] == ["LeeDocSim", "LocalSTSBenchmark"]
    assert "sickr-test.jsonl not found" in skipped["LocalSICK-R"]
    with pytest.raises(GraceInputError, match="data directory not found"):
        build_suite("lite", tmp_path / "nowhere")


def test_capability_without_its_module_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "grace.evaluation.capability", None)  # import -> ImportError
    with pytest.raises(GraceInputError, match="capability evaluation is not available"):
        run_suite("tiny-random", rationale="none", capability=True, show=False)


def test_cli_eval_writes_mteb_scores_and_averages(tmp_path, data_dir, capsys):
    out = tmp_path / "R.json"
    code = main(["eval", "--model", "tiny-random", "--rationale", "none", "--suite", "lite",
                 "--data-dir", str(data_dir), "--output", str(out), "--no-cache"])
    assert code == 0
    results = json.loads(out.read_text())
    names = ["LeeDocSim", "LocalSTSBenchmark", "LocalSICK-R", "LocalSTSBPairs", "LocalSciFact",
             "LocalSciFactReranking", "LocalBanking77", "LocalBanking77Clustering", "LocalHotpotQA",
             "LocalTREC", "LocalEmotion", "LocalQuoraPairs", "LocalStackOverflowClustering"]
    assert list(results["tasks"]) == names and results["skipped"] == {}
    for name in names:
        row = results["tasks"][name]
        assert math.isfinite(row["main_score"]) and row["main_score"] == row["metrics"][row["main_score_name"]]
        assert row["seconds"] >= 0 and row["subsample"]["sizes"]
    assert set(results["averages"]) == {"STS", "PairClassification", "Retrieval", "Reranking",
                                        "Classification", "Clustering"}
    sts = [results["tasks"][n]["main_score"] for n in names[:3]]
    assert results["averages"]["STS"] == pytest.approx(sum(sts) / 3)
    assert results["overall"] == pytest.approx(np.mean([results["tasks"][n]["main_score"] for n in names]))
    assert results["rationale"] == "none" and results["mteb_model"] == "grace/tiny-random"
    assert "overall" in capsys.readouterr().out


@pytest.mark.parametrize("content, expected", [
    ('{"sentence1": "a", "sentence2": "b", "score": 1.0}\n{"sentence1": "caf\xe9", "sentence2": "b", "score": 2}\n'
     .encode("latin-1"), r"stsb-test\.jsonl:2: invalid UTF-8 \(byte 0xe9 at column 19\)"),
    (b'{"sentence1": "a", "sentence2": "b", "score": 1.0}\n{"sentence1": "c", "sentence2": "d", "score": NaN}\n',
     r"stsb-test\.jsonl:2: field 'score' is nan; expected a finite number"),
], ids=["latin-1", "nan-score"])
def test_cli_eval_bad_sts_file_is_one_line_naming_the_line(tmp_path, capsys, content, expected):
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "stsb-test.jsonl").write_bytes(content)
    assert main(["eval", "--model", "tiny-random", "--rationale", "none", "--data-dir", str(tmp_path),
                 "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and re.search(expected, err.splitlines()[-1]), err


def test_an_unscored_task_makes_the_averages_null(recwarn):
    tasks = {"A": {"type": "STS", "main_score": 0.5}, "B": {"type": "STS", "main_score": None},
             "C": {"type": "Retrieval", "main_score": 0.3}}
    averages, overall = summarise(tasks)
    assert averages == {"STS": None, "Retrieval": 0.3} and overall is None
    assert "no score (NaN) for B" in str(recwarn.pop(UserWarning).message)


def test_cli_eval_bad_rationale_exits_2(capsys):
    assert main(["eval", "--model", "tiny-random", "--rationale", "bogus"]) == 2
    assert "unknown rationale mode" in capsys.readouterr().err


@pytest.mark.parametrize("rationale", ["greedy", "echo"])
def test_eval_reports_rationale_quality_per_task_and_overall(tmp_path, data_dir, rationale):
    """With rationales, each task and the whole run carry grace.rollout.quality's figures; echo
    rationales are copies of their texts (copy rate near 1, never ended by EOS)."""
    results = run_suite("tiny-random", rationale=rationale, max_new_tokens=4, data_dir=data_dir,
                        cache=tmp_path / "c.sqlite", show=False)
    keys = {"copy_rate", "length_mean", "eos_rate", "distinct_2", "empty_rate", "repetition_rate"}
    for row in results["tasks"].values():
        assert set(row["rationale_quality"]) == keys
        assert 0 < row["rationale_quality"]["length_mean"] <= 4
    overall = results["rationale_quality"]
    assert set(overall) == keys and 0 <= overall["copy_rate"] <= 1
    if rationale == "echo":
        assert overall["copy_rate"] > 0.9 and overall["eos_rate"] == 0.0
    none = run_suite("tiny-random", rationale="none", data_dir=data_dir, cache=False, show=False)
    assert none["rationale_quality"] is None and "rationale_quality" not in none["tasks"]["LeeDocSim"]
    json.dumps(results)  # stays JSON


def test_eval_encodes_under_the_system_prompt_it_is_given(data_dir):
    """``system_prompt`` replaces the encoder's own message (recorded in the results); the
    default run records the paper's prompt. The prompt changes the embedding even without a
    rationale (its hidden states see the system message), so the scores differ."""
    from grace.models.prompt import SYSTEM_PROMPT

    default = run_suite("tiny-random", rationale="none", data_dir=data_dir, cache=False, show=False)
    short = run_suite("tiny-random", rationale="none", data_dir=data_dir, cache=False, show=False,
                      system_prompt="Name the topic of the text.")
    assert default["system_prompt"] == SYSTEM_PROMPT
    assert short["system_prompt"] == "Name the topic of the text."
    assert short["tasks"]["LeeDocSim"]["main_score"] != default["tasks"]["LeeDocSim"]["main_score"]


def test_cli_eval_takes_a_system_prompt():
    from grace.cli import build_parser

    args = build_parser().parse_args(["eval", "--model", "m", "--system-prompt", "Name the topic."])
    assert args.system_prompt == "Name the topic."
    assert build_parser().parse_args(["eval", "--model", "m"]).system_prompt is None


def test_the_recorded_dtype_is_the_one_most_weights_have():
    import torch

    from grace.evaluation.suite import weights_dtype

    model = torch.nn.Sequential(torch.nn.Linear(64, 64).to(torch.bfloat16), torch.nn.Linear(2, 2))
    assert next(model.parameters()).dtype == torch.bfloat16 and weights_dtype(model) == "bfloat16"
    soft_first = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(64, 64).to(torch.bfloat16))
    assert weights_dtype(soft_first) == "bfloat16"  # float32 first, but few weights
