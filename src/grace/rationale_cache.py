"""A persistent cache of generated rationales, so that re-encoding a corpus generates nothing twice.

Entries are keyed by (model fingerprint, generation settings, text) and hold the rationale's
token ids, so a cache hit rebuilds exactly the sequence that was generated and only the
(cheap) scoring pass runs. Stored in one SQLite file (standard library, safe for several
processes; every write is committed at once, so a killed run keeps what it generated).

The model fingerprint hashes the config and a strided sample of every parameter tensor: it
changes when the weights change (training), without reading every weight of a large model.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import torch

SAMPLES_PER_TENSOR = 4096


def model_fingerprint(model) -> str:
    """A short hash of the model's config and (a strided sample of) its parameters."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
            sample = flat[::step].float().cpu().numpy().tobytes()
            digest.update(name.encode())
            digest.update(str(tuple(param.shape)).encode())
            digest.update(sample)
    return digest.hexdigest()[:24]


def settings_key(**settings) -> str:
    """A stable string for the generation settings that change a rationale."""
    return json.dumps(settings, sort_keys=True)


class RationaleCache:
    """``get``/``put`` rationale token ids by (fingerprint, settings, text)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rationales ("
            " key TEXT PRIMARY KEY, fingerprint TEXT, settings TEXT, text TEXT, ids TEXT)"
        )
        self._db.commit()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(fingerprint: str, settings: str, text: str, sample: int) -> str:
        raw = "\x1f".join([fingerprint, settings, str(sample), text])
        return hashlib.sha256(raw.encode()).hexdigest()

    def get_many(self, fingerprint: str, settings: str, texts: list[str], sample: int = 0) -> list[list[int] | None]:
        found = []
        for text in texts:
            row = self._db.execute(
                "SELECT ids FROM rationales WHERE key = ?",
                (self._key(fingerprint, settings, text, sample),),
            ).fetchone()
            found.append(json.loads(row[0]) if row else None)
        hits = sum(f is not None for f in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def put_many(self, fingerprint: str, settings: str, texts: list[str], ids: list[list[int]], sample: int = 0) -> None:
        rows = [
            (self._key(fingerprint, settings, t, sample), fingerprint, settings, t, json.dumps(i))
            for t, i in zip(texts, ids)
        ]
        self._db.executemany("INSERT OR REPLACE INTO rationales VALUES (?, ?, ?, ?, ?)", rows)
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM rationales").fetchone()[0]

    def close(self) -> None:
        self._db.close()
