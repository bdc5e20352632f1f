"""``GraceEncoder``: the user-facing encoder, shaped like sentence-transformers.

    from grace import GraceEncoder
    encoder = GraceEncoder.from_pretrained("smollm2-135m")          # or a checkpoint / hub id
    emb = encoder.encode(["a text", "another"], batch_size=16)       # (2, D) numpy, normalised
    emb, why = encoder.encode(texts, return_rationales=True)         # ... and the rationales
    scores = encoder.similarity(emb[:1], emb)                        # cosine, (1, 2)
    raw = encoder.encode(texts, normalize_embeddings=False)          # the mean-pooled vectors
    short = encoder.encode(texts, truncate_dim=32)                   # first 32 values, unit length

Every embedding is the masked mean of the policy's last-layer hidden states over the text and
its rationale (GRACE paper, arXiv 2510.04506). ``rationale`` picks none / greedy (default, deterministic) / sampled.
Rationales are cached on disk (``GRACE_CACHE``/rationales.sqlite by default; ``cache=False``
disables it), keyed by model fingerprint, text and generation settings.

sentence-transformers' encode options: ``prompt_name`` picks one of ``encoder.prompts`` (for
GRACE, system prompts: "query" and "document" are the saved ``system_prompt`` unless
``prompts=`` says otherwise; ``encode_query`` / ``encode_document`` use them), ``truncate_dim``
keeps each vector's first N values (renormalised when ``normalize_embeddings``), and
``normalize_embeddings=False`` returns the raw mean-pooled vectors. A saved folder also holds
``modules.json``, so ``SentenceTransformer(folder, trust_remote_code=True)`` loads it
(grace.encoders.st_module).

Input handling: a single string gives a 1-D vector; a non-string item raises ``TypeError``
naming its index; an empty or whitespace-only text is encoded as an empty user message (a
documented choice: corpora have such rows) and counted in a warning; texts longer than
``max_prompt_tokens`` are truncated with a warning that counts them.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from grace.data.readers import check_unicode
from grace.encoders.encode import EncodeOptions, embed_texts
from grace.errors import GraceInputError
from grace.models.backbones import PACKAGED, cache_dir, load_backbone
from grace.models.fingerprint import model_fingerprint
from grace.models.pooling import read_pooling
from grace.models.st_files import write_st_files
from grace.rollout.generation_cache import RationaleCache
from grace.training.checkpoint import STATE_FILE, checkpoint_problem, checkpoints
from grace.training.model_card import write_model_card

ENCODER_CONFIG = "grace_encoder.json"
RUN_RECORDS = ("grace_config.yaml", "metrics.jsonl")  # what a training output folder holds


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def training_output_checkpoint(name_or_path, say=_say):
    """The newest good checkpoint of a training output folder, or ``name_or_path`` as given.

    A training output folder (``grace train --output-dir OUT``, any method) holds
    ``checkpoint-N`` folders beside the run's records (``grace_config.yaml``, ``metrics.jsonl``)
    and is not a model itself. It stands for its newest checkpoint that
    ``grace.training.checkpoint.checkpoint_problem`` finds complete and intact (the check a
    resume makes); ``say`` names it, and each newer bad one, in a line. ``GraceInputError``
    naming the folder and what it holds when no checkpoint is good. Anything else (a checkpoint,
    a model folder, a packaged name, a hub id) is returned unchanged.
    """
    folder = Path(str(name_or_path))
    if (str(name_or_path) in PACKAGED or not folder.is_dir() or (folder / STATE_FILE).is_file()
            or (folder / "config.json").is_file()):
        return name_or_path  # not a folder, a checkpoint, or a model folder (records or not)
    found = checkpoints(folder)
    if not found and not any((folder / name).is_file() for name in RUN_RECORDS):
        return name_or_path
    bad = []
    for checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            for line in bad:
                say(f"grace: {line}; using {checkpoint.name} instead")
            newest = "newest" if not bad else "newest good one"
            say(f"grace: using {checkpoint} ({newest} of {len(found)})")
            return str(checkpoint)
        bad.append(f"{checkpoint}/{problem}")
    held = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(held[:12]) + (f" ... ({len(held)} in all)" if len(held) > 12 else "")
    if bad:
        raise GraceInputError(f"{folder} is a training output folder with no usable checkpoint "
                              f"({'; '.join(bad)}); it holds {shown}")
    raise GraceInputError(f"{folder} is a training output folder without a checkpoint-N folder "
                          f"(it holds {shown}): train until a checkpoint is saved, or pass a "
                          "model or checkpoint folder")


def trained_options(folder) -> dict:
    """The encoding options a training checkpoint's ``grace_config.yaml`` fixes: ``pooling``,
    its ``rollout.encode_pooling`` (the pooling it is to be read with), else ``rollout.pooling``
    (the one its rewards were computed with); ``system_prompt``, its ``data.system_prompt`` (the
    policy learnt to write rationales under that message); ``max_new_tokens``, its
    ``rollout.max_new_tokens`` (the rationale length its rewards were computed at). Only what the
    file names; ``{}`` without one."""
    config = Path(folder) / "grace_config.yaml"
    if not config.is_file():
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(config.read_text()) or {}
        rollout, data = loaded.get("rollout"), loaded.get("data")
        pooling = read_pooling(rollout)
    except (yaml.YAMLError, AttributeError):
        return {}  # not ours to judge here: loading the weights reports a broken checkpoint
    prompt = data.get("system_prompt") if isinstance(data, dict) else None
    tokens = rollout.get("max_new_tokens") if isinstance(rollout, dict) else None
    tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 1 else None
    return {**({"pooling": pooling} if pooling else {}),
            **({"system_prompt": prompt} if isinstance(prompt, str) else {}),
            **({"max_new_tokens": tokens} if tokens else {})}


def validate_texts(texts) -> list[str]:
    """``texts`` as a list of strings: ``TypeError`` naming a non-string item, a check of each
    text's Unicode, and a warning that counts empty or whitespace-only texts."""
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"encode() takes a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
        check_unicode(text, f"text {i}")
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        warnings.warn(f"{empty} of {len(texts)} texts are empty or whitespace-only; they are "
                      "encoded as an empty user message", stacklevel=3)
    return texts


def resolve_batch_size(batch_size, default: int) -> int:
    """``batch_size`` as given (an int >= 1), or ``default`` when it is None."""
    if batch_size is None:
        return default
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def check_options(options: dict, known, listed=None) -> None:
    """``TypeError`` naming the first option not in ``known`` (and listing ``listed``, default
    ``known``): the one unknown-option check of every encoder."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        shown = ", ".join(sorted(listed if listed is not None else known))
        raise TypeError(f"unknown encoding option '{unknown[0]}' (known: {shown})")


def given_options(options: dict) -> dict:
    """``options`` without the ones set to None: None means "not given" (no encoding option takes
    None as a value), so a caller passes an optional CLI flag or config field straight through."""
    return {k: v for k, v in options.items() if v is not None}


def named_prompt(prompts: dict[str, str], prompt_name: str) -> str:
    """``prompts[prompt_name]``; ``ValueError`` naming the prompts there are otherwise."""
    if prompt_name not in prompts:
        raise ValueError(f"prompt_name '{prompt_name}' is not one of this encoder's prompts "
                         f"({', '.join(sorted(prompts))})")
    return prompts[prompt_name]


def check_truncate_dim(truncate_dim, dim: int) -> None:
    """``ValueError`` unless ``truncate_dim`` is None or an integer from 1 to ``dim``."""
    if truncate_dim is None:
        return
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or not 1 <= truncate_dim <= dim:
        raise ValueError(f"truncate_dim must be an integer from 1 to {dim} (the embedding size), "
                         f"got {truncate_dim!r}")


def truncate_embeddings(emb, truncate_dim: int | None, normalize: bool):
    """Each row's first ``truncate_dim`` values (all when None), L2-renormalised if ``normalize``
    (sentence-transformers' order: truncate, then normalise). Tensor in, tensor out; numpy in,
    numpy out. (N, D) -> (N, truncate_dim)."""
    if truncate_dim is None:
        return emb
    short = torch.as_tensor(emb)[..., :truncate_dim]  # (N, d)
    short = F.normalize(short, dim=-1) if normalize else short.contiguous()
    return short if torch.is_tensor(emb) else short.numpy()


def show_progress(show_progress_bar: bool | None, n: int, batch_size: int) -> bool:
    """sentence-transformers' default: a bar only when there are several batches' worth."""
    return show_progress_bar if show_progress_bar is not None else n > 4 * batch_size


def encode_output(emb, rationales: list[str], single: bool, convert_to_numpy: bool,
                  convert_to_tensor: bool, return_rationales: bool, rationale_ids=None):
    """The end of every ``encode``: a tensor or a float32 numpy array (N, D), 1-D for a single
    string; then the rationales when asked, then ``rationale_ids`` when given."""
    as_tensor = convert_to_tensor or not convert_to_numpy
    if torch.is_tensor(emb):
        out = emb if as_tensor else emb.numpy().astype(np.float32)
    else:
        out = torch.from_numpy(emb) if as_tensor else emb
    if single:
        out, rationales = out[0], rationales[0]
        rationale_ids = rationale_ids[0] if rationale_ids is not None else None
    result = (out, rationales) if return_rationales else (out,)
    if rationale_ids is not None:
        result += (rationale_ids,)
    return result if len(result) > 1 else out


class GraceEncoder:
    """A GRACE policy used as a text encoder. See the module docstring."""

    writes_rationales = True  # rationale settings apply (with_options rebuilds the encoder)
    prompt_option = "system_prompt"  # the encode() option a prompt's text sets (st_module uses it)
    # The subclasses with a saved format of their own, in the order from_pretrained asks them
    # (``claims``). The table is written in grace/encoders/__init__.py, which imports every class
    # and which Python runs before any grace.encoders module: this module cannot import its
    # subclasses (they import it).
    formats: tuple[type["GraceEncoder"], ...] = ()

    @classmethod
    def claims(cls, name_or_path) -> bool:
        """Whether ``name_or_path`` is saved in this class's own format (subclasses override)."""
        return False

    def __init__(self, model, tokenizer, options: EncodeOptions | None = None,
                 cache: RationaleCache | str | Path | bool | None = True, name: str | None = None,
                 prompts: dict[str, str] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.options = options or EncodeOptions()
        self.custom_prompts = dict(prompts or {})  # beyond (or instead of) the default two
        self.name = name or getattr(model.config, "_name_or_path", "grace-encoder")
        if cache is True:
            cache = cache_dir() / "rationales.sqlite"
        if isinstance(cache, (str, Path)):
            cache = RationaleCache(cache)
        self.cache = cache if isinstance(cache, RationaleCache) else None
        self._fingerprint = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, dtype: str = "float32",
                        trust_remote_code: bool = False, cache=True, **options) -> "GraceEncoder":
        """Load a packaged name, a grace checkpoint, a local folder or a hub id.

        Encoding options (``rationale``, ``max_new_tokens`` ...) come from ``grace_encoder.json``
        in the folder if present, then from keyword arguments (``prompts``: named system prompts,
        see ``prompts``); a training checkpoint's
        ``grace_config.yaml`` gives the pooling it is read with (``rollout.encode_pooling``, else
        ``rollout.pooling``, the one its rewards were computed with), the system prompt it was
        trained under (``data.system_prompt``) and its rationale length cap
        (``rollout.max_new_tokens``; ``trained_options``).

        ``GraceEncoder.from_pretrained`` picks the class from what ``name_or_path`` holds: it asks
        each class of ``GraceEncoder.formats`` (the table in grace/encoders/__init__.py) whether
        it ``claims`` the folder, and loads a GRACE policy when none does. An LLM2Vec-Gen checkpoint
        (or training output folder) gives a ``grace.encoders.llm2vec_gen.LLM2VecGenEncoder``, a
        sentence-transformers folder or ``all-MiniLM-L6-v2`` a
        ``grace.encoders.sentence_transformer.SentenceTransformerEncoder``: same API.

        A training output folder stands for its newest good checkpoint
        (``training_output_checkpoint``, which names it on stderr).
        """
        name_or_path = training_output_checkpoint(name_or_path)
        options = given_options(options)
        if cls is GraceEncoder:
            for fmt in GraceEncoder.formats:
                if fmt.claims(name_or_path):
                    return fmt.from_pretrained(name_or_path, dtype=dtype, cache=cache,
                                               trust_remote_code=trust_remote_code, **options)
        prompts = options.pop("prompts", None)
        known = {f.name for f in fields(EncodeOptions)}
        check_options(options, known)  # before the (slow) load
        try:
            EncodeOptions(**options)  # the values too (a saved grace_encoder.json may add more)
        except ValueError as exc:
            raise GraceInputError(str(exc)) from None
        model, tokenizer = load_backbone(name_or_path, dtype, trust_remote_code)
        saved = trained_options(name_or_path)
        config_file = Path(name_or_path) / ENCODER_CONFIG
        if config_file.is_file():
            saved.update(json.loads(config_file.read_text()))
        opts = EncodeOptions(**{**{k: v for k, v in saved.items() if k in known}, **options})
        prompts = {**saved.get("prompts", {}), **(prompts or {})}
        return cls(model, tokenizer, opts, cache=cache, name=name_or_path, prompts=prompts)

    def with_options(self, cache=True, **options) -> "GraceEncoder":
        """The same weights with other encoding options (``cache``: True keeps this encoder's
        cache; an option set to None keeps this encoder's value). Encoders without rationale
        settings (``writes_rationales`` False: LLM2Vec-Gen, sentence-transformers) return
        themselves."""
        if not self.writes_rationales:
            return self
        options = given_options(options)
        return GraceEncoder(self.model, self.tokenizer, replace(self.options, **options),
                            cache=self.cache if cache is True else cache, name=self.name,
                            prompts=self.custom_prompts)

    def save_pretrained(self, path: str | Path, eval_results=None) -> None:
        """Weights (safetensors), tokenizer, the encoding options as ``grace_encoder.json`` and a
        model card as ``README.md`` (``grace.training.model_card``: never over a README.md of the
        user's). ``eval_results``: a ``grace eval --output`` JSON file or dict for the card's
        model-index."""
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        saved = {**asdict(self.options), **({"prompts": self.custom_prompts} if self.custom_prompts else {})}
        (path / ENCODER_CONFIG).write_text(json.dumps(saved, indent=2))
        write_st_files(path)  # SentenceTransformer(path) loads it too (grace.encoders.st_module)
        write_model_card(path, source=str(self.name), eval_results=eval_results)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    eval_results=None, commit_message: str | None = None):
        """Save to a temporary folder and upload it to the hub repo ``repo_id`` (created if
        missing): ``grace.encoders.hub.push_encoder``. Returns its ``PushReport``."""
        from grace.encoders.hub import push_encoder

        return push_encoder(self, repo_id, private=private, token=token,
                            eval_results=eval_results, commit_message=commit_message)

    # -- encoding ---------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def embedding_dim(self) -> int:
        return self.model.config.hidden_size

    def get_sentence_embedding_dimension(self) -> int:  # sentence-transformers name
        return self.embedding_dim

    @property
    def prompts(self) -> dict[str, str]:
        """Named prompts, as sentence-transformers' ``prompts``; for GRACE each is a system
        prompt. "query" and "document" are the ``system_prompt`` of the encoding options unless
        ``prompts=`` (``__init__``, ``from_pretrained``, saved in ``grace_encoder.json``) names
        them otherwise: GRACE uses one prompt for every input (arXiv 2510.04506)."""
        default = self.options.system_prompt
        return {"query": default, "document": default, **self.custom_prompts}

    @property
    def uses_instructions(self) -> bool:
        """Whether queries and documents are encoded differently (the mteb adapter then calls
        ``encode_query`` and ``encode_document``)."""
        prompts = self.prompts
        return prompts.get("query") != prompts.get("document")

    def encode(self, sentences, batch_size: int | None = None, show_progress_bar: bool | None = None,
               normalize_embeddings: bool = True, convert_to_numpy: bool = True,
               convert_to_tensor: bool = False, return_rationales: bool = False,
               return_rationale_ids: bool = False, prompt_name: str | None = None,
               truncate_dim: int | None = None, **options):
        """Embed ``sentences``: (N, D) numpy array (or tensor), 1-D for a single string.

        ``options`` override the encoder's ``EncodeOptions`` for this call (e.g.
        ``rationale="none"``). Embeddings are L2-normalised unless ``normalize_embeddings`` is
        False: then the raw pooled vectors (grace.encoders.encode). ``prompt_name``: the system
        prompt ``prompts[prompt_name]`` (not with ``system_prompt``). ``truncate_dim``: each
        vector's first N values, renormalised when ``normalize_embeddings``.
        ``return_rationales`` adds the rationales' texts, ``return_rationale_ids`` (after them)
        their token ids up to and including the end token (the quality figures'
        input, grace.rollout.quality.records_quality).
        """
        single = isinstance(sentences, str)
        texts = validate_texts([sentences] if single else sentences)
        if prompt_name is not None:
            if "system_prompt" in options:
                raise ValueError("pass prompt_name or system_prompt, not both")
            options["system_prompt"] = named_prompt(self.prompts, prompt_name)
        check_truncate_dim(truncate_dim, self.embedding_dim)
        opts = EncodeOptions(**{**asdict(self.options), **options,
                                "batch_size": resolve_batch_size(
                                    batch_size, options.get("batch_size", self.options.batch_size))})
        show = show_progress(show_progress_bar, len(texts), opts.batch_size)
        use_cache = self.cache if opts.rationale != "none" else None
        emb, rationales, ids = embed_texts(
            self.model, self.tokenizer, texts, opts, show_progress=show, cache=use_cache,
            fingerprint=self.fingerprint if use_cache is not None else None, return_ids=True,
            normalize=normalize_embeddings,
        )
        emb = truncate_embeddings(emb, truncate_dim, normalize_embeddings)
        return encode_output(emb, rationales, single, convert_to_numpy, convert_to_tensor,
                             return_rationales, ids if return_rationale_ids else None)

    def encode_query(self, sentences, **kwargs):
        """``encode`` with the "query" prompt (GRACE: the one system prompt, unless ``prompts``
        names another), as sentence-transformers' ``encode_query``."""
        return self.encode(sentences, **self._named("query", kwargs))

    def encode_document(self, sentences, **kwargs):
        """``encode`` with the "document" prompt (as ``encode_query``)."""
        return self.encode(sentences, **self._named("document", kwargs))

    def _named(self, name: str, kwargs: dict) -> dict:
        """``kwargs`` with ``prompt_name=name`` unless they set a prompt themselves."""
        if self.prompt_option in kwargs or "prompt_name" in kwargs or name not in self.prompts:
            return kwargs
        return {**kwargs, "prompt_name": name}

    @staticmethod
    def similarity(a, b) -> torch.Tensor:
        """Cosine similarity matrix of two sets of embeddings: (N, D), (M, D) -> (N, M)."""
        a = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a, dtype=torch.float32)
        b = torch.as_tensor(np.asarray(b) if not torch.is_tensor(b) else b, dtype=torch.float32)
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
