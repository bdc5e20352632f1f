"""``grace serve``: the embeddings HTTP API and the web explorer (see grace.server.app).

May import: grace, explain, encoders, data, errors.
(grace: the package's ``__version__``, in the same layer of entry points.)
"""

from grace.server.app import create_app
from grace.server.config import ServerConfig
from grace.server.startup import serve

__all__ = ["ServerConfig", "create_app", "serve"]
