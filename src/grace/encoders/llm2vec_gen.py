"""``LLM2VecGenEncoder``: a trained LLM2Vec-Gen model behind the GraceEncoder API.

    from grace import GraceEncoder
    encoder = GraceEncoder.from_pretrained("runs/l2vgen")   # a checkpoint or a training output folder
    q = encoder.encode_query(["how do plants make food?"])  # "Generate text that is semantically similar ..."
    d = encoder.encode_document(["Photosynthesis is ..."])   # "Summarize the following passage:"
    encoder.similarity(q, d)                                 # cosine
    encoder.decode("how do plants make food?")               # what the embedding holds, as text

``GraceEncoder.from_pretrained`` returns this class when the folder holds an LLM2Vec-Gen
checkpoint: ours (``llm2vec_gen.json``) or one saved by the official llm2vec-gen code
(McGill-NLP/LLM2Vec-Gen-*: ``run_config.yml`` + a peft adapter under ``encoder/``, converted in
memory by grace.llm2vec_gen.official; its backbone comes from the hub id it names, or from
``backbone=``), so ``grace eval``, ``grace serve``, ``grace decode`` and the mteb adapter work
unchanged. ``save_pretrained`` writes any of them in our format. The
embedding is one forward pass: input + K soft tokens -> heads -> mean of the aligned vectors.
It is unnormalised (as in the paper: cosine at use); ``normalize_embeddings=True`` L2-normalises it.

Instructions (LLM2Vec-Gen paper, arXiv 2603.10913): ``encode_query`` (and ``encode``, which symmetric tasks such as STS use)
prefix "Generate text that is semantically similar to this text:", ``encode_document``
"Summarize the following passage:" (both stored in the checkpoint; ``query_instruction`` /
``document_instruction`` override them). ``uses_instructions`` tells the mteb adapter to encode
queries and documents differently.

Options of GRACE encoding that do not apply (``rationale``, ``num_samples``, ``temperature``,
``top_p``, ``system_prompt``: there is no rationale) are accepted and ignored, so the same
evaluation command runs every model; ``options.rationale`` is always ``"none"``.
``max_new_tokens`` is the length of ``decode``; ``return_rationales=True`` returns each text's
decoding in place of a rationale. A decoding ends at any end token of the tokenizer and of the
backbone's generation config (grace.models.backbones.end_token_ids), and where the spec's
``end_text`` starts (official Qwen checkpoints: ``<|end_of_text|>``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from grace.data.length_sorted import length_sorted_batches
from grace.encoders.base import (
    GraceEncoder,
    check_options,
    check_truncate_dim,
    encode_output,
    named_prompt,
    resolve_batch_size,
    show_progress,
    training_output_checkpoint,
    truncate_embeddings,
    validate_texts,
)
from grace.encoders.encode import EncodeOptions
from grace.errors import GraceInputError
from grace.llm2vec_gen.checkpoint import SPEC_FILE, LLM2VecGenSpec, backbone_reference, resolve_folder
from grace.llm2vec_gen.inputs import build_encoder_inputs
from grace.llm2vec_gen.model import LLM2VecGenModel
from grace.llm2vec_gen.official import is_official, load_official
from grace.models.backbones import end_token_ids, load_backbone
from grace.models.fingerprint import model_fingerprint
from grace.models.st_files import write_st_files

IGNORED_OPTIONS = ("rationale", "num_samples", "temperature", "top_p", "system_prompt", "pooling")
OPTIONS = ("batch_size", "max_new_tokens", "max_prompt_tokens")


def load_model(name_or_path, dtype: str = "float32", trust_remote_code: bool = False,
               backbone: str | None = None):
    """(LLM2VecGenModel, tokenizer, checkpoint folder) of a checkpoint, a training output folder
    or an official llm2vec-gen folder; ``backbone`` replaces the backbone the checkpoint names
    (e.g. a local copy of it; ours still checks its fingerprint)."""
    if is_official(name_or_path):
        model, tokenizer = load_official(name_or_path, backbone, dtype, trust_remote_code)
        return model, tokenizer, Path(str(name_or_path))
    folder = resolve_folder(name_or_path)
    if folder is None:
        raise GraceInputError(f"'{name_or_path}' is not an LLM2Vec-Gen checkpoint: no {SPEC_FILE} "
                              "in it nor in its latest checkpoint-N folder")
    spec = LLM2VecGenSpec.load(folder)
    if backbone is not None:
        spec = dataclasses.replace(spec, backbone=backbone_reference(backbone))
    lm, tokenizer = load_backbone(spec.backbone, dtype, trust_remote_code)
    if (dtype == spec.backbone_dtype and spec.backbone_fingerprint
            and model_fingerprint(lm) != spec.backbone_fingerprint):
        raise GraceInputError(f"{folder}: the backbone '{spec.backbone}' is not the one this "
                              "checkpoint was trained on (its weights fingerprint differs)")
    model = LLM2VecGenModel(lm, spec)
    model.load_trainable(folder)
    return model.eval(), tokenizer, folder


def decoded_text(tokenizer, ids: list[int], end_text: str = "") -> str:
    """A decoding's text (special tokens dropped), cut where ``end_text`` starts if given."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return (text.split(end_text, 1)[0] if end_text else text).strip()


class LLM2VecGenEncoder(GraceEncoder):
    """See the module docstring."""

    writes_rationales = False  # with_options has nothing to change

    uses_instructions = True
    prompt_option = "instruction"  # a prompt's text is the instruction (grace.encoders.st_module)

    def __init__(self, model: LLM2VecGenModel, tokenizer, options: EncodeOptions | None = None,
                 name: str | None = None, query_instruction: str | None = None,
                 document_instruction: str | None = None):
        options = options or EncodeOptions(rationale="none", max_prompt_tokens=model.spec.max_input_tokens)
        super().__init__(model, tokenizer, options, cache=False, name=name or model.spec.backbone)
        self.query_instruction = model.spec.query_instruction if query_instruction is None else query_instruction
        self.document_instruction = (model.spec.document_instruction if document_instruction is None
                                     else document_instruction)

    @classmethod
    def claims(cls, name_or_path) -> bool:
        """An LLM2Vec-Gen checkpoint (ours or an official folder), or a training output folder
        whose latest checkpoint is one."""
        return is_official(name_or_path) or resolve_folder(name_or_path) is not None

    @classmethod
    def from_pretrained(cls, name_or_path, *, dtype: str = "float32", trust_remote_code: bool = False,
                        cache=None, query_instruction: str | None = None,
                        document_instruction: str | None = None, backbone: str | None = None,
                        **options) -> "LLM2VecGenEncoder":
        """Load a checkpoint folder, a training output folder (its newest good checkpoint,
        ``grace.encoders.base.training_output_checkpoint``) or an official llm2vec-gen folder.
        ``backbone``: a local copy (or another reference) of the backbone to use in place of the
        one the checkpoint names. ``cache`` and the rationale options are accepted and ignored
        (module docstring)."""
        del cache  # no rationales, nothing to cache
        check_options(options, set(IGNORED_OPTIONS) | set(OPTIONS), OPTIONS)
        name_or_path = training_output_checkpoint(name_or_path)  # its newest good checkpoint
        model, tokenizer, _ = load_model(name_or_path, dtype, trust_remote_code, backbone)
        kept = {k: v for k, v in options.items() if k in OPTIONS}
        opts = EncodeOptions(**{"max_prompt_tokens": model.spec.max_input_tokens, **kept,
                                "rationale": "none"})
        return cls(model, tokenizer, opts, name=str(name_or_path),
                   query_instruction=query_instruction, document_instruction=document_instruction)

    def save_pretrained(self, path) -> None:
        """The trainable parts and the spec (with this encoder's instructions); no backbone."""
        spec = dataclasses.replace(self.model.spec, query_instruction=self.query_instruction,
                                   document_instruction=self.document_instruction,
                                   max_input_tokens=self.options.max_prompt_tokens)
        model = self.model
        original, model.spec = model.spec, spec
        try:
            model.save_pretrained(Path(path))
        finally:
            model.spec = original
        write_st_files(path)  # SentenceTransformer(path) loads it too (grace.encoders.st_module)

    @property
    def prompts(self) -> dict[str, str]:
        """The two instructions as sentence-transformers' named prompts (``prompt_name``)."""
        return {"query": self.query_instruction, "document": self.document_instruction}

    @property
    def embedding_dim(self) -> int:
        return self.model.spec.teacher_dim

    # -- embedding and decoding -------------------------------------------------------------
    @torch.no_grad()
    def _run(self, texts: list[str], instruction: str, batch_size: int, show: bool,
             decode_tokens: int | None):
        """Embeddings (N, d_t) float32, and the decodings if ``decode_tokens``; input order."""
        device = next(self.model.parameters()).device
        K = self.model.spec.num_tokens
        emb = torch.zeros(len(texts), self.embedding_dim)
        decoded = [""] * len(texts)
        batches = length_sorted_batches([len(t) for t in texts], batch_size)
        for batch in tqdm(batches, desc="encode (llm2vec-gen)", disable=not show):
            enc = build_encoder_inputs(self.tokenizer, [texts[i] for i in batch], instruction,
                                       self.options.max_prompt_tokens, K)
            out = self.model(enc.input_ids.to(device), enc.attention_mask.to(device))
            emb[batch] = out["embedding"].float().cpu()  # (b, d_t)
            if decode_tokens:
                ids = self.model.decode(out["soft_prompts"], decode_tokens,
                                        end_token_ids(self.model.backbone, self.tokenizer),
                                        self.tokenizer.pad_token_id)
                for i, row in zip(batch, ids):
                    decoded[i] = decoded_text(self.tokenizer, row, self.model.spec.end_text)
        return emb, decoded

    def encode(self, sentences, batch_size: int | None = None, show_progress_bar: bool | None = None,
               normalize_embeddings: bool = False, convert_to_numpy: bool = True,
               convert_to_tensor: bool = False, return_rationales: bool = False,
               instruction: str | None = None, prompt_name: str | None = None,
               truncate_dim: int | None = None, **options):
        """Embed ``sentences`` under ``instruction`` (default: the query instruction; or
        ``prompt_name`` "query" / "document"): (N, d_t) numpy array (or tensor), 1-D for a single
        string; unnormalised unless ``normalize_embeddings``. ``truncate_dim``: each vector's
        first N values (renormalised when ``normalize_embeddings``). ``return_rationales``: also
        each text's decoding."""
        check_options(options, set(IGNORED_OPTIONS) | set(OPTIONS), OPTIONS)
        single = isinstance(sentences, str)
        texts = validate_texts([sentences] if single else sentences)
        if prompt_name is not None:
            if instruction is not None:
                raise ValueError("pass prompt_name or instruction, not both")
            instruction = named_prompt(self.prompts, prompt_name)
        check_truncate_dim(truncate_dim, self.embedding_dim)
        batch_size = resolve_batch_size(batch_size, options.get("batch_size", self.options.batch_size))
        show = show_progress(show_progress_bar, len(texts), batch_size)
        instruction = self.query_instruction if instruction is None else instruction
        tokens = options.get("max_new_tokens", self.options.max_new_tokens) if return_rationales else None
        emb, decoded = self._run(texts, instruction, batch_size, show, tokens)
        if normalize_embeddings:
            emb = F.normalize(emb, dim=-1)
        emb = truncate_embeddings(emb, truncate_dim, normalize_embeddings)
        return encode_output(emb, decoded, single, convert_to_numpy, convert_to_tensor,
                             return_rationales)

    def encode_query(self, sentences, **kwargs):
        """``encode`` under the query instruction."""
        return self.encode(sentences, **{"instruction": self.query_instruction, **kwargs})

    def encode_document(self, sentences, **kwargs):
        """``encode`` under the document instruction."""
        return self.encode(sentences, **{"instruction": self.document_instruction, **kwargs})

    def decode(self, sentences, max_new_tokens: int | None = None, instruction: str | None = None,
               batch_size: int | None = None, show_progress_bar: bool | None = None):
        """Greedy decoding of each text's soft prompts by the frozen LM: what the embedding
        holds, as text. A string gives a string, a list a list."""
        single = isinstance(sentences, str)
        texts = validate_texts([sentences] if single else sentences)
        tokens = max_new_tokens or self.options.max_new_tokens
        if tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {tokens}")
        batch_size = resolve_batch_size(batch_size, self.options.batch_size)
        show = show_progress(show_progress_bar, len(texts), batch_size)
        instruction = self.query_instruction if instruction is None else instruction
        _, decoded = self._run(texts, instruction, batch_size, show, tokens)
        return decoded[0] if single else decoded


def decode_texts(model: str, texts: list[str], max_new_tokens: int = 64,
                 instruction: str | None = None, document: bool = False,
                 dtype: str = "float32") -> list[str]:
    """``grace decode``: load ``model`` and decode ``texts`` (one string per text, newlines
    flattened to spaces so that each text gives one line)."""
    if max_new_tokens < 1:
        raise GraceInputError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if document and instruction is not None:
        raise GraceInputError("pass --instruction or --document, not both")
    encoder = LLM2VecGenEncoder.from_pretrained(model, dtype=dtype)
    if document:
        instruction = encoder.document_instruction
    decoded = encoder.decode(list(texts), max_new_tokens=max_new_tokens, instruction=instruction)
    return [" ".join(d.split()) for d in decoded]
