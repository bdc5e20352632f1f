"""The HTTP API (FastAPI): OpenAI-shaped embeddings with rationales, explanations, health, and
the web explorer page.

    POST /v1/embeddings  {"input": "text" | ["text", ...], "model": optional, "encoding_format":
                          "float" (default) | "base64", "dimensions": optional}
        -> {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
            "model": NAME, "usage": {"prompt_tokens": N, "total_tokens": N},
            "rationales": ["...", ...]}          (the extra field: one rationale per input)
       ``dimensions``: each vector's first N values, renormalised (as OpenAI's v3 models; GRACE
       is not Matryoshka-trained, so shortened vectors lose quality); outside 1..D -> 422
    POST /v1/explain     {"text_a": "...", "text_b": "...", "top_k": 8}
        -> grace.explain.pair.Explanation as JSON (cosine, both sides' rationales and token shares),
           "top": {"a"|"b": {"adding", "subtracting"}}, and per side "shown": {"rationale",
           "decoded"} as the terminal prints them ("(no rationale)", "(whitespace only: 64
           newlines)"; grace.explain.render.shown_rationale)
    GET  /v1/models      -> {"object": "list", "data": [{"id": NAME, "object": "model",
                             "aliases": [...], ...}]}    (GET /v1/models/{name}: that entry)
    GET  /health         -> {"status": "ok", "model": NAME, "embedding_dim": D, ...}
    GET  /               -> the explorer page (static/index.html)
    POST /embed (and POST /), POST /tokenize, GET /info
                         -> text-embeddings-inference's API (grace.server.tei), errors in TEI's
                            shape {"error", "error_type"}
    GET  /metrics        -> Prometheus text format (grace.server.metrics)

``model``: absent (allowed, as before) or one of ``served_names(NAME)``: the name the model was
loaded by (``--model``), its last path part and ``grace``; any other -> 404 ``model_not_found``,
as OpenAI answers.

Limits (``ServerConfig``): more than ``max_texts`` inputs, a text longer than ``max_chars``
characters or ``max_input_tokens`` tokens -> 413; a body larger than ``max_body_bytes`` -> 413;
a body not received whole within ``body_timeout_s`` -> 408 and the connection is closed. A body
that is not UTF-8 or not JSON, wrong types (``input[i]`` and the type it has), an empty input
list, an empty text or a text the tokenizer cannot take (a lone surrogate) -> 422 naming the
index. Inputs are checked before they join a batch, so a bad text never fails the requests it
would have been encoded with. More than ``max_pending_texts`` texts accepted and not yet
answered -> 429 at once, with ``Retry-After`` estimated from the pending texts and the measured
seconds per text (backpressure: a burst gets quick refusals instead of a queue nobody waits
for); a request whose client has left is dropped before it reaches the model, or between two
model calls of a request larger than one call. Every 4xx and 5xx is JSON in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` (TEI's shape on TEI's routes). A failure
inside the model call (a bug) is a 500 (TEI's routes: 424) for the request that caused it only
(grace.server.batcher retries the others alone), and the connection stays open for the next
request. ``serve`` checks the port and binds it before the model is loaded, so a busy or
impossible port is a one-line error. The model is loaded once at start-up (safetensors only) and
used by one thread; concurrent embedding requests are encoded together by
grace.server.batcher.MicroBatcher, in calls of at most ``max_batch`` texts and
``max_batch_tokens`` input tokens. The model thread asks the encoder for its vectors
unnormalised; each route normalises its own (``finish_vectors``: /v1/embeddings always, /embed
as ``normalize`` says). The rationale cache (on by default) is SQLite; each thread gets its own
connection (grace.rollout.generation_cache).

This module is the app factory: the routes, the error handlers and the model thread. Request
parsing, the checks and the error shape are grace.server.protocol; the body limits and the
JSON 500 are grace.server.middleware; the model names and /v1/models are
grace.server.model_names; TEI's routes are grace.server.tei; the metrics and the middleware that
counts every answer are grace.server.metrics; binding the port and running uvicorn are
grace.server.startup.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from grace import __version__
from grace.errors import GraceInputError
from grace.server.batcher import ClientGone, MicroBatcher, Overloaded, retry_after_s
from grace.server.config import ServerConfig
from grace.server.metrics import CONTENT_TYPE, RequestMetrics, ServerMetrics
from grace.server.middleware import BodyLimit, InternalErrors
from grace.server.model_names import check_model, model_routes, served_names
from grace.server.protocol import (ApiError, EmbeddingsRequest, ExplainRequest, body_schema,
                                   check_dimensions, check_texts, check_token_limit, client_left,
                                   error_response, explanation_json, finish_vectors, input_texts,
                                   parse_body, token_counts, vector_json)
from grace.server.tei import tei_routes

STATIC = Path(__file__).parent / "static"


def load_encoder(config: ServerConfig):
    from grace.encoders.base import GraceEncoder

    if config.rationale not in ("none", "greedy"):
        raise GraceInputError(f"grace serve: rationale '{config.rationale}' (choose none, greedy)")
    return GraceEncoder.from_pretrained(config.model, dtype=config.dtype, cache=config.cache,
                                        rationale=config.rationale,
                                        max_new_tokens=config.max_new_tokens)  # None: the model's


def create_app(config: ServerConfig, encoder=None) -> FastAPI:
    """The app; ``encoder`` (already loaded) or ``config.model`` loaded now, once."""
    encoder = encoder if encoder is not None else load_encoder(config)
    name = str(encoder.name)
    names = served_names(name)

    def encode(texts: list[str]):  # (N, D) as the encoder gives them: the routes normalise
        emb, rationales = encoder.encode(texts, return_rationales=True, show_progress_bar=False,
                                         normalize_embeddings=False)
        return np.asarray(emb, dtype=np.float32), list(rationales)

    metrics = ServerMetrics(config.max_batch, config.max_batch_tokens)
    batcher = MicroBatcher(encode, None, config.max_batch, config.batch_wait_ms / 1000,
                           max_pending=config.max_pending_texts,
                           max_batch_tokens=config.max_batch_tokens, observe=metrics.observe_call)
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

    # Every error in the shape of its route: OpenAI's, or TEI's on TEI's routes.
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.kind, exc.param, exc.code,
                              path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error",
                              path=request.url.path)

    @app.exception_handler(GraceInputError)
    async def _user_error(request: Request, exc: GraceInputError):
        return error_response(422, str(exc), "invalid_request_error", path=request.url.path)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded):
        wait = retry_after_s(batcher.pending, batcher.seconds_per_text)
        response = error_response(429, f"server busy: {exc}; retry in {wait} s",
                                  "rate_limit_error", None, "overloaded", path=request.url.path)
        response.headers["retry-after"] = str(wait)
        return response

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone):  # nobody reads it (nginx's 499)
        return error_response(499, str(exc), "client_closed_request", path=request.url.path)

    app.add_middleware(InternalErrors)  # innermost: below it nothing closes a connection
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout_s=config.body_timeout_s)
    app.add_middleware(RequestMetrics, metrics=metrics,  # outermost
                       paths=lambda: app.openapi()["paths"])

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

    app.include_router(model_routes(name))

    # The bodies are parsed by parse_body (not FastAPI) so that every error keeps one shape.
    @app.post("/v1/embeddings", openapi_extra=body_schema(EmbeddingsRequest))
    async def embeddings(request: Request):
        body = parse_body(await request.body(), EmbeddingsRequest)
        check_model(body.model, names)
        texts, single = input_texts(body.input)
        check_texts(texts, config, "input", single=single)
        check_dimensions(body.dimensions, int(encoder.embedding_dim))
        batcher.check_room(len(texts))  # a 429 before the tokenizer spends time on the texts
        counts = token_counts(counter, texts, "input", single=single)
        check_token_limit(counts, config, "input", single=single)
        emb, rationales = await batcher.submit(texts, gone=lambda: client_left(request),
                                               tokens=counts)
        emb = finish_vectors(emb, body.dimensions, normalize=True)  # (N, dimensions or D)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": vector_json(row, body.encoding_format)}
                     for i, row in enumerate(emb)],
            "model": name,
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
            "rationales": rationales,
        }

    @app.post("/v1/explain", openapi_extra=body_schema(ExplainRequest))
    async def explain(request: Request):
        from grace.explain.pair import explain_pair

        body = parse_body(await request.body(), ExplainRequest)
        for param in ("text_a", "text_b"):
            check_texts([getattr(body, param)], config, param, single=True)
            check_token_limit(token_counts(counter, [getattr(body, param)], param, single=True),
                              config, param, single=True)
        ex = await batcher.call(explain_pair, encoder, body.text_a, body.text_b,
                                encoder.options.max_new_tokens, cost=2)
        return explanation_json(ex, body.top_k)

    app.include_router(tei_routes(encoder, batcher, counter, config, __version__))

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.render(batcher, getattr(encoder, "cache", None)),
                        media_type=CONTENT_TYPE)

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
