"""``GraceModule``: a grace model as a sentence-transformers module, so that sentence-transformers
loads the folders grace saves (training checkpoints, ``save_pretrained`` of GRACE and LLM2Vec-Gen
encoders; grace.models.st_files writes their ``modules.json``):

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("runs/demo/checkpoint-12", trust_remote_code=True)
    model.encode(["a text", "another"])     # == GraceEncoder.from_pretrained(...).encode(...)
    model.encode_query(texts)                # the "query" prompt (GRACE: the system prompt)

``trust_remote_code=True``: sentence-transformers 6 imports a module class from outside its own
package only with it, also from an installed package and a local folder (its PR #3935); no code
is taken from the folder itself. The flag is not passed on: the backbone loads as grace loads it
(its own ``trust_remote_code=False``).

The module wraps the encoder ``GraceEncoder.from_pretrained(folder)`` gives (a ``GraceEncoder``
with the folder's saved encoding settings, or an ``LLM2VecGenEncoder``); its backbone is a
submodule, so sentence-transformers' ``to``, ``eval`` and ``device`` reach the weights. The
contract sentence-transformers 6 asks of a first module:

- ``preprocess(inputs, prompt=None, task=None)`` -> ``{"texts", "options"}``: no tokenisation
  (the encoder builds its own chat prompts); a prompt's text becomes the encoder's
  ``prompt_option`` (GRACE: ``system_prompt``; LLM2Vec-Gen: ``instruction``), else ``task``
  ("query" / "document", from ``encode_query`` / ``encode_document``) picks a named prompt;
- ``forward(features)`` adds ``sentence_embedding`` (B, D) float32: ``encoder.encode`` of the
  batch with the encoder's own defaults (GRACE: unit length; LLM2Vec-Gen: unnormalised), so
  ``model.encode(texts)`` equals ``encoder.encode(texts)``. sentence-transformers applies its
  ``normalize_embeddings`` and ``truncate_dim`` after the module (truncated, then normalised
  only when asked: GRACE's raw vectors come from ``GraceEncoder.encode`` itself);
- ``on_model_ready`` fills the model's empty "query" / "document" prompts with the encoder's
  (``encoder.prompts``), so ``prompt_name`` works as with any sentence-transformers model.

Written against sentence-transformers 6.3 (installed and tested); the 5.x import path and a
``tokenize`` alias (5.x's name for ``preprocess``) are kept, untested.
"""

from __future__ import annotations

from dataclasses import replace

import torch

try:  # sentence-transformers >= 6
    from sentence_transformers.base.modules import InputModule
except ImportError:  # 5.x
    from sentence_transformers.models import InputModule

from grace.encoders.base import GraceEncoder


class GraceModule(InputModule):
    """See the module docstring."""

    save_in_root = True  # the grace folder is the model folder

    def __init__(self, encoder: GraceEncoder):
        super().__init__()
        self.encoder = encoder  # not a torch module: a plain attribute
        self.model = encoder.model  # the backbone (and heads) as a submodule
        self.tokenizer = encoder.tokenizer

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None,
             revision=None, local_files_only: bool = False, model_kwargs=None, **kwargs) -> "GraceModule":
        """The folder (a local one, or a hub repo downloaded first) through
        ``GraceEncoder.from_pretrained``; ``model_kwargs={"dtype": ...}`` picks the dtype."""
        folder = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token,
                                   cache_folder=cache_folder, revision=revision,
                                   local_files_only=local_files_only)
        dtype = (model_kwargs or {}).get("dtype") or (model_kwargs or {}).get("torch_dtype") or "float32"
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        return cls(GraceEncoder.from_pretrained(folder, dtype=dtype))

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.encoder.save_pretrained(output_path)

    def on_model_ready(self, model) -> None:
        for name, text in self.encoder.prompts.items():
            if not model.prompts.get(name):  # unset ("" or None): the encoder's own
                model.prompts[name] = text

    # -- sentence-transformers' input contract ------------------------------------------------
    def preprocess(self, inputs, prompt: str | None = None, task: str | None = None, **kwargs) -> dict:
        if prompt:  # the text of the prompt sentence-transformers resolved
            options = {self.encoder.prompt_option: prompt}
        elif task in self.encoder.prompts:
            options = {"prompt_name": task}
        else:
            options = {}
        return {"texts": list(inputs), "options": options}

    def tokenize(self, texts, **kwargs) -> dict:  # sentence-transformers 5.x
        return self.preprocess(texts, **kwargs)

    def forward(self, features: dict, **kwargs) -> dict:
        texts = features["texts"]
        features["sentence_embedding"] = self.encoder.encode(
            texts, batch_size=max(1, len(texts)), show_progress_bar=False, convert_to_tensor=True,
            **features["options"])  # (B, D)
        return features

    def get_embedding_dimension(self) -> int:
        return self.encoder.embedding_dim

    @property
    def max_seq_length(self) -> int:
        return self.encoder.options.max_prompt_tokens

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.encoder.options = replace(self.encoder.options, max_prompt_tokens=value)
