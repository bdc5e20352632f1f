"""grace's one generation cache: generated rationales (and LLM2Vec-Gen's training responses,
grace.llm2vec_gen.responses), so that nothing is generated twice.

Entries are keyed by (model fingerprint, generation settings, text) and hold the rationale's
token ids and, when the generation pass computed it, the embedding (float32) of text +
rationale (grace.encoders.encode stores the raw pooled vector): a hit with an embedding costs no
model call at all, and re-encoding gives the very same vector; a hit without one (older
entries, or an entry found under ``get_entries``' ``fallback`` settings) rebuilds the sequence
and runs the scoring pass.
Stored in one SQLite file (standard library, safe for several processes; every write is
committed at once, so a killed run keeps what it generated). Each thread that uses the cache gets
its own connection (SQLite connections belong to the thread that opened them), so one cache can
be shared by a server's request threads and its model thread. A file that is not a SQLite
database (or not one of ours) is refused with a ``GraceInputError`` naming it; nothing in it is
changed.

The model part of the key is grace.models.fingerprint.model_fingerprint (it changes when the
weights change).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from grace.errors import GraceInputError


def settings_key(**settings) -> str:
    """A stable string for the generation settings that change a rationale."""
    return json.dumps(settings, sort_keys=True)


class RationaleCache:
    """``get``/``put`` rationale token ids by (fingerprint, settings, text)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # one connection per thread
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            db = self._db
            db.execute(
                "CREATE TABLE IF NOT EXISTS rationales ("
                " key TEXT PRIMARY KEY, fingerprint TEXT, settings TEXT, text TEXT, ids TEXT,"
                " embedding BLOB)"
            )
            columns = [row[1] for row in db.execute("PRAGMA table_info(rationales)")]
            if "embedding" not in columns:  # a cache file written before embeddings were stored
                db.execute("ALTER TABLE rationales ADD COLUMN embedding BLOB")
            missing = {"key", "ids"} - set(columns)
            if missing:
                self.close()
                raise GraceInputError(
                    f"rationale cache {self.path} has a 'rationales' table without the column(s) "
                    f"{', '.join(sorted(missing))}: not a grace cache; move it away or pass "
                    "cache=False (--no-cache)")
            db.commit()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self._unreadable(exc) from None
        self.hits = 0
        self.misses = 0

    def _unreadable(self, exc: Exception) -> GraceInputError:
        return GraceInputError(
            f"rationale cache {self.path} is not a readable SQLite database ({exc}); delete or "
            "move the file (it only holds cached rationales) or pass cache=False (--no-cache)")

    @contextmanager
    def _guard(self):
        """A database error met while reading or writing names the file (no raw sqlite3 error)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            # used by this thread only; check_same_thread=False lets close() run from any thread
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @staticmethod
    def _key(fingerprint: str, settings: str, text: str, sample: int) -> str:
        raw = "\x1f".join([fingerprint, settings, str(sample), text])
        return hashlib.sha256(raw.encode()).hexdigest()

    def get_entries(self, fingerprint: str, settings: str, texts: list[str], sample: int = 0,
                    fallback: str | tuple[str, ...] | None = None):
        """Per text: ``(token ids, embedding or None)``, or None when not cached. ``fallback``:
        the settings (one, or several tried in order) under which entries of the same rationales
        were stored in another form (an older cache file, or another pooling of the embedding);
        where ``settings`` has no entry, the ids of the first fallback that has one are returned
        with embedding None (the caller recomputes the embedding). Each text counts once, as a
        hit or a miss."""
        fallbacks = (fallback,) if isinstance(fallback, str) else tuple(fallback or ())
        found = []
        for text in texts:
            keys = [self._key(fingerprint, key, text, sample) for key in (settings, *fallbacks)]
            with self._guard():  # one query for the key and its fallbacks; the first in order wins
                rows = dict((r[0], r[1:]) for r in self._db.execute(
                    f"SELECT key, ids, embedding FROM rationales WHERE key IN ({', '.join('?' * len(keys))})",
                    keys))
            row = next((rows[k] for k in keys if k in rows), None)
            if row is not None and keys[0] not in rows:
                row = (row[0], None)  # a fallback's rationale: its embedding is not this key's
            if row is None:
                found.append(None)
                continue
            emb = np.frombuffer(row[1], dtype=np.float32).copy() if row[1] is not None else None
            found.append((json.loads(row[0]), emb))
        hits = sum(f is not None for f in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def get_many(self, fingerprint: str, settings: str, texts: list[str], sample: int = 0) -> list[list[int] | None]:
        """Per text: the rationale token ids, or None when not cached."""
        return [e[0] if e is not None else None for e in self.get_entries(fingerprint, settings, texts, sample)]

    def put_many(self, fingerprint: str, settings: str, texts: list[str], ids: list[list[int]],
                 sample: int = 0, embeddings=None) -> None:
        """Store rationale ids (and, optionally, the embeddings: one row per text)."""
        blobs = [None] * len(texts)
        if embeddings is not None:
            blobs = [np.asarray(e, dtype=np.float32).tobytes() for e in embeddings]
        rows = [
            (self._key(fingerprint, settings, t, sample), fingerprint, settings, t, json.dumps(i), b)
            for t, i, b in zip(texts, ids, blobs)
        ]
        with self._guard():
            self._db.executemany("INSERT OR REPLACE INTO rationales VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.commit()

    def entries_of(self, fingerprint: str, settings: str) -> dict[str, list[int]]:
        """text -> token ids of every entry stored under (fingerprint, settings), in one query
        (for kinds stored with one sample per text, such as LLM2Vec-Gen's responses)."""
        with self._guard():
            rows = self._db.execute("SELECT text, ids FROM rationales WHERE fingerprint = ? AND "
                                    "settings = ?", (fingerprint, settings)).fetchall()
        return {text: json.loads(ids) for text, ids in rows}

    def __len__(self) -> int:
        with self._guard():
            return self._db.execute("SELECT COUNT(*) FROM rationales").fetchone()[0]

    def close(self) -> None:
        """Close every thread's connection (a later use opens a new one)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()
        self._local = threading.local()
