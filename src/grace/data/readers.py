"""Training data: texts (unsupervised mode) and (query, positive, negative) triplets (supervised).

A data source is one of:

- a local file, chosen by extension:
  ``.txt`` / ``.cor``   one text per line, UTF-8 (unsupervised mode only);
  ``.jsonl`` / ``.json`` one JSON object per line (blank lines skipped), or for ``.json`` a
                         JSON array of objects;
  ``.csv``               a header row, then one record per row;
  ``.parquet``           one record per row;
- ``gensim:NAME``: a file shipped in the installed gensim wheel's test data, such as
  ``gensim:lee_background.cor`` (300 news texts);
- anything else: a Hugging Face Hub dataset name, loaded with ``datasets.load_dataset``.

Records are validated as they are read. Every problem is a ``GraceInputError`` whose one-line
message names the file, the place in it (``FILE:LINE`` for text formats, with 1-based physical
line numbers; ``FILE, row N`` for Parquet and Hub datasets) and the field. Texts are kept exactly
as given: only the line terminator of a plain-text line is removed, and a leading UTF-8 byte
order mark is dropped.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from grace.config.methods import MODES
from grace.errors import GraceInputError

TEXT_SUFFIXES = (".txt", ".cor")
JSON_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
GENSIM_PREFIX = "gensim:"

# A record read from a structured source, with its location for error messages: ("a.jsonl:3", {...}).
Located = tuple[str, object]


@dataclass(frozen=True)
class DataFields:
    """Names of the record fields to read; change them to match a data set's own schema."""

    text: str = "text"  # the text of an unsupervised record (JSONL/CSV/Parquet/Hub; not .txt)
    query: str = "query"  # the anchor of a supervised triplet
    positive: str = "positive"  # the text that should embed close to the query
    negative: str = "negative"  # the text that should embed far from the query


@dataclass(frozen=True)
class Triplet:
    """One supervised training example."""

    query: str
    positive: str
    negative: str


# --------------------------------------------------------------------------- public API


def load_records(
    source: str, mode: str, fields: DataFields = DataFields(), split: str = "train"
) -> list[str] | list[Triplet]:
    """Texts for ``mode="unsupervised"``, triplets for ``mode="supervised"``."""
    if mode == "unsupervised":
        return load_texts(source, fields, split)
    if mode == "supervised":
        return load_triplets(source, fields, split)
    raise GraceInputError(f"unknown training mode {mode!r}: expected one of {', '.join(MODES)}")


def load_texts(source: str, fields: DataFields = DataFields(), split: str = "train") -> list[str]:
    """Texts for unsupervised training: each line of a plain-text file, else field ``fields.text``."""
    source = os.fspath(source)
    path = _resolve(source)
    if path is not None and path.suffix.lower() in TEXT_SUFFIXES:
        return _read_text_lines(path)
    return [_string_field(row, fields.text, where) for where, row in _read_structured(source, path, split)]


def load_triplets(source: str, fields: DataFields = DataFields(), split: str = "train") -> list[Triplet]:
    """(query, positive, negative) triplets for supervised training."""
    source = os.fspath(source)
    path = _resolve(source)
    names = (fields.query, fields.positive, fields.negative)
    if path is not None and path.suffix.lower() in TEXT_SUFFIXES:
        raise GraceInputError(
            f"{path}: a plain-text file holds one text per line and only suits unsupervised training; "
            f"supervised triplets need a JSONL, CSV or Parquet file (or a Hub dataset) with fields "
            f"{', '.join(repr(name) for name in names)}"
        )
    return [
        Triplet(*(_string_field(row, name, where) for name in names))
        for where, row in _read_structured(source, path, split)
    ]


def gensim_test_file(name: str) -> Path:
    """Path of ``gensim/test/test_data/NAME`` in the installed gensim wheel.

    Found with ``importlib.util.find_spec``, so gensim itself (slow to import) is not imported.
    """
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise GraceInputError(f"bad gensim test file name {name!r}: expected one such as 'lee_background.cor'")
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise GraceInputError(f"'{GENSIM_PREFIX}{name}' needs the gensim package, which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / name
    if not path.is_file():
        raise GraceInputError(f"gensim test data file not found: {path}")
    return path


# --------------------------------------------------------------------------- locating the source


def _resolve(source: str) -> Path | None:
    """The local file ``source`` names, or ``None`` if it is to be loaded from the Hugging Face Hub."""
    if source.startswith(GENSIM_PREFIX):
        return gensim_test_file(source[len(GENSIM_PREFIX):])
    path = Path(source).expanduser()
    if path.is_dir():
        raise GraceInputError(f"{path}: is a directory; expected a file ({', '.join(SUPPORTED_SUFFIXES)})")
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise GraceInputError(
                f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
                f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
            )
        return path
    if _looks_like_path(source):
        raise GraceInputError(f"data file not found: {source}")
    return None


def _looks_like_path(source: str) -> bool:
    """Whether a missing ``source`` was meant as a file rather than a Hub name.

    A Hub name has at most one '/' ("org/name"), so a single '/' alone does not make a path.
    """
    return (
        source.startswith(("/", ".", "~"))
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
        or Path(source).suffix.lower() in SUPPORTED_SUFFIXES
    )


def _read_structured(source: str, path: Path | None, split: str) -> list[Located]:
    """Every record of a JSON, CSV, Parquet or Hub source, with its location; never empty."""
    if path is None:
        rows = _read_hub(source, split)
        if not rows:
            raise GraceInputError(f"{source} (split {split!r}): no records")
        return rows
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        rows = _read_json(path)
    elif suffix in CSV_SUFFIXES:
        rows = _read_csv(path)
    else:
        rows = _read_parquet(path)
    if not rows:
        raise GraceInputError(f"{path}: no records")
    return rows


# --------------------------------------------------------------------------- readers


def read_utf8(path: Path) -> str:
    """The file's text; invalid UTF-8 is reported with its line and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        bad = data[error.start : error.start + 1].hex()
        raise GraceInputError(f"{path}:{line}: invalid UTF-8 (byte 0x{bad} at column {column})") from None


def _lines(text: str) -> list[str]:
    """Physical lines split on '\\n' only (so U+2028 and friends stay inside a text), '\\r' removed;
    a single final newline does not start another line."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_text_lines(path: Path) -> list[str]:
    """One text per line; a blank line is an error, not a separator."""
    texts = _lines(read_utf8(path))
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise GraceInputError(f"{path}:{number}: empty text")
    if not texts:
        raise GraceInputError(f"{path}: no records")
    return texts


def _read_json(path: Path) -> list[Located]:
    """JSON lines, or (a ``.json`` file whose content starts with '[') a JSON array of objects."""
    text = read_utf8(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        return _read_json_array(path, text)
    return [_object(row, where) for where, row in json_lines(path, text)]


def json_lines(path: Path, text: str | None = None, skip_invalid: bool = False):
    """Yield ``("FILE:LINE", parsed value)`` for every non-blank line of a JSON-lines file (read
    as UTF-8 unless ``text`` is given); bad UTF-8 or JSON is a ``GraceInputError`` naming the line.
    ``skip_invalid``: lines that are not valid JSON are passed over (a log whose writer was
    killed mid-line)."""
    for number, line in enumerate(_lines(read_utf8(path) if text is None else text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if skip_invalid:
                continue
            raise _invalid_json(path, number, error) from None
        yield f"{path}:{number}", row


def _read_json_array(path: Path, text: str) -> list[Located]:
    """The objects of a JSON array, each located at the line where it starts."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid_json(path, error.lineno, error) from None
    decoder = json.JSONDecoder()
    rows, position, line = [], text.index("[") + 1, 1 + text.count("\n", 0, text.index("["))
    for item in items:  # the text is valid JSON, so between items there is only whitespace and ','
        start = position
        while text[position] in " \t\r\n,":
            position += 1
        line += text.count("\n", start, position)
        rows.append(_object(item, f"{path}:{line}"))
        _, end = decoder.raw_decode(text, position)
        line += text.count("\n", position, end)
        position = end
    return rows


def _invalid_json(path: Path, line: int, error: json.JSONDecodeError) -> GraceInputError:
    return GraceInputError(f"{path}:{line}: invalid JSON ({error.msg} at column {error.colno})")


def _read_csv(path: Path) -> list[Located]:
    """Rows under a header row; a record is located at the physical line where it starts."""
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""))
    rows: list[Located] = []
    try:
        header = next(reader, None)
        if header is None:
            return rows
        next_line = reader.line_num + 1
        for values in reader:
            line, next_line = next_line, reader.line_num + 1
            if not values:  # a blank line
                continue
            if len(values) != len(header):
                raise GraceInputError(
                    f"{path}:{line}: expected {len(header)} columns as in the header, got {len(values)}"
                )
            rows.append((f"{path}:{line}", dict(zip(header, values))))
    except csv.Error as error:
        raise GraceInputError(f"{path}:{reader.line_num}: invalid CSV ({error})") from None
    return rows


def _read_parquet(path: Path) -> list[Located]:
    """Rows of a Parquet file, located as 'FILE, row N' (1-based)."""
    import pyarrow.parquet as pq  # comes with `datasets`; imported here to keep `import grace` fast

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise GraceInputError(f"{path}: not a readable Parquet file ({_first_line(error)})") from None
    return [(f"{path}, row {number}", row) for number, row in enumerate(table.to_pylist(), start=1)]


def _read_hub(name: str, split: str) -> list[Located]:
    """Rows of a Hugging Face Hub dataset split, located as 'NAME, row N' (1-based)."""
    try:
        import datasets  # slow to import, so only when a Hub dataset is asked for

        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # offline, no such dataset, no such split, ...
        raise GraceInputError(
            f"cannot load {name!r}: not a local file and not loadable from the Hugging Face Hub "
            f"(offline?): {_first_line(error)}"
        ) from None
    return [(f"{name}, row {number}", row) for number, row in enumerate(dataset, start=1)]


# --------------------------------------------------------------------------- validation


def _object(row: object, where: str) -> Located:
    """A JSON record, which must be an object."""
    if not isinstance(row, dict):
        raise GraceInputError(f"{where}: expected a JSON object, got {_type_name(row)}")
    return where, row


def _string_field(row: object, name: str, where: str) -> str:
    """Field ``name`` of a record: present, a string, and not blank."""
    assert isinstance(row, dict)
    if name not in row:
        raise GraceInputError(f"{where}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, str):
        raise GraceInputError(f"{where}: field {name!r} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise GraceInputError(f"{where}: field {name!r} is empty")
    check_unicode(value, f"{where}: field {name!r}")
    return value


def check_unicode(text: str, where: str) -> None:
    """``GraceInputError`` if ``text`` cannot be encoded as UTF-8 (a lone surrogate such as
    ``"\\ud800"``, which JSON and Python strings allow but no tokenizer takes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GraceInputError(
            f"{where} is not valid Unicode: lone surrogate {text[exc.start]!r} at character "
            f"{exc.start} (UTF-8 cannot encode it)") from None


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _first_line(error: BaseException) -> str:
    """The first non-blank line of an exception's message, prefixed by its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
