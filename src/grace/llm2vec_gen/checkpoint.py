"""LLM2Vec-Gen checkpoints: the trainable parts and a reference to the backbone, never a copy.

A folder holds
- ``llm2vec_gen.safetensors``: the K soft-token rows (``soft_tokens``, (K, d)), the
  reconstruction head (``reconstruction_head.weight/bias``, d -> d) and the alignment head
  (``alignment_head.weight/bias``, d -> teacher dim);
- ``llm2vec_gen.json``: ``LLM2VecGenSpec``, what is needed to rebuild the model around the
  backbone: the backbone reference (a packaged name, an absolute folder or a hub id), its
  fingerprint, K, the dimensions, the teacher and the instructions.

A training run's checkpoint-N folder holds these next to the shared training state (optimizer,
scheduler, RNG, trainer_state.json, grace_config.yaml) and the backbone's tokenizer files (the
shared checkpoint code writes them; loading reads the backbone's own). ``resolve_folder``
accepts such a folder, or a training output folder (its latest checkpoint is used).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from grace.errors import GraceInputError
from grace.models.backbones import PACKAGED

WEIGHTS = "llm2vec_gen.safetensors"
SPEC_FILE = "llm2vec_gen.json"
FORMAT = "llm2vec-gen"


@dataclass
class LLM2VecGenSpec:
    """Everything, besides the weights, that rebuilds a trained model around its backbone."""

    backbone: str  # the backbone reference: packaged name, absolute folder or hub id
    hidden_size: int  # d, the backbone's hidden size
    teacher_dim: int  # the teacher's embedding size (the alignment head's output)
    num_tokens: int = 10  # K soft tokens appended to every input
    teacher: str = ""  # the teacher the alignment head was trained against (for the record)
    query_instruction: str = "Generate text that is semantically similar to this text:"
    document_instruction: str = "Summarize the following passage:"
    max_input_tokens: int = 512  # text + soft tokens; longer texts are cut (with a warning)
    backbone_dtype: str = "float32"  # dtype the backbone was loaded in when trained
    backbone_fingerprint: str = ""  # grace.models.fingerprint.model_fingerprint of that backbone
    end_text: str = ""  # a decoding also ends where this literal text starts ("" none; grace.llm2vec_gen.official)
    format: str = FORMAT  # marks the folder as an LLM2Vec-Gen checkpoint

    def save(self, folder: Path) -> None:
        (Path(folder) / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "LLM2VecGenSpec":
        path = Path(folder) / SPEC_FILE
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise GraceInputError(f"{path}: not a readable LLM2Vec-Gen spec ({exc})") from None
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise GraceInputError(f"{path}: not an LLM2Vec-Gen spec (no \"format\": \"{FORMAT}\")")
        unknown = sorted(set(values) - known)
        if unknown:
            raise GraceInputError(f"{path}: unknown key '{unknown[0]}'")
        return cls(**values)


def backbone_reference(name: str) -> str:
    """How a checkpoint names its backbone: packaged names and hub ids as given, local folders
    as absolute paths (so the checkpoint loads from any working directory)."""
    if name in PACKAGED or not Path(name).exists():
        return name
    return str(Path(name).resolve())


def resolve_folder(name_or_path) -> Path | None:
    """The LLM2Vec-Gen checkpoint folder ``name_or_path`` names: itself if it holds the spec, or
    the latest checkpoint of a training output folder; None if it is neither."""
    from grace.training.checkpoint import latest_checkpoint

    folder = Path(str(name_or_path))
    if not folder.is_dir():
        return None
    if (folder / SPEC_FILE).is_file():
        return folder
    latest = latest_checkpoint(folder)
    if latest is not None and (latest / SPEC_FILE).is_file():
        return latest
    return None


def save_trainable(folder: Path, tensors: dict[str, torch.Tensor], spec: LLM2VecGenSpec) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, folder / WEIGHTS,
              metadata={"format": FORMAT})
    spec.save(folder)


def load_trainable(folder: Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise GraceInputError(f"{folder}: no {WEIGHTS} (not an LLM2Vec-Gen checkpoint)")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise GraceInputError(f"{path}: unreadable safetensors file, truncated or corrupt ({exc})") from None
