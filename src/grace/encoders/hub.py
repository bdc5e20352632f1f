"""Pushing a model to the Hugging Face Hub: ``GraceEncoder.push_to_hub`` and ``grace push``.

The one adapter between grace and the hub's upload API: ``huggingface_hub.create_repo``
(``exist_ok``: a repo that exists is updated) and ``huggingface_hub.upload_folder``, one commit.
What is uploaded is a staging folder (links to the model's files, not copies) holding

- every file of the model folder except a training run's state (``TRAINER_STATE``: accelerate's
  ``optimizer.bin``, ``scheduler.bin``, ``random_states_*.pkl``, ``custom_checkpoint_*.pkl``,
  the earlier layout's ``optimizer.pt`` / ``scheduler.pt`` / ``rng_state_*.pt``, FSDP's and
  DeepSpeed's sharded state folders, ``trainer_state.json``, ``checkpoint_manifest.json`` (it
  lists the files left out), the eval results JSON (its scores are in the card; it names local
  paths) and a run's lock or ``.tmp`` leftovers);
- the model card (``grace.training.model_card``): the folder's own card of grace's with the repo
  id in its snippets and the eval results given (``eval_results``, else ``eval_results.json``
  in the folder when it scores that folder) in its model-index, a new card when the folder has
  none, or the user's own README.md as it is.

The model folder itself is never changed (a checkpoint's manifest stays true). Without network, with a bad token or a bad repo id
``GraceInputError`` says so in one line, before anything was uploaded.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grace.errors import GraceInputError
from grace.training.model_card import (
    CARD, EVAL_RESULTS, card_for_repo, found_eval_results, is_ours, load_eval_results,
    write_model_card,
)

TRAINER_STATE = [
    "optimizer*.bin", "optimizer*.pt", "scheduler*.bin", "scheduler*.pt", "scaler*.pt",
    "random_states_*.pkl", "rng_state_*.pt", "custom_checkpoint_*.pkl",
    "pytorch_model_fsdp_*/*", "optimizer_*/*", "global_step*/*", "latest", "zero_to_fp32.py",
    "trainer_state.json", "checkpoint_manifest.json", EVAL_RESULTS, ".grace-train.lock", "*.tmp",
]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class PushReport:
    """What a push did: the repo's URL, the files uploaded and the ones left out."""

    url: str
    uploaded: list[str]
    left_out: list[str]


def split_files(folder: str | Path) -> tuple[list[str], list[str]]:
    """(files to upload, files left out) of ``folder``, as relative POSIX paths."""
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(folder)
    every = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    kept = list(filter_repo_objects(every, ignore_patterns=TRAINER_STATE))
    return kept, sorted(set(every) - set(kept))


def _stage(folder: Path, staging: Path, files: list[str]) -> None:
    """Links (copies where links cannot be made) to ``files`` of ``folder`` under ``staging``."""
    for name in files:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink((folder / name).resolve(), target)
        except OSError:
            shutil.copy2(folder / name, target)


def _card(folder: Path, staging: Path, repo_id: str, results: dict | None, source) -> None:
    """The card ``staging`` uploads (see the module docstring)."""
    from huggingface_hub import ModelCard

    card = staging / CARD
    if card.exists() and not is_ours(card):
        return  # the user's own README.md, uploaded as it is
    card.unlink(missing_ok=True)  # a link to the folder's card: the staged card is a new file
    if not (folder / CARD).is_file():
        write_model_card(staging, source=str(source or folder), eval_results=results)
    else:
        shutil.copyfile(folder / CARD, card)
    card_for_repo(ModelCard.load(card), repo_id, results).save(card)


def push_folder(folder, repo_id: str, *, private: bool | None = None, token: str | None = None,
                eval_results=None, commit_message: str | None = None, source=None,
                say=_say) -> PushReport:
    """Upload the model in ``folder`` (a checkpoint or any saved model folder; ``grace push``
    resolves a training output folder to its newest good checkpoint first, with
    ``grace.encoders.base.training_output_checkpoint``) to the hub repo ``repo_id``.
    ``eval_results``: a ``grace eval --output`` JSON file or dict for the card; ``source``: what
    the model was loaded from, for a card written here. See the module docstring."""
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    if not folder.is_dir():
        raise GraceInputError(f"{folder} is not a folder (pass a checkpoint, a "
                              "training output folder or a saved model folder)")
    try:
        validate_repo_id(repo_id)
    except ValueError as exc:
        raise GraceInputError(f"bad repo id {repo_id!r}: {exc}") from None
    results = (load_eval_results(eval_results) if eval_results is not None
               else found_eval_results(folder, say))
    files, left_out = split_files(folder)
    if not files:
        raise GraceInputError(f"{folder} holds no model files to push")
    with tempfile.TemporaryDirectory(prefix="grace-push-") as tmp:
        staging = Path(tmp) / folder.name
        _stage(folder, staging, files)
        _card(folder, staging, repo_id, results, source)
        uploaded, _ = split_files(staging)
        url = _upload(staging, repo_id, private, token,
                      commit_message or f"grace push {folder.name}")
    return PushReport(url=url, uploaded=uploaded, left_out=left_out)


def _upload(staging: Path, repo_id: str, private, token, message: str) -> str:
    """create_repo + upload_folder (one commit); a hub or network failure as one
    ``GraceInputError`` that says how far it got."""
    import huggingface_hub
    from huggingface_hub import errors

    failures = (OSError, getattr(errors, "HTTPError", OSError), errors.HFValidationError)
    done = "nothing was pushed"
    try:
        url = huggingface_hub.create_repo(repo_id, private=private, token=token, exist_ok=True,
                                          repo_type="model")
        done = "the repo exists, but the commit did not happen: none of the files was pushed"
        huggingface_hub.upload_folder(repo_id=repo_id, folder_path=staging, token=token,
                                      repo_type="model", commit_message=message)
    except failures as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GraceInputError(f"could not push to the hub repo {repo_id} ({type(exc).__name__}: "
                              f"{first}); {done}. Check the network, HF_HUB_OFFLINE and the "
                              "token (HF_TOKEN, or `hf auth login`)") from None
    return str(url)


def push_encoder(encoder, repo_id: str, *, private: bool | None = None, token: str | None = None,
                 eval_results=None, commit_message: str | None = None) -> PushReport:
    """``encoder.save_pretrained`` into a temporary folder, then ``push_folder`` it."""
    with tempfile.TemporaryDirectory(prefix="grace-save-") as tmp:
        folder = Path(tmp) / "model"
        encoder.save_pretrained(folder)
        return push_folder(folder, repo_id, private=private, token=token,
                           eval_results=eval_results, commit_message=commit_message,
                           source=encoder.name)
