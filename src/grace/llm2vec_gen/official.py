"""Checkpoints saved by the official llm2vec-gen code (McGill-NLP/LLM2Vec-Gen-* on the Hub),
converted in memory into this package's model (``LLM2VecGenSpec`` + ``LLM2VecGenModel``); no file
is rewritten.

The layout read (their loader's; the backbone itself is not in the folder, it is named by hub id):
- ``run_config.yml``: ``key: value`` lines whose values are Python ``str()`` of the run's
  arguments (``model_name_or_path: Qwen/Qwen3-8B``, ``torch_dtype: bfloat16``,
  ``special_tokens: ['<question1>', ...]``, ``encoding_mode: last_10_tokens``,
  ``max_input_length: 512``, ``None``); read with yaml where it parses, else line by line;
- ``encoder_decoder_config.json``: ``{"encoding_mode": ..., "save_decoder": false}``;
- ``encoder/``: a peft TRAINABLE_TOKENS adapter on the backbone's ``embed_tokens``:
  ``adapter_config.json`` (``token_indices``: the K special tokens' ids, ``base_model_name_or_path``)
  and ``adapter_model.safetensors``, whose ``...embed_tokens.trainable_tokens_delta`` (K, d) holds,
  despite its name, the K rows themselves, in ``token_indices`` order (peft writes the whole
  resized matrix beside it as ``...base_layer.weight``: not read); ``config.json``: the backbone's
  config after resizing;
- ``reconstruction_mlp`` and ``alignment_mlp``: ``torch.save`` pickles (no extension) of
  ``{"state_dict": {"projection.weight", "projection.bias"}, "config": {"input_dim",
  "output_dim", "dtype", "size", "pooling_mode"}}``, read with ``weights_only=True``;
- the tokenizer files: the backbone's tokenizer plus the K special tokens (read here only for
  the special tokens' ids; texts are tokenised by the backbone's own tokenizer, so a text never
  yields an id past the backbone's unresized embedding matrix).

Mapping: soft token k = the delta row of ``special_tokens[k]`` (its id from the folder's
tokenizer, looked up in ``token_indices``); the two heads as they are (cast to float32); the
alignment input's standardisation the identity (mean 0, scale 1); K = the number of special
tokens, the teacher dimension = the alignment head's ``output_dim``, ``max_input_tokens`` =
``max_input_length``, ``backbone_dtype`` = ``torch_dtype`` (for the record: the backbone loads in
the dtype the caller asks). The paper's two instructions stay the spec's defaults.

Numerics against the official encoder (the same model, computed a little differently):
- tokens: theirs are ``tokenizer(text + "<question1>...<questionK>")``; ours ``tokenizer(text)``
  followed by the K rows as embeddings: the same sequence (a tokenizer splits special tokens out
  before BPE), and the same truncation (the first max_input_length - K text tokens). A text that
  itself contains ``<questionN>`` gets the trained row there in theirs, that string's plain-text
  tokens in ours;
- positions: theirs count left padding (HF's default ``arange``), ours start at the first real
  token (grace.models.pooling.position_ids_from_mask). RoPE makes attention depend only on
  position differences, so the two agree up to rounding; a batch of one text is bit-equal;
- the heads run in float32 on their bfloat16 weights (theirs in bfloat16); the backbone in the
  dtype asked (``--dtype bfloat16`` for theirs);
- input text: their evaluation strips instruction and text (``instruction.strip() + " " +
  text.strip()``), ours joins them as given (grace.llm2vec_gen.inputs.input_text);
- decoding stops at every end token the tokenizer and the backbone's generation config name
  (Qwen2/3's and Llama-3's list the extra ones their decoding stops at, 151643 / 128001) and,
  for these checkpoints, at the literal text ``<|end_of_text|>`` (``END_TEXT``: the Qwen
  checkpoints learnt Llama's end marker as text; the spec's ``end_text``).

Refused, each with one GraceInputError line: another adapter than TRAINABLE_TOKENS (a LoRA changes
the backbone, which this model keeps frozen), ``save_decoder: true`` (a fine-tuned decoder),
an encoding mode other than the mean over all K soft tokens (``last_K_tokens``; ``total_N`` with
``last_M``, M != N), heads that are not one linear layer (``size`` > 1, ``pooling_mode`` not
``linear``).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from grace.errors import GraceInputError
from grace.llm2vec_gen.checkpoint import LLM2VecGenSpec, backbone_reference
from grace.llm2vec_gen.model import LLM2VecGenModel
from grace.models.backbones import DTYPES, load_backbone, load_tokenizer

RUN_CONFIG = "run_config.yml"
ENCODER_DECODER_CONFIG = "encoder_decoder_config.json"
ADAPTER = "encoder"  # the peft TRAINABLE_TOKENS adapter's folder
DELTA_SUFFIX = "embed_tokens.trainable_tokens_delta"  # (K, d): the K rows themselves
HEADS = {"reconstruction_head": "reconstruction_mlp", "alignment_head": "alignment_mlp"}
END_TEXT = "<|end_of_text|>"  # the official decoding strips it (Qwen targets end with it as text)


def is_official(name_or_path) -> bool:
    """Whether ``name_or_path`` is a folder in the official layout: ``run_config.yml`` and an
    adapter config under ``encoder/`` (of any peft type, so that ``load_official`` can refuse a
    LoRA with its reason instead of another loader failing on it)."""
    folder = Path(str(name_or_path))
    return (folder / RUN_CONFIG).is_file() and (folder / ADAPTER / "adapter_config.json").is_file()


def _literal(value):
    """A Python ``str()`` value back to what it was where it is a literal (``None``, ``512``,
    ``['<question1>', ...]``, ``True``); other strings (``bfloat16``, a hub id) as they are."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value.strip()


def read_run_config(path: Path) -> dict:
    """``run_config.yml`` as a dict: yaml when the file parses as a mapping (every value then
    read back as a Python literal where it is one), else each ``key: value`` line."""
    import yaml

    text = path.read_text()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        loaded = None
    if not isinstance(loaded, dict):  # a value yaml refuses (``a: b: c``): line by line
        loaded = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() and not line[:1].isspace() and not key.lstrip().startswith("#"):
                loaded[key.strip()] = value
    return {str(k): _literal(v) for k, v in loaded.items()}


def _read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GraceInputError(f"{path}: unreadable ({exc})") from None
    if not isinstance(values, dict):
        raise GraceInputError(f"{path}: not a JSON object")
    return values


def check_encoding_mode(mode: str, num_tokens: int, where: Path) -> None:
    """Only the mean over all K soft tokens (``last_K_tokens``) is this model's embedding."""
    last = re.search(r"last_(\d+)", mode)
    total = re.search(r"total_(\d+)", mode)
    if last is None:
        raise GraceInputError(f"{where}: encoding_mode '{mode}' is not supported (grace reads "
                              f"last_{num_tokens}_tokens: the mean over all {num_tokens} soft tokens)")
    m, n = int(last.group(1)), int(total.group(1)) if total else num_tokens
    if m != n or m != num_tokens:
        raise GraceInputError(f"{where}: encoding_mode '{mode}' pools the last {m} of {n} special "
                              f"tokens; grace pools all of them (last_{num_tokens}_tokens only)")


def read_head(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (out, in), bias (out,)) float32 of a ``reconstruction_mlp`` / ``alignment_mlp``
    pickle; GraceInputError for anything but one linear layer."""
    if not path.is_file():
        raise GraceInputError(f"{path}: missing (an official llm2vec-gen folder holds both heads)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (an unpickling error of any kind: report it in one line)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GraceInputError(f"{path}: not readable as a head (torch.load weights_only: {first})") from None
    config = saved.get("config", {}) if isinstance(saved, dict) else {}
    state = saved.get("state_dict", {}) if isinstance(saved, dict) else {}
    if int(config.get("size", 1)) != 1 or config.get("pooling_mode", "linear") != "linear":
        raise GraceInputError(f"{path}: a head of size {config.get('size')} with pooling_mode "
                              f"'{config.get('pooling_mode')}' is not supported (one linear layer only)")
    if set(state) != {"projection.weight", "projection.bias"}:
        raise GraceInputError(f"{path}: expected projection.weight and projection.bias, found "
                              f"{sorted(state)}")
    weight, bias = state["projection.weight"].float(), state["projection.bias"].float()
    if weight.dim() != 2 or bias.shape != weight.shape[:1]:
        raise GraceInputError(f"{path}: projection shapes {tuple(weight.shape)} and "
                              f"{tuple(bias.shape)} do not make a linear layer")
    return weight, bias


def soft_token_rows(folder: Path, tokenizer, special_tokens: list[str],
                    token_indices: list[int]) -> torch.Tensor:
    """The (K, d) trained rows of ``special_tokens``, in that order, from the adapter's delta."""
    path = folder / ADAPTER / "adapter_model.safetensors"
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise GraceInputError(f"{path}: unreadable ({exc})") from None
    keys = [k for k in tensors if k.endswith(DELTA_SUFFIX)]
    if len(keys) != 1:
        raise GraceInputError(f"{path}: expected one '*.{DELTA_SUFFIX}' tensor, found {len(keys)}")
    delta = tensors[keys[0]].float()  # (K, d), rows in token_indices order
    if delta.dim() != 2 or delta.shape[0] != len(token_indices):
        raise GraceInputError(f"{path}: {keys[0]} has shape {tuple(delta.shape)} for "
                              f"{len(token_indices)} token_indices")
    ids = tokenizer.convert_tokens_to_ids(special_tokens)
    missing = [t for t, i in zip(special_tokens, ids) if i not in token_indices]
    if missing:
        raise GraceInputError(f"{folder}: the tokenizer's id for {missing[0]} is not among the "
                              f"adapter's token_indices {token_indices}")
    return delta[[token_indices.index(i) for i in ids]]  # (K, d)


def read_official(folder, backbone: str | None = None):
    """(spec, tensors) of an official folder, checked, without loading the backbone;
    ``backbone`` replaces the reference the folder holds (a local copy of it)."""
    folder = Path(str(folder))
    run = read_run_config(folder / RUN_CONFIG)
    adapter = _read_json(folder / ADAPTER / "adapter_config.json")
    if adapter.get("peft_type") != "TRAINABLE_TOKENS":
        raise GraceInputError(f"{folder / ADAPTER}: a {adapter.get('peft_type')} adapter is not "
                              "supported (grace keeps the backbone frozen: TRAINABLE_TOKENS only)")
    coupling = folder / ENCODER_DECODER_CONFIG
    coupling = _read_json(coupling) if coupling.is_file() else {}
    if _literal(coupling.get("save_decoder", False)) is True:
        raise GraceInputError(f"{folder}: save_decoder is true (a fine-tuned decoder); grace "
                              "decodes with the frozen backbone only")
    special = run.get("special_tokens")
    if not isinstance(special, list) or not special or not all(isinstance(t, str) for t in special):
        raise GraceInputError(f"{folder / RUN_CONFIG}: special_tokens is not a list of token "
                              f"strings ({special!r})")
    K = len(special)
    check_encoding_mode(str(coupling.get("encoding_mode") or run.get("encoding_mode")
                            or f"last_{K}_tokens"), K, folder)
    token_indices = [int(i) for i in adapter.get("token_indices") or []]
    try:
        tokenizer = load_tokenizer(str(folder))  # for the special tokens' ids only
    except (OSError, ValueError) as exc:
        raise GraceInputError(f"{folder}: no readable tokenizer ({exc})") from None
    soft = soft_token_rows(folder, tokenizer, special, token_indices)  # (K, d)
    d = soft.shape[1]
    tensors = {"soft_tokens": soft}
    for name, file in HEADS.items():
        weight, bias = read_head(folder / file)
        tensors[f"{name}.weight"], tensors[f"{name}.bias"] = weight, bias
    teacher_dim = tensors["alignment_head.weight"].shape[0]
    tensors["alignment_input.mean"] = torch.zeros(d)  # the plain head: no standardisation
    tensors["alignment_input.scale"] = torch.ones(d)
    name = backbone or run.get("model_name_or_path") or adapter.get("base_model_name_or_path")
    if not name:
        raise GraceInputError(f"{folder}: no model_name_or_path in {RUN_CONFIG} nor "
                              "base_model_name_or_path in the adapter: pass backbone=")
    max_length = run.get("max_input_length")
    dtype = str(run.get("torch_dtype")).removeprefix("torch.")
    spec = LLM2VecGenSpec(
        backbone=backbone_reference(str(name)), hidden_size=d, teacher_dim=teacher_dim,
        num_tokens=K,
        max_input_tokens=max_length if isinstance(max_length, int) and max_length > K else 512,
        backbone_dtype=dtype if dtype in DTYPES else "float32", end_text=END_TEXT)
    return spec, tensors


def load_official(folder, backbone: str | None = None, dtype: str = "float32",
                  trust_remote_code: bool = False):
    """(LLM2VecGenModel in eval mode, the backbone's tokenizer) of an official folder. The backbone comes from
    ``backbone`` if given (a local folder, a packaged name, a hub id), else from the hub id the
    folder names (or the HF cache, offline): see the module docstring."""
    spec, tensors = read_official(folder, backbone)
    model, tokenizer = load_backbone(spec.backbone, dtype, trust_remote_code)
    config = Path(str(folder)) / ADAPTER / "config.json"
    trained = _read_json(config) if config.is_file() else {}
    kind = trained.get("model_type")
    if kind and kind != model.config.model_type:
        raise GraceInputError(f"{folder}: trained on a {kind} backbone, '{spec.backbone}' is a "
                              f"{model.config.model_type}")
    llm2vec_gen = LLM2VecGenModel(model, spec)  # checks the hidden size
    llm2vec_gen.load_tensors(tensors, folder)
    return llm2vec_gen.eval(), tokenizer
