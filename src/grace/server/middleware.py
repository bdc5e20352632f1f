"""The two ASGI middlewares around the app: ``BodyLimit`` (a body too large -> 413, a body not
received in time -> 408 and the connection closed, both before the app reads it) and
``InternalErrors`` (an exception no handler took -> a JSON 500, so the connection stays open for
the next request). Both answer in the error shape of the path (grace.server.protocol: OpenAI's, or
TEI's on its routes); they know nothing else of the routes, nor of the model."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi.responses import JSONResponse

from grace.server.protocol import error_response

log = logging.getLogger("grace.server")


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets a 413 JSON error before the app
    sees it, whether the client sent a ``content-length`` or streamed it chunked (the body is
    read up to the limit, then handed on). A body not received whole within ``timeout_s``
    seconds (a client that declared a length and went quiet) gets a 408 and the connection is
    closed, so it cannot hold the connection."""

    def __init__(self, app, limit: int, timeout_s: float):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    def _too_large(self, size: str, path: str) -> JSONResponse:
        return error_response(413, f"request body of {size} bytes; at most {self.limit}",
                              "request_too_large", None, "body_too_large", path=path)

    def _timed_out(self, received: int, path: str) -> JSONResponse:
        response = error_response(408, f"the request body was not received within "
                                  f"{self.timeout_s:g} s ({received} bytes arrived)",
                                  "invalid_request_error", None, "body_timeout", path=path)
        response.headers["connection"] = "close"  # the rest of the body may still come
        return response

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path")
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._too_large(length.decode(), path)(scope, receive, send)
        chunks, total, more = [], 0, True
        deadline = time.monotonic() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            except asyncio.TimeoutError:
                log.warning("%s %s: no whole body within %g s", scope.get("method"),
                            scope.get("path"), self.timeout_s)
                return await self._timed_out(total, path)(scope, receive, send)
            if message["type"] != "http.request":  # the client left
                return None
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.limit:
                return await self._too_large(f"more than {self.limit}", path)(scope, receive, send)
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
            await error_response(500, f"internal error: {type(exc).__name__}: {exc}",
                                 "server_error", path=scope.get("path"))(scope, receive, send)
