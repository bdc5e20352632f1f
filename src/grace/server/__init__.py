"""``grace serve``: the embeddings HTTP API and the web explorer (see grace.server.app)."""

from grace.server.app import ServerConfig, create_app, serve

__all__ = ["ServerConfig", "create_app", "serve"]
