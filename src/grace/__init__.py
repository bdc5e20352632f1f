"""grace: interpretable generative text encoders (GRACE, LLM2Vec-Gen).

``from grace import GraceEncoder`` is the encoder API; heavy imports happen on first use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("grace")  # pyproject.toml's, as installed: the one source of truth
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
__all__ = ["GraceEncoder"]


def __getattr__(name):
    if name == "GraceEncoder":
        from grace.encoders import GraceEncoder  # the package holds the table of encoder formats

        return GraceEncoder
    raise AttributeError(f"module 'grace' has no attribute {name!r}")
