"""``grace serve``: the embeddings HTTP API and the web explorer (see grace.server.app)."""

from grace.server.app import create_app
from grace.server.config import ServerConfig
from grace.server.startup import serve

__all__ = ["ServerConfig", "create_app", "serve"]
