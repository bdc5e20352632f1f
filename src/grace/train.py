"""``train(config)``: the entry point of every training run, and the one table from a method's
name to its trainer.

It sits above the methods (grace.grpo, grace.contrastive, grace.llm2vec_gen), as the CLI and
the demo do, so the shared machinery below them (grace.training: the loop every method runs on)
imports no method. ``METHODS`` (grace.config.methods) lists the names; ``train`` checks the run
already in the output folder, if any, then builds the method's trainer and runs it.
"""

from __future__ import annotations

import gc
from pathlib import Path

from grace.config.schema import TrainConfig
from grace.contrastive.trainers import InfoNCETrainer, SimCSETrainer
from grace.grpo.trainer import GraceTrainer
from grace.llm2vec_gen.trainer import LLM2VecGenTrainer
from grace.training.checkpoint import check_config_changes
from grace.training.loop import Trainer

TRAINERS: dict[str, type[Trainer]] = {
    "grace": GraceTrainer,
    "infonce": InfoNCETrainer,
    "simcse": SimCSETrainer,
    "llm2vec-gen": LLM2VecGenTrainer,
}


def trainer_class(method: str) -> type[Trainer]:
    """The trainer of a training method (grace.config.methods.METHODS)."""
    return TRAINERS[method]


def train(config: TrainConfig, override_config: bool = False) -> Path | None:
    """Train with ``config``; resume if ``config.output_dir`` holds a checkpoint.

    A folder that holds a run with other settings is refused before anything loads
    (``GraceInputError`` listing each changed key, old -> new), except for the settings a resume
    may change (grace.training.checkpoint.MAY_CHANGE_ON_RESUME: budgets and logging);
    ``override_config=True`` continues the run with the new settings. Either way the run's
    recorded config stays as it was and the changes are appended to its config_history.jsonl.

    The accelerator's references to the model and optimizer are released on return, so a
    process that trains several models in turn does not keep them all in memory.
    """
    check_config_changes(config.output_dir, config, override=override_config)
    trainer = trainer_class(config.method)(config)
    try:
        return trainer.train()
    finally:
        trainer.acc.free_memory()
        gc.collect()
