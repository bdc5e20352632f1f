"""Checkpoints: save and resume a training run.

``OUTPUT_DIR/checkpoint-N/`` holds
- the policy as a Hugging Face folder: ``model.safetensors`` + ``config.json`` for full
  fine-tuning, or ``adapter_model.safetensors`` + ``adapter_config.json`` for LoRA, plus the
  tokenizer -- so ``grace.backbones.load_backbone(checkpoint)`` loads it directly;
- ``optimizer.pt`` and ``scheduler.pt`` (state dicts), ``rng_state_RANK.pt`` per process;
- ``trainer_state.json`` (step, data position) and ``grace_config.yaml`` (the whole config).

A checkpoint is written into ``checkpoint-N.tmp`` and renamed when complete, so a run killed
while saving leaves the previous checkpoint intact; resuming takes the highest complete one.
The folders are assumed to be on a file system that every process sees (as on one machine).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in ``output_dir``, if any."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = re.fullmatch(rf"{PREFIX}(\d+)", path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, config, state: dict, output_dir) -> Path:
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
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        config.save(tmp / "grace_config.yaml")
    torch.save(_rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
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


def load_training_state(accelerator, checkpoint: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG of this process; return the trainer state."""
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=False))
    rng = checkpoint / f"rng_state_{accelerator.process_index}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((checkpoint / STATE_FILE).read_text())
