"""grace: interpretable generative text encoders (GRACE, LLM2Vec-Gen)."""

__version__ = "0.1.0"
