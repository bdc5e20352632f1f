"""grace: interpretable generative text encoders (GRACE, LLM2Vec-Gen).

``from grace import GraceEncoder`` is the encoder API; heavy imports happen on first use.
"""

__version__ = "0.1.0"
__all__ = ["GraceEncoder"]


def __getattr__(name):
    if name == "GraceEncoder":
        from grace.encoders import GraceEncoder  # the package registers every encoder class

        return GraceEncoder
    raise AttributeError(f"module 'grace' has no attribute {name!r}")
