"""The one adapter between grace and mteb (written against mteb 2.26; its model API moves).

    import mteb
    from grace.evaluation.mteb_adapter import GraceMTEBModel
    model = GraceMTEBModel("smollm2-135m", rationale="greedy", max_new_tokens=64)
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact", "STSBenchmark"]), cache=None)

``GraceMTEBModel`` subclasses mteb's ``AbsEncoder`` and so satisfies its runtime-checkable
``EncoderProtocol``: ``encode(DataLoader[BatchedInput], *, task_metadata, hf_split, hf_subset,
prompt_type)`` returns an (N, D) float32 array, and ``similarity`` / ``similarity_pairwise`` come
from ``AbsEncoder``, which applies ``ModelMeta.similarity_fn_name`` (cosine).

What the model reads: the ``"text"`` column of each batch, exactly as mteb's own
SentenceTransformer wrapper does. mteb's dataloaders have already joined a corpus document's
title and text with one space (``mteb._create_dataloaders._corpus_to_dict``) and appended any
query instruction, so no joining happens here.

Choices (each one documented where it is made):
- GRACE reads every input under one fixed system prompt (GRACE, arXiv 2510.04506), so ``prompt_type``
  (query / document) and mteb task prompts are ignored, and the meta says
  ``use_instructions=False``. An encoder with ``uses_instructions`` (LLM2Vec-Gen, arXiv 2603.10913)
  encodes documents (``prompt_type`` document) with ``encode_document`` and everything else
  (queries, and the single side of STS, classification, clustering) with ``encode_query``;
  its mteb task prompts are ignored too (it has its own two fixed instructions).
- Texts are batched by the encoder's own ``EncodeOptions.batch_size`` (the generation batch is
  what bounds memory); the ``batch_size`` in mteb's ``encode_kwargs`` only sizes mteb's
  DataLoader.
- Embeddings are memoised per text for the life of the wrapper, and repeated texts in one call
  are encoded once. mteb asks for the same text many times (an STS sentence in several pairs,
  the 50 Lee documents in 1,225 pairs, one corpus per query set); a text's embedding does not
  depend on the call (greedy and none are deterministic; sampled rationales are cached per text
  when a rationale cache is on), so this changes no score and saves most of the cost.
  ``texts_encoded`` counts the texts really encoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder

from grace.encoders.base import GraceEncoder

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

GRACE_REFERENCE = "https://arxiv.org/abs/2510.04506"


def mteb_model_name(encoder: GraceEncoder) -> str:
    """``grace/<model>``: mteb wants "organisation/name"; a folder or hub id keeps its last part."""
    return f"grace/{Path(str(encoder.name).rstrip('/')).name or 'encoder'}"


def grace_model_meta(encoder: GraceEncoder, revision: str | None = None,
                     license: str = "not specified") -> ModelMeta:
    """mteb ``ModelMeta`` of a GraceEncoder.

    ``revision`` defaults to the weights fingerprint (the rationale cache's key), so results of two
    checkpoints never share a revision. The rationale settings go in ``experiment_kwargs``: mteb
    keeps results of different settings apart, and ``ModelMeta.load_model`` passes them back to
    the loader.
    """
    model = encoder.model
    params = list(model.parameters())
    get_embeddings = getattr(model, "get_input_embeddings", None)  # a sentence-transformers model has none
    embeddings = get_embeddings() if get_embeddings is not None else None
    opts = encoder.options
    experiment = {"rationale": opts.rationale, "max_new_tokens": opts.max_new_tokens}
    if getattr(opts, "pooling", "mean") != "mean":  # mean: the settings as before pooling existed
        experiment["pooling"] = opts.pooling
    if opts.rationale == "sampled":
        experiment.update(num_samples=opts.num_samples, temperature=opts.temperature, top_p=opts.top_p)
    return ModelMeta(
        loader=GraceMTEBModel,
        loader_kwargs={"source": str(encoder.name)},
        name=mteb_model_name(encoder),
        revision=revision or encoder.fingerprint,
        release_date=None,
        languages=None,  # whatever the backbone reads
        n_parameters=sum(p.numel() for p in params),
        n_embedding_parameters=embeddings.weight.numel() if embeddings is not None else None,
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in params) / 2**20, 1),
        max_tokens=opts.max_prompt_tokens,  # longer inputs are truncated (with a warning)
        embed_dim=encoder.embedding_dim,
        license=license,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch"],
        reference=GRACE_REFERENCE,
        similarity_fn_name="cosine",
        use_instructions=encoder.uses_instructions,  # GRACE: one fixed system prompt (arXiv 2510.04506)
        training_datasets=None,
        adapted_from=None,
        modalities=["text"],
        model_type=["dense"],
        experiment_kwargs=experiment,
    )


class GraceMTEBModel(AbsEncoder):
    """A ``GraceEncoder`` as an mteb ``EncoderProtocol`` model. See the module docstring.

    ``model_name`` is a GraceEncoder or anything ``GraceEncoder.from_pretrained`` loads (a packaged
    name, a checkpoint folder, a hub id). ``source`` overrides it: ``ModelMeta.load_model`` calls
    the loader with the mteb name ("grace/..."), and the meta's ``loader_kwargs`` carry the real
    one. ``options`` are ``EncodeOptions`` fields (``rationale``, ``max_new_tokens`` ...).
    """

    def __init__(self, model_name: str | GraceEncoder, revision: str | None = None, *,
                 device: str | None = None, source: str | None = None, cache=True,
                 license: str = "not specified", **options: Any) -> None:
        if isinstance(model_name, GraceEncoder):
            if options:
                raise TypeError("pass encoding options to the GraceEncoder, not to the wrapper")
            encoder = model_name
        else:
            encoder = GraceEncoder.from_pretrained(source or model_name, cache=cache, **options)
        if device is not None:
            encoder.model.to(device)
        self.encoder = encoder
        self.model = encoder.model
        self.mteb_model_meta = grace_model_meta(encoder, revision, license)
        self._memo: dict[tuple[str, str], np.ndarray] = {}  # (role, text) -> embedding
        self.texts_encoded = 0  # texts really encoded (not served from the memo)
        self.rationale_ids: dict[tuple[str, str], list[int]] = {}  # (role, text) -> its rationale
        self.requested: list[tuple[str, str]] = []  # (role, text) asked for, memo hits included

    def encode(self, inputs: DataLoader, *, task_metadata: TaskMetadata, hf_split: str,
               hf_subset: str, prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        """(N, D) float32 vectors for the ``"text"`` of every item of ``inputs``, in order (unit
        vectors for GRACE)."""
        del task_metadata, hf_split, hf_subset  # one prompt (or one per role) for every input
        role = "any"  # GRACE: one prompt for every input
        encode = self.encoder.encode
        if self.encoder.uses_instructions:
            from mteb.types import PromptType

            document = prompt_type == PromptType.document
            role = "document" if document else "query"
            encode = self.encoder.encode_document if document else self.encoder.encode_query
        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise TypeError(f"GraceMTEBModel encodes text only; the batch holds {sorted(batch)}")
            texts.extend(batch["text"])
        new = [t for t in dict.fromkeys(texts) if (role, t) not in self._memo]
        self.requested.extend((role, t) for t in texts)
        if new:
            show = kwargs.get("show_progress_bar")
            if self.encoder.writes_rationales and self.encoder.options.rationale != "none":
                emb, ids = encode(new, show_progress_bar=show, return_rationale_ids=True)  # (U, D)
                self.rationale_ids.update(zip(((role, t) for t in new), ids))
            else:
                emb = encode(new, show_progress_bar=show)  # (U, D)
            self._memo.update(zip(((role, t) for t in new), emb))
            self.texts_encoded += len(new)
        if not texts:
            return np.zeros((0, self.encoder.embedding_dim), dtype=np.float32)
        return np.stack([self._memo[(role, t)] for t in texts])  # (N, D)

    def clear_memo(self) -> None:
        """Forget the memoised embeddings (the rationale cache is untouched)."""
        self._memo.clear()
