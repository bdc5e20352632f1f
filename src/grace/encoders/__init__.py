"""Text encoders behind one sentence-transformers-like API: GRACE (base), sentence-transformers,
LLM2Vec-Gen (their rationale cache is grace.rollout.generation_cache).

Importing this package imports every encoder class, which registers the ones with a saved
format of their own (``GraceEncoder.claims``), so ``GraceEncoder.from_pretrained`` picks the
class from what the folder holds. The base module never imports its subclasses.
"""

from grace.encoders.base import GraceEncoder
from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
from grace.encoders.sentence_transformer import SentenceTransformerEncoder

__all__ = ["GraceEncoder", "LLM2VecGenEncoder", "SentenceTransformerEncoder"]
