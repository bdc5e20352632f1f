"""The sentence-transformers view of a grace folder: ``modules.json`` and
``config_sentence_transformers.json``, so that sentence-transformers loads a grace checkpoint
through one module of ours, ``grace.encoders.st_module.GraceModule``:

    SentenceTransformer("runs/demo/checkpoint-12", trust_remote_code=True).encode(texts)

Plain JSON: the module class is named by its import path, never imported here (this is the
models layer, so the training checkpoint code and the encoders can both write the files). The
module reads nothing from these files: it loads the folder with ``GraceEncoder.from_pretrained``,
so the vectors are grace's own. grace's loaders ignore the files: ``is_grace_view`` tells a
folder that grace wrote from a sentence-transformers model.
"""

from __future__ import annotations

import json
from pathlib import Path

MODULES_FILE = "modules.json"
CONFIG_FILE = "config_sentence_transformers.json"
FILES = (MODULES_FILE, CONFIG_FILE)
MODULE_CLASS = "grace.encoders.st_module.GraceModule"  # imported by sentence-transformers


def write_st_files(folder) -> None:
    """Write the two files into ``folder`` (an existing grace model or checkpoint folder)."""
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_CLASS}]
    # no prompts here: the module fills "query" and "document" from the encoder's own at load
    config = {"model_type": "SentenceTransformer", "prompts": {}, "default_prompt_name": None,
              "similarity_fn_name": "cosine"}
    (folder / MODULES_FILE).write_text(json.dumps(modules, indent=2) + "\n")
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def is_grace_view(folder) -> bool:
    """Whether ``folder``'s ``modules.json`` names grace modules only (written by
    ``write_st_files``, or by sentence-transformers saving a model built on them)."""
    path = Path(folder) / MODULES_FILE
    try:
        modules = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(modules, list) and bool(modules)
            and all(isinstance(m, dict) and str(m.get("type", "")).startswith("grace.")
                    for m in modules))
