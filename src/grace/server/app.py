"""The HTTP API (FastAPI): OpenAI-shaped embeddings with rationales, explanations, health, and
the web explorer page.

    POST /v1/embeddings  {"input": "text" | ["text", ...], "model": optional, "encoding_format":
                          "float" (default) | "base64"}
        -> {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
            "model": NAME, "usage": {"prompt_tokens": N, "total_tokens": N},
            "rationales": ["...", ...]}          (the extra field: one rationale per input)
    POST /v1/explain     {"text_a": "...", "text_b": "...", "top_k": 8}
        -> grace.explain.pair.Explanation as JSON (cosine, both sides' rationales and token shares)
    GET  /v1/models      -> {"object": "list", "data": [{"id": NAME, "object": "model",
                             "aliases": [...], ...}]}    (GET /v1/models/{name}: that entry)
    GET  /health         -> {"status": "ok", "model": NAME, "embedding_dim": D, ...}
    GET  /               -> the explorer page (static/index.html)

``model``: absent (allowed, as before) or one of ``served_names(NAME)``: the name the model was
loaded by (``--model``), its last path part and ``grace``; any other -> 404 ``model_not_found``,
as OpenAI answers.

Limits (``ServerConfig``): more than ``max_texts`` inputs or a text longer than ``max_chars``
characters -> 413; a body larger than ``max_body_bytes`` -> 413; a body not received whole
within ``body_timeout_s`` -> 408 and the connection is closed. A body that is not UTF-8 or not
JSON, wrong types (``input[i]`` and the type it has), an empty input list, an empty text or a
text the tokenizer cannot take (a lone surrogate) -> 422 naming the index. Inputs are checked
before they join a batch, so a bad text never fails the requests it would have been encoded
with. More than ``max_pending_texts`` texts accepted and not yet answered -> 429 at once, with
``Retry-After`` estimated from the pending texts and the measured seconds per text
(backpressure: a burst gets quick refusals instead of a queue nobody waits for); a request
whose client has left is dropped before it reaches the model, or between two model calls of a
request larger than ``max_batch``. Every 4xx and 5xx is JSON in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``. A failure inside the model call (a bug)
is a 500 for the request that caused it only (grace.server.batcher retries the others alone),
and the connection stays open for the next request. ``serve`` checks the port and binds it
before the model is loaded, so a busy or impossible port is a one-line error. The model is
loaded once at start-up (safetensors only) and used by one thread; concurrent embedding
requests are encoded together by grace.server.batcher.MicroBatcher. The rationale cache (on by
default) is SQLite; each thread gets its own connection (grace.encoders.cache).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import errno
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from grace.data.readers import check_unicode
from grace.errors import GraceInputError
from grace.server.batcher import ClientGone, MicroBatcher, Overloaded, retry_after_s

log = logging.getLogger("grace.server")

STATIC = Path(__file__).parent / "static"


@dataclass
class ServerConfig:
    """``grace serve`` settings."""

    model: str = "tiny-random"  # what GraceEncoder.from_pretrained loads
    host: str = "127.0.0.1"
    port: int = 8000
    rationale: str = "greedy"  # none | greedy (sampled is refused: explanations need one rationale)
    max_new_tokens: int = 64  # rationale length cap
    dtype: str = "float32"  # float32 | bfloat16
    cache: bool = True  # the on-disk rationale cache (a text seen before costs no generation)
    max_texts: int = 64  # inputs per /v1/embeddings request; more -> 413
    max_chars: int = 8192  # characters per text; more -> 413
    max_body_bytes: int = 4_000_000  # request body; more -> 413
    max_batch: int = 32  # texts encoded together across concurrent requests
    batch_wait_ms: float = 5.0  # how long a gathering waits for more requests
    max_pending_texts: int = 256  # texts accepted and not yet answered; more -> 429 (>= max_texts)
    body_timeout_s: float = 10.0  # to receive a whole body (4 MB at ~3.2 Mbit/s); longer -> 408

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch", "max_pending_texts",
                     "max_new_tokens"):
            if getattr(self, name) < 1:
                raise GraceInputError(f"grace serve: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise GraceInputError(f"grace serve: port {self.port} is out of range (0-65535; 0 "
                                  "picks a free one)")
        if not self.body_timeout_s > 0:
            raise GraceInputError(f"grace serve: body_timeout_s must be > 0, got {self.body_timeout_s}")
        if self.max_pending_texts < self.max_texts:
            raise GraceInputError(
                f"grace serve: max_pending_texts ({self.max_pending_texts}) must be at least "
                f"max_texts ({self.max_texts}), or a full request could never be accepted")


# -- request bodies (pydantic: wrong shapes become 422) ---------------------------------------
class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send "user", "dimensions" ...

    input: Any  # a string or a list of strings: checked by input_texts, which names the index
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


class ExplainRequest(BaseModel):
    text_a: str
    text_b: str
    top_k: int = Field(8, ge=1, le=100)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


def _error(status: int, message: str, kind: str, param=None, code=None) -> JSONResponse:
    return JSONResponse(status_code=status, content={
        "error": {"message": message, "type": kind, "param": param, "code": code}})


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


def input_texts(value) -> tuple[list[str], bool]:
    """``input`` as a list of texts, and whether it was one string; anything else -> 422 naming
    the first items that are not strings and their types."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list):
        raise ApiError(422, f"input must be a string or an array of strings, got {json_type(value)}",
                       "invalid_request_error", "input", "invalid_body")
    bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
    if bad:
        named = ", ".join(f"input[{i}] is {json_type(value[i])}" for i in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ApiError(422, f"{named}{more}: every input must be a string (token arrays are not "
                       "supported)", "invalid_request_error", f"input[{bad[0]}]", "invalid_body")
    return list(value), False


def served_names(name: str) -> list[str]:
    """The names a request's ``model`` may give for the model loaded as ``name``: ``name`` itself,
    its last path part (``runs/demo/checkpoint-12`` -> ``checkpoint-12``) and ``grace``."""
    return list(dict.fromkeys([name, Path(name).name or name, "grace"]))


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


def count_tokens(tokenizer, texts: list[str], param: str, single: bool = False) -> int:
    """Tokens of ``texts`` (the usage figure); a text the tokenizer refuses -> 422 naming it."""
    try:
        return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
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


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets a 413 JSON error before the app
    sees it, whether the client sent a ``content-length`` or streamed it chunked (the body is
    read up to the limit, then handed on). A body not received whole within ``timeout_s``
    seconds (a client that declared a length and went quiet) gets a 408 and the connection is
    closed, so it cannot hold the connection."""

    def __init__(self, app, limit: int, timeout_s: float):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    def _too_large(self, size: str) -> JSONResponse:
        return _error(413, f"request body of {size} bytes; at most {self.limit}",
                      "request_too_large", None, "body_too_large")

    def _timed_out(self, received: int) -> JSONResponse:
        response = _error(408, f"the request body was not received within {self.timeout_s:g} s "
                          f"({received} bytes arrived)", "invalid_request_error", None,
                          "body_timeout")
        response.headers["connection"] = "close"  # the rest of the body may still come
        return response

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._too_large(length.decode())(scope, receive, send)
        chunks, total, more = [], 0, True
        deadline = time.monotonic() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            except asyncio.TimeoutError:
                log.warning("%s %s: no whole body within %g s", scope.get("method"),
                            scope.get("path"), self.timeout_s)
                return await self._timed_out(total)(scope, receive, send)
            if message["type"] != "http.request":  # the client left
                return None
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.limit:
                return await self._too_large(f"more than {self.limit}")(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return await self.app(scope, replay, send)


class InternalErrors:
    """ASGI middleware: an exception the app did not handle becomes a JSON 500 (logged with its
    traceback) instead of propagating to the server, which would close the connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # half a response was sent: nothing sensible left to do
                raise
            await _error(500, f"internal error: {type(exc).__name__}: {exc}",
                         "server_error")(scope, receive, send)


async def _disconnected(request: Request) -> None:
    """Returns when the client has closed the connection (the body was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _vector(row: np.ndarray, encoding: str):
    row = np.asarray(row, dtype=np.float32)
    return base64.b64encode(row.tobytes()).decode() if encoding == "base64" else row.tolist()


def _body_schema(schema: type[BaseModel]) -> dict:
    """The OpenAPI request body of a route that parses ``schema`` itself."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema.model_json_schema()}}}}


def load_encoder(config: ServerConfig):
    from grace.encoders.base import GraceEncoder

    if config.rationale not in ("none", "greedy"):
        raise GraceInputError(f"grace serve: rationale '{config.rationale}' (choose none, greedy)")
    return GraceEncoder.from_pretrained(config.model, dtype=config.dtype, cache=config.cache,
                                        rationale=config.rationale,
                                        max_new_tokens=config.max_new_tokens)


def create_app(config: ServerConfig, encoder=None) -> FastAPI:
    """The app; ``encoder`` (already loaded) or ``config.model`` loaded now, once."""
    encoder = encoder if encoder is not None else load_encoder(config)
    name = str(encoder.name)
    names = served_names(name)
    created = int(time.time())

    def encode(texts: list[str]):
        emb, rationales = encoder.encode(texts, return_rationales=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32), list(rationales)

    batcher = MicroBatcher(encode, None, config.max_batch, config.batch_wait_ms / 1000,
                           max_pending=config.max_pending_texts)
    counter = copy.deepcopy(encoder.tokenizer)  # the model thread uses the encoder's own

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the one model thread, for the life of this server run (an app may be served again)
        batcher.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grace-model")
        batcher.start()
        yield
        await batcher.stop()
        batcher.executor.shutdown(wait=True)

    app = FastAPI(title="grace", summary="interpretable generative text embeddings",
                  lifespan=lifespan)
    app.state.encoder, app.state.batcher, app.state.config = encoder, batcher, config

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.kind, exc.param, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(GraceInputError)
    async def _user_error(request: Request, exc: GraceInputError):
        return _error(422, str(exc), "invalid_request_error")

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded):
        wait = retry_after_s(batcher.pending, batcher.seconds_per_text)
        response = _error(429, f"server busy: {exc}; retry in {wait} s", "rate_limit_error", None,
                          "overloaded")
        response.headers["retry-after"] = str(wait)
        return response

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone):  # nobody reads it (nginx's 499)
        return _error(499, str(exc), "client_closed_request")

    app.add_middleware(InternalErrors)  # innermost: below it nothing closes a connection
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout_s=config.body_timeout_s)

    def model_entry() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "grace",
                "aliases": names}

    def check_model(requested: str | None) -> None:
        if requested is not None and requested not in names:
            raise ApiError(404, f"the model '{requested}' does not exist here; this server "
                           f"serves {' / '.join(repr(n) for n in names)}",
                           "invalid_request_error", "model", "model_not_found")

    @app.get("/health")
    async def health():
        cache = getattr(encoder, "cache", None)
        return {"status": "ok", "model": name, "embedding_dim": int(encoder.embedding_dim),
                "rationale": encoder.options.rationale, "max_texts": config.max_texts,
                "max_chars": config.max_chars, "model_calls": batcher.calls,
                "requests": batcher.requests, "failed": batcher.failed,
                "rejected": batcher.rejected, "dropped": batcher.dropped, "cut": batcher.cut,
                "pending_texts": batcher.pending, "max_pending_texts": config.max_pending_texts,
                "cache": None if cache is None else {"path": str(cache.path), "hits": cache.hits,
                                                     "misses": cache.misses}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_entry()]}

    @app.get("/v1/models/{model:path}")
    async def one_model(model: str):
        check_model(model)
        return model_entry()

    # The bodies are parsed by parse_body (not FastAPI) so that every error keeps one shape.
    @app.post("/v1/embeddings", openapi_extra=_body_schema(EmbeddingsRequest))
    async def embeddings(request: Request):
        body = parse_body(await request.body(), EmbeddingsRequest)
        check_model(body.model)
        texts, single = input_texts(body.input)
        check_texts(texts, config, "input", single=single)
        batcher.check_room(len(texts))  # a 429 before the tokenizer spends time on the texts
        tokens = count_tokens(counter, texts, "input", single=single)
        emb, rationales = await batcher.submit(texts, gone=lambda: _disconnected(request))
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": _vector(row, body.encoding_format)}
                     for i, row in enumerate(emb)],
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "rationales": rationales,
        }

    @app.post("/v1/explain", openapi_extra=_body_schema(ExplainRequest))
    async def explain(request: Request):
        from grace.explain.pair import explain_pair

        body = parse_body(await request.body(), ExplainRequest)
        for param in ("text_a", "text_b"):
            check_texts([getattr(body, param)], config, param, single=True)
            count_tokens(counter, [getattr(body, param)], param, single=True)
        ex = await batcher.call(explain_pair, encoder, body.text_a, body.text_b,
                                config.max_new_tokens, cost=2)
        out = ex.to_dict()
        out["top"] = {side: {"adding": [vars(t) for t in getattr(ex, side).top(body.top_k, 1)],
                             "subtracting": [vars(t) for t in getattr(ex, side).top(body.top_k, -1)]}
                      for side in ("a", "b")}
        return out

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on ``host:port``; a busy port or an unknown host ->
    GraceInputError (one line)."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, OverflowError) as exc:
        raise GraceInputError(f"grace serve: cannot listen on {where}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: no TIME_WAIT wait
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = " (is another server running there?)" if exc.errno == errno.EADDRINUSE else ""
        raise GraceInputError(f"grace serve: cannot listen on {where}: "
                              f"{exc.strerror or exc}{hint}") from None
    return sock


def serve(config: ServerConfig) -> None:
    """Bind the port (a busy one fails here, before the slow load), load the model once and serve
    until interrupted."""
    import uvicorn

    sock = listen(config.host, config.port)
    try:
        app = create_app(config)
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host  # IPv6
        print(f"grace serve: {config.model} on http://{host}:{port} "
              f"(explorer at /, API at /v1/embeddings, /v1/explain, /health)", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
