"""The wire format of the API: request bodies parsed and checked (wrong UTF-8, JSON, fields,
types, sizes or texts become an ``ApiError`` naming where), the two error shapes (OpenAI's
``{"error": {"message", "type", "param", "code"}}``; text-embeddings-inference's
``{"error", "error_type"}`` on its routes, ``TEI_PATHS``), and the JSON answers built from what
the model returned (embedding vectors cut to ``dimensions`` and normalised, as floats or base64;
explanations with their top tokens and the rationale as the page shows it). Pure functions of
their inputs: no routes, no model calls; grace.server.app and grace.server.tei wire them to the
routes."""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grace.data.readers import check_unicode
from grace.errors import GraceInputError
from grace.server.config import ServerConfig


# -- request bodies (pydantic: wrong shapes become 422) ---------------------------------------
class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send "user", "dimensions" ...

    input: Any  # a string or a list of strings: checked by input_texts, which names the index
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, strict=True)  # the first N, renormalised (check_dimensions)


class ExplainRequest(BaseModel):
    text_a: str
    text_b: str
    top_k: int = Field(8, ge=1, le=100)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


# The routes that answer errors in TEI's shape (POST / is TEI's /embed; GET / never fails).
TEI_PATHS = ("/", "/embed", "/tokenize", "/info", "/metrics")


def tei_error_type(status: int, code: str | None) -> str:
    """TEI's ``error_type`` for an error (its serde names, as on the wire: TEI's OpenAPI examples
    show them lower-case, its server sends ``Validation``)."""
    if status == 429:
        return "Overloaded"
    if code == "empty_input":
        return "Empty"
    if code == "invalid_text":  # a text the tokenizer cannot take
        return "Tokenizer"
    return "Backend" if status == 424 or status >= 500 else "Validation"


def error_response(status: int, message: str, kind: str, param=None, code=None,
                   path: str | None = None) -> JSONResponse:
    """An error in OpenAI's shape, or in TEI's (``{"error", "error_type"}``) if ``path`` is one
    of ``TEI_PATHS``."""
    if path in TEI_PATHS:
        return JSONResponse(status_code=status, content={
            "error": message, "error_type": tei_error_type(status, code)})
    return JSONResponse(status_code=status, content={
        "error": {"message": message, "type": kind, "param": param, "code": code}})


async def client_left(request: Request) -> None:
    """Returns when the client has closed the connection (the body was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def body_schema(schema: type[BaseModel]) -> dict:
    """The OpenAPI request body of a route that parses ``schema`` itself."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema.model_json_schema()}}}}


def json_type(value) -> str:
    """The JSON name of a parsed value's type (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def parse_body(raw: bytes, schema: type[BaseModel]) -> BaseModel:
    """A request body as ``schema``; not UTF-8, not JSON or the wrong fields -> 422 naming where."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(422, f"the request body is not valid UTF-8 (byte {exc.start})",
                       "invalid_request_error", None, "invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"the request body is not valid JSON ({exc.msg}: line {exc.lineno} "
                       f"column {exc.colno})", "invalid_request_error", None, "invalid_json") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        value = first.get("input")
        if not first["loc"]:
            raise ApiError(422, f"the request body must be a JSON object, got {json_type(value)}",
                           "invalid_request_error", None, "invalid_body") from None
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in first["loc"]).lstrip(".")
        shown = json.dumps(value) if value is None or isinstance(value, (bool, int, float)) or (
            isinstance(value, str) and len(value) <= 40) else json_type(value)
        got = "" if first["type"] == "missing" else f" (got {shown})"
        raise ApiError(422, f"{where}: {first['msg']}{got}", "invalid_request_error", where,
                       "invalid_body") from None


def input_texts(value, param: str = "input") -> tuple[list[str], bool]:
    """``param`` (OpenAI's ``input``, TEI's ``inputs``) as a list of texts, and whether it was one
    string; anything else -> 422 naming the first items that are not strings and their types."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list):
        raise ApiError(422, f"{param} must be a string or an array of strings, got "
                       f"{json_type(value)}", "invalid_request_error", param, "invalid_body")
    bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
    if bad:
        named = ", ".join(f"{param}[{i}] is {json_type(value[i])}" for i in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ApiError(422, f"{named}{more}: every input must be a string (token arrays are not "
                       "supported)", "invalid_request_error", f"{param}[{bad[0]}]", "invalid_body")
    return list(value), False


def check_texts(texts: list[str], config: ServerConfig, param: str, single: bool = False) -> None:
    """413 for too many or too long texts, 422 for none or an empty one (``single``: ``param``
    names one string, not a list)."""
    if not texts:
        raise ApiError(422, f"'{param}' holds no text", "invalid_request_error", param, "empty_input")
    if len(texts) > config.max_texts:
        raise ApiError(413, f"'{param}' holds {len(texts)} texts; at most {config.max_texts} per "
                       "request", "request_too_large", param, "too_many_inputs")
    for i, text in enumerate(texts):
        where = param if single else f"{param}[{i}]"
        if len(text) > config.max_chars:
            raise ApiError(413, f"{where} has {len(text)} characters; at most "
                           f"{config.max_chars} per text", "request_too_large", where,
                           "text_too_long")
        if not text.strip():
            raise ApiError(422, f"{where} is empty", "invalid_request_error", where,
                           "empty_text")
        try:
            check_unicode(text, where)
        except GraceInputError as exc:
            raise ApiError(422, str(exc), "invalid_request_error", where, "invalid_text") from None


def token_counts(tokenizer, texts: list[str], param: str, single: bool = False) -> list[int]:
    """Tokens of each text (no special tokens: the usage figure, the input limit and the batch
    token budget); a text the tokenizer refuses -> 422 naming it."""
    try:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    except Exception:  # find which text it refuses
        for i, text in enumerate(texts):
            try:
                tokenizer([text], add_special_tokens=False)
            except Exception as exc:
                where = param if single else f"{param}[{i}]"
                raise ApiError(422, f"{where}: the tokenizer cannot take this text "
                               f"({type(exc).__name__}: {exc})", "invalid_request_error", where,
                               "invalid_text") from None
        raise


def check_token_limit(counts: list[int], config: ServerConfig, param: str,
                      single: bool = False) -> None:
    """413 for a text of more than ``config.max_input_tokens`` tokens, naming it."""
    for i, n in enumerate(counts):
        if n > config.max_input_tokens:
            where = param if single else f"{param}[{i}]"
            raise ApiError(413, f"{where} has {n} tokens; at most {config.max_input_tokens} per "
                           "text", "request_too_large", where, "text_too_long")


def check_dimensions(dimensions: int | None, dim: int) -> None:
    """``dimensions`` absent or 1..``dim`` (the model's); any other -> 422 naming the field."""
    if dimensions is not None and not 1 <= dimensions <= dim:
        raise ApiError(422, f"dimensions must be between 1 and {dim} (this model's embedding "
                       f"size), got {dimensions}", "invalid_request_error", "dimensions",
                       "invalid_dimensions")


def finish_vectors(rows: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """(N, D) -> (N, d): each row's first ``dimensions`` values (all if None), L2-normalised if
    ``normalize`` (a zero row stays zero), as OpenAI shortens its v3 embeddings and TEI its
    Matryoshka ones."""
    rows = np.asarray(rows, dtype=np.float64)[:, :dimensions]  # (N, d)
    if normalize:
        norms = np.linalg.norm(rows, axis=1, keepdims=True)  # (N, 1)
        rows = rows / np.where(norms > 0, norms, 1.0)
    return rows.astype(np.float32)


def vector_json(row: np.ndarray, encoding: str):
    """One embedding as OpenAI sends it: a list of floats, or base64 of its float32 bytes."""
    row = np.asarray(row, dtype=np.float32)
    return base64.b64encode(row.tobytes()).decode() if encoding == "base64" else row.tolist()


def explanation_json(ex, top_k: int) -> dict:
    """A grace.explain.pair.Explanation as JSON, with each side's ``top_k`` tokens adding and
    subtracting most (``top``) and ``shown``: its rationale and decoding as the terminal prints
    them (grace.explain.render.shown_rationale: an empty one reads "(no rationale)", a
    whitespace-only one names its characters), so the explorer shows the same words."""
    from grace.explain.render import shown_rationale

    out = ex.to_dict()
    out["top"] = {side: {"adding": [vars(t) for t in getattr(ex, side).top(top_k, 1)],
                         "subtracting": [vars(t) for t in getattr(ex, side).top(top_k, -1)]}
                  for side in ("a", "b")}
    for side in ("a", "b"):
        s = getattr(ex, side)
        out[side]["shown"] = {
            "rationale": shown_rationale(s.rationale),
            "decoded": None if s.decoded is None else shown_rationale(s.decoded,
                                                                     empty="(nothing decoded)")}
    return out
