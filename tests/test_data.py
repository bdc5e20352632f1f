"""Reading training data: every format, and one-line errors that name file, line and field."""

import json
from pathlib import Path

import pytest

from grace.data.readers import (
    DataFields,
    Triplet,
    gensim_test_file,
    load_records,
    load_texts,
    load_triplets,
)
from grace.errors import GraceInputError

NLI_TRIPLETS = Path("/work/shared/data/triplets/nli-triplets.jsonl")

TRIPLETS = [
    Triplet("A man plays guitar.", "Someone makes music.", "Nobody is playing."),
    Triplet("Two dogs run, fast.", 'A "pair" of dogs.', "Cats sleep.\u2028Quietly."),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list) -> Path:
    return _write(path, "".join(json.dumps(row) + "\n" for row in rows))


def _triplet_rows() -> list[dict]:
    return [{"query": t.query, "positive": t.positive, "negative": t.negative} for t in TRIPLETS]


def _error(call, *args, **kwargs) -> str:
    """The message of the GraceInputError raised by ``call``; it must be one line."""
    with pytest.raises(GraceInputError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- formats


def test_txt_one_text_per_line_kept_exactly(tmp_path):
    path = _write(tmp_path / "texts.txt", "  first, with spaces  \nsecond\r\nthird\n")
    assert load_texts(str(path)) == ["  first, with spaces  ", "second", "third"]


def test_txt_without_final_newline(tmp_path):
    path = _write(tmp_path / "texts.cor", "one\ntwo")
    assert load_texts(str(path)) == ["one", "two"]


def test_jsonl_triplets_and_texts(tmp_path):
    rows = [{**row, "text": row["query"], "extra": 1} for row in _triplet_rows()]
    path = _jsonl(tmp_path / "data.jsonl", rows)
    with path.open("a") as handle:
        handle.write("\n   \n")  # blank lines in JSONL are skipped
    assert load_triplets(str(path)) == TRIPLETS
    assert load_texts(str(path)) == [t.query for t in TRIPLETS]


def test_json_array(tmp_path):
    path = _write(tmp_path / "data.json", json.dumps(_triplet_rows(), indent=2))
    assert load_triplets(str(path)) == TRIPLETS


def test_json_lines_in_a_json_file(tmp_path):
    path = _jsonl(tmp_path / "data.json", _triplet_rows())
    assert load_triplets(str(path)) == TRIPLETS


def test_csv_with_quoted_commas_and_newlines(tmp_path):
    import csv

    path = tmp_path / "data.csv"
    rows = _triplet_rows() + [{"query": "multi\nline", "positive": "p", "negative": "n"}]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["query", "positive", "negative"])
        writer.writeheader()
        writer.writerows(rows)
    assert load_triplets(str(path)) == TRIPLETS + [Triplet("multi\nline", "p", "n")]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(_triplet_rows()), path)
    assert load_triplets(str(path)) == TRIPLETS


def test_custom_field_names(tmp_path):
    path = _jsonl(tmp_path / "data.jsonl", [{"sentence": "hello"}, {"sentence": "world"}])
    assert load_texts(str(path), DataFields(text="sentence")) == ["hello", "world"]


def test_load_records_dispatches_on_mode(tmp_path):
    path = _jsonl(tmp_path / "data.jsonl", [{**row, "text": "t"} for row in _triplet_rows()])
    assert load_records(str(path), "supervised") == TRIPLETS
    assert load_records(str(path), "unsupervised") == ["t", "t"]
    assert "unknown training mode 'rl'" in _error(load_records, str(path), "rl")


def test_gensim_lee_background():
    assert gensim_test_file("lee_background.cor").name == "lee_background.cor"
    texts = load_texts("gensim:lee_background.cor")
    assert len(texts) == 300
    assert all(text.strip() for text in texts)
    assert len(load_records("gensim:lee_background.cor", "unsupervised")) == 300


def test_gensim_missing_file():
    assert "no-such-file.cor" in _error(load_texts, "gensim:no-such-file.cor")


@pytest.mark.skipif(not NLI_TRIPLETS.exists(), reason="shared NLI triplets not present")
def test_shared_nli_triplets():
    triplets = load_triplets(str(NLI_TRIPLETS))
    assert len(triplets) == 6158
    assert all(isinstance(t, Triplet) and t.query and t.positive and t.negative for t in triplets)


# --------------------------------------------------------------------------- errors


def test_bad_json_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", json.dumps(_triplet_rows()[0]) + '\n{"query": "x",\n')
    message = _error(load_triplets, str(path))
    assert message.startswith(f"{path}:2: invalid JSON (")


def test_json_line_not_an_object(tmp_path):
    path = _write(tmp_path / "list.jsonl", '["a", "b"]\n')
    assert _error(load_texts, str(path)) == f"{path}:1: expected a JSON object, got list"


def test_missing_field(tmp_path):
    rows = _triplet_rows()
    del rows[1]["positive"]
    path = _jsonl(tmp_path / "missing.jsonl", rows)
    assert _error(load_triplets, str(path)) == f"{path}:2: missing field 'positive'"


def test_missing_field_in_json_array_names_the_line(tmp_path):
    rows = _triplet_rows()
    del rows[1]["negative"]
    path = _write(tmp_path / "missing.json", json.dumps(rows, indent=2))
    starts = [n for n, text in enumerate(json.dumps(rows, indent=2).splitlines(), 1) if text == "  {"]
    line = starts[1]  # where the second object starts
    assert _error(load_triplets, str(path)) == f"{path}:{line}: missing field 'negative'"


def test_missing_field_in_csv_names_the_physical_line(tmp_path):
    path = _write(tmp_path / "data.csv", 'query,negative\n"multi\nline",n\nq,n\n')
    assert _error(load_triplets, str(path)) == f"{path}:2: missing field 'positive'"


def test_csv_row_with_wrong_column_count(tmp_path):
    path = _write(tmp_path / "data.csv", "query,positive,negative\nq,p,n\nq,p\n")
    assert _error(load_triplets, str(path)) == f"{path}:3: expected 3 columns as in the header, got 2"


def test_parquet_error_names_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "ok"}, {"text": None}]), path)
    assert _error(load_texts, str(path)) == f"{path}, row 2: field 'text' must be a string, got null"


def test_empty_text_line(tmp_path):
    path = _write(tmp_path / "texts.txt", "one\n   \nthree\n")
    assert _error(load_texts, str(path)) == f"{path}:2: empty text"


def test_empty_field(tmp_path):
    rows = _triplet_rows()
    rows[0]["query"] = "  "
    path = _jsonl(tmp_path / "empty.jsonl", rows)
    assert _error(load_triplets, str(path)) == f"{path}:1: field 'query' is empty"


def test_non_string_field(tmp_path):
    rows = _triplet_rows()
    rows[1]["query"] = 7
    path = _jsonl(tmp_path / "typed.jsonl", rows)
    assert _error(load_triplets, str(path)) == f"{path}:2: field 'query' must be a string, got int"


def test_lone_surrogate_in_a_field_names_the_line(tmp_path):
    rows = _triplet_rows()
    rows[1]["positive"] = "bad \ud800 text"
    path = _jsonl(tmp_path / "surrogate.jsonl", rows)  # json.dumps writes it as "\\ud800"
    assert _error(load_triplets, str(path)) == (
        f"{path}:2: field 'positive' is not valid Unicode: lone surrogate '\\ud800' at character 4 "
        "(UTF-8 cannot encode it)")


@pytest.mark.parametrize(
    "name, content", [("a.txt", ""), ("a.jsonl", "\n\n"), ("a.csv", "text\n"), ("a.json", "[]")]
)
def test_empty_file(tmp_path, name, content):
    path = _write(tmp_path / name, content)
    assert _error(load_texts, str(path)) == f"{path}: no records"


def test_invalid_utf8(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"fine\nbro\xffken\n")
    assert _error(load_texts, str(path)) == f"{path}:2: invalid UTF-8 (byte 0xff at column 4)"


def test_plain_text_is_not_triplets(tmp_path):
    path = _write(tmp_path / "texts.txt", "one\n")
    message = _error(load_triplets, str(path))
    assert str(path) in message and "'query', 'positive', 'negative'" in message


def test_unknown_extension(tmp_path):
    path = _write(tmp_path / "data.xml", "<a/>")
    message = _error(load_texts, str(path))
    assert str(path) in message and ".jsonl" in message and ".parquet" in message


@pytest.mark.parametrize("name", ["missing.jsonl", "sub/dir/missing"])
def test_nonexistent_path(tmp_path, name):
    path = tmp_path / name
    assert _error(load_texts, str(path)) == f"data file not found: {path}"


def test_hub_name_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # The variables are read when the libraries are imported; they may already be imported.
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    message = _error(load_texts, "grace-test/no-such-dataset")
    assert message.startswith("cannot load 'grace-test/no-such-dataset': not a local file and not loadable")
