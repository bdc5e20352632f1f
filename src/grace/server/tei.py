"""text-embeddings-inference's HTTP API on ``grace serve``, so that TEI's clients (its curl
examples, ``huggingface_hub.InferenceClient(model=URL).feature_extraction``, LangChain's and
LlamaIndex's TEI embeddings) work unchanged. Shapes as in TEI's router/src/http/types.rs:

    POST /embed   {"inputs": "text" | ["text", ...], "normalize": true, "truncate": false,
                   "truncation_direction": "Right" | "Left", "prompt_name": null, "dimensions": null}
        -> [[float, ...], ...]          (one vector per input, a list even for one string)
    POST /        the same (what InferenceClient posts to; TEI serves /embed there too)
    POST /tokenize {"inputs": "text" | [...], "add_special_tokens": true, "prompt_name": null}
        -> [[{"id", "text", "special", "start", "stop"}, ...], ...]   (start/stop: UTF-8 byte
           offsets into the input, as TEI's; null for special tokens)
    GET  /info    -> TEI's Info (model_id, model_dtype, model_type {"embedding": {"pooling"}},
                     max_input_length, max_batch_tokens, ...) plus grace's own fields

Errors: ``{"error": "...", "error_type": "Validation" | "Empty" | "Tokenizer" | "Overloaded" |
"Backend"}`` (grace.server.protocol.error_response, by path). An empty ``inputs`` list -> 400
Empty; more than ``max_texts`` inputs, a text over ``max_chars`` characters or
``max_input_tokens`` tokens with ``truncate`` false -> 413 Validation (TEI up to 1.8 and its
OpenAPI document; TEI 1.9 answers 422); other bad fields -> 422 Validation (a text the tokenizer
cannot take: Tokenizer); the pending-text budget full -> 429 Overloaded; a failure in the model
call -> 424 Backend.

Where grace differs from TEI, by its model: ``normalize`` false returns the vectors as the encoder
gives them unnormalised (GRACE: the raw (weighted, with the balanced pooling) mean of its pooled
hidden states; LLM2Vec-Gen and
sentence-transformers encoders: as their model leaves them); ``dimensions`` keeps the first N values
(renormalised if ``normalize``), though GRACE is not Matryoshka-trained; ``prompt_name`` may be
``query`` or ``document`` (sentence-transformers' names), which GRACE encodes alike (one prompt
for every input), while an encoder with instructions (LLM2Vec-Gen) is served with its query
instruction only; ``truncate`` true cuts a text to ``max_chars`` characters, then to
``max_input_tokens`` tokens from ``truncation_direction``."""

from __future__ import annotations

import logging
import time
from itertools import accumulate
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from grace.errors import GraceInputError
from grace.server.batcher import ClientGone, MicroBatcher, Overloaded
from grace.server.config import ServerConfig
from grace.server.protocol import (ApiError, body_schema, check_dimensions, check_texts,
                                   check_token_limit, client_left, finish_vectors, input_texts,
                                   parse_body, token_counts)

log = logging.getLogger("grace.server")


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # TEI ignores fields it does not know

    inputs: Any  # a string or a list of strings (input_texts names a wrong item)
    normalize: bool = Field(True, strict=True)
    truncate: bool | None = Field(None, strict=True)  # None: TEI's --auto-truncate (off here)
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    prompt_name: str | None = None
    dimensions: int | None = Field(None, strict=True)


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    inputs: Any
    add_special_tokens: bool = Field(True, strict=True)
    prompt_name: str | None = None


def tei_texts(value) -> tuple[list[str], bool]:
    """``inputs`` as texts and whether it was one string: an empty list -> 400 Empty (as TEI),
    other shapes -> 422."""
    texts, single = input_texts(value, "inputs")
    if not texts:
        raise ApiError(400, "`inputs` cannot be empty", "invalid_request_error", "inputs",
                       "empty_input")
    return texts, single


def check_prompt_name(prompt_name: str | None, encoder) -> None:
    """None, ``query``, or ``document`` when the encoder uses one prompt for every input."""
    allowed = ["query"] if getattr(encoder, "uses_instructions", False) else ["query", "document"]
    if prompt_name is not None and prompt_name not in allowed:
        raise ApiError(422, f"prompt_name '{prompt_name}' is not available: this server has "
                       f"{' / '.join(allowed)}", "invalid_request_error", "prompt_name",
                       "invalid_prompt_name")


def cut_text(tokenizer, text: str, limit: int, left: bool) -> str:
    """``text`` cut to its first (``left`` False) or last ``limit`` tokens, at the characters
    those tokens cover (the text's own characters, not a decoding)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= limit:
        return text
    return text[offsets[-limit][0]:] if left else text[:offsets[limit - 1][1]]


def truncated(tokenizer, texts: list[str], counts: list[int], limit: int, left: bool
              ) -> tuple[list[str], list[int]]:
    """The texts over ``limit`` tokens cut to it (``cut_text``), and the new counts."""
    out, new = list(texts), list(counts)
    for i in range(len(texts)):
        keep = limit
        while new[i] > limit and keep >= 1:  # a cut may tokenise differently at its edge
            out[i] = cut_text(tokenizer, texts[i], keep, left)
            new[i] = len(tokenizer(out[i], add_special_tokens=False)["input_ids"])
            keep -= 1
    return out, new


def tokens_json(tokenizer, text: str, add_special_tokens: bool) -> list[dict]:
    """TEI's SimpleToken list of one text: id, text, special, start/stop (UTF-8 byte offsets;
    None for special tokens, whose text is the token itself)."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    byte_at = list(accumulate((len(c.encode("utf-8")) for c in text), initial=0))  # char -> byte
    return [{"id": int(i), "text": piece, "special": True, "start": None, "stop": None} if special
            else {"id": int(i), "text": text[a:b], "special": False, "start": byte_at[a],
                  "stop": byte_at[b]}
            for i, (a, b), special, piece in zip(enc["input_ids"], enc["offset_mapping"],
                                                 enc["special_tokens_mask"], pieces)]


def info_json(encoder, config: ServerConfig, version: str) -> dict:
    """TEI's Info for this server, then grace's own fields."""
    name = str(encoder.name)
    dtype = str(next(encoder.model.parameters()).dtype).removeprefix("torch.")
    cache = getattr(encoder, "cache", None)
    return {
        "model_id": name, "model_sha": None, "model_dtype": dtype, "served_model_name": name,
        "model_type": {"embedding": {"pooling": encoder.options.pooling}},
        "max_concurrent_requests": config.max_pending_texts,  # TEI's permits are per input too
        "max_input_length": config.max_input_tokens, "max_batch_tokens": config.max_batch_tokens,
        "max_batch_requests": config.max_batch, "max_client_batch_size": config.max_texts,
        "auto_truncate": False, "tokenization_workers": 1, "version": version, "sha": None,
        "docker_label": None,
        # grace's own
        "embedding_dim": int(encoder.embedding_dim), "rationale": encoder.options.rationale,
        "max_new_tokens": encoder.options.max_new_tokens, "rationale_cache": cache is not None,
        "max_input_chars": config.max_chars, "uses_instructions": bool(
            getattr(encoder, "uses_instructions", False)),
    }


def tei_routes(encoder, batcher: MicroBatcher, counter, config: ServerConfig,
               version: str) -> APIRouter:
    """``POST /embed`` (and ``POST /``), ``POST /tokenize`` and ``GET /info`` for ``encoder``,
    encoded by ``batcher``; ``counter``: a tokenizer for the event loop's thread (counting,
    cutting, /tokenize)."""
    router = APIRouter()
    dim = int(encoder.embedding_dim)

    async def embed(request: Request):
        began = time.perf_counter()
        body = parse_body(await request.body(), EmbedRequest)
        texts, single = tei_texts(body.inputs)
        if body.truncate:  # TEI cuts characters too when it truncates
            texts = [t[:config.max_chars] for t in texts]
        check_texts(texts, config, "inputs", single=single)
        check_prompt_name(body.prompt_name, encoder)
        check_dimensions(body.dimensions, dim)
        batcher.check_room(len(texts))  # a 429 before the tokenizer spends time on the texts
        counts = token_counts(counter, texts, "inputs", single=single)
        if body.truncate:
            texts, counts = truncated(counter, texts, counts, config.max_input_tokens,
                                      left=body.truncation_direction.lower() == "left")
        check_token_limit(counts, config, "inputs", single=single)
        try:
            emb, _ = await batcher.submit(texts, gone=lambda: client_left(request), tokens=counts)
        except (Overloaded, ClientGone, ApiError, GraceInputError):
            raise  # their own answers (429, 499, 4xx, 422)
        except Exception as exc:  # the model call failed for this request: TEI's 424 Backend
            log.exception("model call failed on %s", request.url.path)
            raise ApiError(424, f"the model call failed: {type(exc).__name__}: {exc}",
                           "server_error", None, "model_error") from None
        rows = finish_vectors(emb, body.dimensions, body.normalize)  # (N, d)
        headers = {"x-compute-characters": str(sum(len(t) for t in texts)),
                   "x-compute-tokens": str(sum(counts)),
                   "x-total-time": str(int((time.perf_counter() - began) * 1000))}
        return JSONResponse(rows.tolist(), headers=headers)

    router.add_api_route("/embed", embed, methods=["POST"], openapi_extra=body_schema(EmbedRequest),
                         summary="TEI: embeddings as a list of vectors")
    router.add_api_route("/", embed, methods=["POST"], include_in_schema=False)

    @router.post("/tokenize", openapi_extra=body_schema(TokenizeRequest))
    async def tokenize(request: Request):
        body = parse_body(await request.body(), TokenizeRequest)
        texts, single = tei_texts(body.inputs)
        check_texts(texts, config, "inputs", single=single)
        check_prompt_name(body.prompt_name, encoder)
        token_counts(counter, texts, "inputs", single=single)  # a text it refuses -> 422 Tokenizer
        return [tokens_json(counter, t, body.add_special_tokens) for t in texts]

    @router.get("/info")
    async def info():
        return info_json(encoder, config, version)

    return router
