"""Text encoders behind one sentence-transformers-like API: GRACE (base), sentence-transformers,
LLM2Vec-Gen (their rationale cache is grace.rollout.generation_cache).

``GraceEncoder.formats`` is the table of the classes with a saved format of their own, which
``GraceEncoder.from_pretrained`` asks in turn (``claims``) before it loads a GRACE policy. It is
written here, the one module that imports every class, and not in base (its subclasses import
base, so base cannot import them). Python runs this file before any ``grace.encoders`` module, so
the table is there whichever module a caller imports. A new format is a class plus a row here.

May import: llm2vec_gen, training, rollout, data, models, errors.
(llm2vec_gen: what its encoder loads and runs; training: a training output folder's newest good
checkpoint.)
"""

from grace.encoders.base import GraceEncoder
from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
from grace.encoders.sentence_transformer import SentenceTransformerEncoder

GraceEncoder.formats = (LLM2VecGenEncoder, SentenceTransformerEncoder)  # asked in this order

__all__ = ["GraceEncoder", "LLM2VecGenEncoder", "SentenceTransformerEncoder"]
