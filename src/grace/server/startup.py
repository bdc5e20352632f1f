"""``serve``: the ``grace serve`` start-up. The port is checked and bound first (``listen``: a
busy port or an unknown host is a one-line GraceInputError, before the slow model load), then
the app is made (the model loaded once, grace.server.app) and uvicorn serves it on that socket
until interrupted. The only module here that knows uvicorn."""

from __future__ import annotations

import errno
import socket

from grace.errors import GraceInputError
from grace.server.app import create_app
from grace.server.config import ServerConfig


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
              f"(explorer at /, API at /v1/embeddings, /v1/explain, /health; TEI's /embed, "
              f"/tokenize, /info; /metrics)", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
