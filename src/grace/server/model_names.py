"""The names the served model answers to and the routes that list them. A request's ``model``
may be absent or one of ``served_names(NAME)`` (the name it was loaded by, its last path part,
``grace``); any other is a 404 ``model_not_found``, as OpenAI answers. ``GET /v1/models`` lists
the one model with its aliases, ``GET /v1/models/{name}`` gives that entry. Knows nothing of
encoding or of the model itself beyond its name."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter

from grace.server.protocol import ApiError


def served_names(name: str) -> list[str]:
    """The names a request's ``model`` may give for the model loaded as ``name``: ``name`` itself,
    its last path part (``runs/demo/checkpoint-12`` -> ``checkpoint-12``) and ``grace``."""
    return list(dict.fromkeys([name, Path(name).name or name, "grace"]))


def check_model(requested: str | None, names: list[str]) -> None:
    """``requested`` absent or one of ``names``; any other -> 404 ``model_not_found``."""
    if requested is not None and requested not in names:
        raise ApiError(404, f"the model '{requested}' does not exist here; this server "
                       f"serves {' / '.join(repr(n) for n in names)}",
                       "invalid_request_error", "model", "model_not_found")


def model_routes(name: str) -> APIRouter:
    """``GET /v1/models`` and ``GET /v1/models/{model}`` for the model loaded as ``name``."""
    names, created = served_names(name), int(time.time())
    router = APIRouter()

    def entry() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "grace",
                "aliases": names}

    @router.get("/v1/models")
    async def models():
        return {"object": "list", "data": [entry()]}

    @router.get("/v1/models/{model:path}")
    async def one_model(model: str):
        check_model(model, names)
        return entry()

    return router
