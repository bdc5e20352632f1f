"""Experiment trackers through accelerate (``--report-to tensorboard``, or any tracker accelerate
knows: wandb, mlflow, ...), beside metrics.jsonl, which is always written.

TensorBoard events go to ``OUTPUT_DIR/tensorboard/`` (``tensorboard --logdir OUTPUT_DIR``); the
run's config is stored as its hyperparameters (flattened to dotted keys). TensorBoard is an
optional extra: ``pip install 'grace[tensorboard]'``.
"""

from __future__ import annotations

import importlib.util

from grace.config.overrides import dotted
from grace.errors import GraceInputError

KNOWN = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab",
         "trackio")
MODULES = {"tensorboard": "tensorboard", "comet_ml": "comet_ml", "clearml": "clearml"}
PROJECT = "tensorboard"  # accelerate's run name: the folder under OUTPUT_DIR


def parse_report_to(value: str) -> list[str]:
    """``"none"`` -> []; ``"tensorboard,wandb"`` -> both, each checked to be known and installed."""
    names = [n.strip() for n in value.split(",") if n.strip() and n.strip() != "none"]
    for name in names:
        if name not in KNOWN:
            raise GraceInputError(f"report_to: unknown tracker '{name}' (choose none or "
                                  f"{', '.join(KNOWN)})")
        module = MODULES.get(name, name)
        if importlib.util.find_spec(module) is None:
            extra = " (pip install 'grace[tensorboard]')" if name == "tensorboard" else ""
            raise GraceInputError(f"report_to {name}: the package '{module}' is not installed{extra}")
    return names


def flat_config(values: dict) -> dict:
    """A nested config as dotted keys with values trackers accept (bool, int, float, str; any
    other value as its text)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in dotted(values).items()}


def scalars(metrics: dict) -> dict:
    """The numeric entries of a metrics row (not the step itself)."""
    return {k: v for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
