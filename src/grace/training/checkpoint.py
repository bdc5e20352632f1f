"""Checkpoints: save and resume a training run.

``OUTPUT_DIR/checkpoint-N/`` holds
- the policy as a Hugging Face folder: ``model.safetensors`` + ``config.json`` for full
  fine-tuning, or ``adapter_model.safetensors`` + ``adapter_config.json`` for LoRA, plus the
  tokenizer -- so ``grace.models.backbones.load_backbone(checkpoint)`` loads it directly;
- what ``accelerate``'s ``save_state`` writes: ``optimizer.bin``, ``scheduler.bin``,
  ``random_states_RANK.pkl`` per process (and the sharded optimizer and model under FSDP, the
  engine's files under DeepSpeed), and ``custom_checkpoint_0.pkl``, the run's position
  (``TrainingProgress``, registered for checkpointing). The model itself is written by us
  (above) and loaded before ``prepare``, so a save-state hook leaves accelerate's copy of the
  plain model out;
- ``trainer_state.json`` (step, data position), ``grace_config.yaml`` (the whole config) and
  ``README.md``, the model card (``grace.training.model_card``), written before the manifest.

Checkpoints written before grace used ``save_state`` (``optimizer.pt``, ``scheduler.pt``,
``rng_state_RANK.pt``) still resume, through the loader they were written for.

A checkpoint is written into ``checkpoint-N.tmp`` and renamed when complete, so a run killed
while saving leaves the previous checkpoint intact. Its last file, ``checkpoint_manifest.json``,
lists every other file with its size and SHA-256. Resuming (``resumable_checkpoint``) verifies
the newest checkpoint against it (checkpoints written before manifests existed: every JSON,
safetensors and torch file is opened) and, if anything is missing, truncated or altered, says
so in one line and falls back to the previous good one; when no checkpoint is good it stops
with a ``GraceInputError`` that names each bad file. Nothing is deleted: a bad checkpoint-N is
replaced when step N is saved again.
The folders are assumed to be on a file system that every process sees (as on one machine).

The run record: ``OUTPUT_DIR/grace_config.yaml`` holds the settings the folder's run started
with and is never rewritten. A rerun in the same folder (a resume) is compared with the settings
the run last trained with (its newest checkpoint's ``grace_config.yaml``, else the record):
settings outside ``MAY_CHANGE_ON_RESUME`` may differ only when the caller overrides
(``check_config_changes``), and every difference, allowed or overridden, is appended to
``OUTPUT_DIR/config_history.jsonl`` with the step it applies from (``record_config``).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from grace.config.overrides import dotted
from grace.errors import GraceInputError
from grace.models.st_files import write_st_files
from grace.training.model_card import write_model_card

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
MANIFEST = "checkpoint_manifest.json"
RECORD = "grace_config.yaml"  # the whole config: in each checkpoint, and the run's own record
HISTORY = "config_history.jsonl"  # the run's changes of settings on reruns, one line each
# settings a rerun may change without overriding: budgets, logging and the folder's spelling
# (with a decaying lr_scheduler a new max_steps also reshapes the rest of the schedule)
MAY_CHANGE_ON_RESUME = ("max_steps", "max_minutes", "save_every", "sample_every",
                        "num_samples_logged", "report_to", "output_dir",
                        "rollout.encode_pooling")  # how the model is read, not how it trains


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint folders of ``output_dir`` (complete or not), highest step first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = re.fullmatch(rf"{PREFIX}(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in ``output_dir``, if any (not verified:
    see ``resumable_checkpoint``)."""
    return next((p for p in checkpoints(output_dir) if (p / STATE_FILE).is_file()), None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """List every file of ``folder`` with its size and SHA-256 in ``MANIFEST`` (written last)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))


def _open_without_manifest(path: Path) -> None:
    """Open a file the way resuming will (checkpoints written before manifests existed)."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                handle.get_slice(name)
    elif path.suffix in (".pt", ".bin", ".pkl"):
        torch.load(path, weights_only=False, map_location="cpu")


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from ("FILE: reason"), or None if it is complete and
    intact."""
    if not (folder / STATE_FILE).is_file():
        return f"{STATE_FILE}: missing (the checkpoint was not completed)"
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError) as exc:
            return f"{MANIFEST}: unreadable ({exc})"
        for name, entry in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name}: missing"
            size = path.stat().st_size
            if size != entry["size"]:
                return f"{name}: {size} bytes, {entry['size']} when written (truncated?)"
            if _sha256(path) != entry["sha256"]:
                return f"{name}: contents changed since it was written (SHA-256 differs)"
        return None
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            _open_without_manifest(path)
        except Exception as exc:  # any reader's error means the same: this file is unusable
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"{path.name}: unreadable ({type(exc).__name__}: {first})"
    return None


def resumable_checkpoint(output_dir: str | Path, say=None) -> Path | None:
    """The newest checkpoint of ``output_dir`` that passes ``checkpoint_problem``; bad newer
    ones are reported through ``say`` (one line each). None if there is no checkpoint at all;
    ``GraceInputError`` naming every bad file if there are checkpoints but none is good."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    bad = []
    for folder in checkpoints(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            for earlier in bad:
                say(f"grace: {earlier}; resuming from {folder.name} instead")
            return folder
        bad.append(f"{folder}/{problem}")
    if bad:
        raise GraceInputError(
            f"no usable checkpoint to resume from: {'; '.join(bad)}. Move the bad checkpoint "
            "folder(s) away to start this run afresh, or pass another --output-dir")
    return None


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingProgress:
    """The run's position (step, data position, seed): the project's own state, saved and
    restored by accelerate's ``save_state``/``load_state`` beside the optimizer's."""

    def __init__(self):
        self.state: dict = {}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


def prepare_checkpointing(accelerator, progress: TrainingProgress) -> None:
    """Register ``progress`` with ``accelerator`` and keep accelerate's copy of a plain model out
    of its state folder (we write the model as a loadable Hugging Face folder ourselves and load
    it before ``prepare``; FSDP's and DeepSpeed's own model files are kept)."""
    accelerator.register_for_checkpointing(progress)
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, folder: models.clear())


def save_checkpoint(accelerator, model, tokenizer, config, state: dict, output_dir,
                    progress: TrainingProgress) -> Path:
    """Write ``checkpoint-{state['step']}`` atomically; every process must call this."""
    final = Path(output_dir) / f"{PREFIX}{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        config.save(tmp / RECORD)
        write_st_files(tmp)  # SentenceTransformer(checkpoint) loads it too (grace.models.st_files)
    progress.state = dict(state)
    accelerator.save_state(str(tmp))  # optimizer, scheduler, RNG of every process, progress
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        write_model_card(tmp, config=config.to_dict(), samples=Path(output_dir) / "samples.jsonl")
        write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return final


def load_model_weights(model, checkpoint: Path) -> None:
    """Load the policy weights of ``checkpoint`` into an (unwrapped) model."""
    adapter = checkpoint / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter))
        return
    weights = load_file(checkpoint / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(
            f"checkpoint {checkpoint} does not match the model: missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    if tied:
        model.tie_weights()


def load_training_state(accelerator, checkpoint: Path, optimizer, scheduler,
                        progress: TrainingProgress) -> dict:
    """Restore optimizer, scheduler, RNG and ``progress`` of this process; return the run's
    position (``progress.state``). Checkpoints written before ``save_state`` was used are read
    with the loader they were written for, their position from ``trainer_state.json``."""
    if (checkpoint / "optimizer.bin").is_file():  # accelerate's save_state, progress included
        accelerator.load_state(str(checkpoint))
        return progress.state
    if (checkpoint / "optimizer.pt").is_file():  # grace before save_state: our own files
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=False))
        rng = checkpoint / f"rng_state_{accelerator.process_index}.pt"
        if rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
    else:
        raise GraceInputError(
            f"{checkpoint}: no optimizer state (neither accelerate's optimizer.bin nor "
            "optimizer.pt); move the folder away to start afresh, or load its weights with "
            "--model instead of resuming")
    progress.load_state_dict(json.loads((checkpoint / STATE_FILE).read_text()))
    return progress.state


# -- the run record ---------------------------------------------------------------------------
def _read_config(path: Path) -> dict | None:
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return dotted(values) if isinstance(values, dict) else None


def recorded_config(output_dir: str | Path) -> tuple[Path, dict] | None:
    """(file, dotted settings) the run in ``output_dir`` last trained with: its newest checkpoint's
    config (what a resume continues from), else the run's record (a run stopped before its first
    checkpoint); None for a folder without a run. Unreadable files are passed over."""
    folder = Path(output_dir)
    for path in [c / RECORD for c in checkpoints(folder)] + [folder / RECORD]:
        values = _read_config(path) if path.is_file() else None
        if values is not None:
            return path, values
    return None


def config_changes(output_dir: str | Path, config) -> dict[str, tuple]:
    """{dotted key: (recorded, new)} for every setting ``config`` changes in the run of
    ``output_dir``; keys that only one side has (another grace version's) are not compared."""
    found = recorded_config(output_dir)
    if found is None:
        return {}
    old, new = found[1], dotted(config.to_dict())
    return {key: (old[key], new[key]) for key in new if key in old and old[key] != new[key]}


def check_config_changes(output_dir: str | Path, config, override: bool = False) -> None:
    """Refuse (``GraceInputError``, listing each key as old -> new) to rerun the run of
    ``output_dir`` with settings outside ``MAY_CHANGE_ON_RESUME`` changed, unless ``override``."""
    changes = {key: change for key, change in config_changes(output_dir, config).items()
               if key not in MAY_CHANGE_ON_RESUME}
    if changes and not override:
        path = recorded_config(output_dir)[0]
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
        raise GraceInputError(
            f"{output_dir} holds a run with other settings ({path}): {listed}. Rerun with its "
            "settings, pass another --output-dir, or pass --override-config to continue it with "
            f"the new ones (recorded in {Path(output_dir) / HISTORY})")


def record_config(output_dir: str | Path, config, step: int) -> None:
    """Write the run's record (``RECORD``) for a new run; on a rerun leave it as it is and append
    the changed settings, if any, to ``HISTORY`` with ``step``, the last step done before them."""
    folder = Path(output_dir)
    changes = config_changes(folder, config)
    if not (folder / RECORD).is_file():
        config.save(folder / RECORD)
    if changes:
        line = {"after_step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "changes": {key: {"old": old, "new": new} for key, (old, new) in changes.items()}}
        with (folder / HISTORY).open("a") as handle:
            handle.write(json.dumps(line) + "\n")
