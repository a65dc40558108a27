"""One keyed table in an sqlite file in WAL mode: what the T-CoT cache and the reranker's score
cache share (`embedrl.core.tcot_cache.TCoTCache`, `embedrl.rerank.cache.ScoreCache`).

WAL mode lets many readers and writers from several processes (e.g. `accelerate launch` ranks)
use one file at once. Both caches live in the same file by default, each in its own table:
`$EMBEDRL_TCOT_CACHE`, else `$XDG_CACHE_HOME/embedrl/tcot_cache.sqlite` (`~/.cache/embedrl/...`).
A subclass names its table and schema; the primary key is some prefix columns (who computed the
value, with which settings) plus one key column (what it is about).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import database_write_failed, ensure_dir

_CHUNK = 500  # keys per SELECT ... IN (...), under sqlite's parameter limit


def default_cache_path() -> Path:
    env = os.environ.get("EMBEDRL_TCOT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embedrl" / "tcot_cache.sqlite"


class KeyedCache:
    """Base of the sqlite caches: the connection, its table, chunked look-ups and replacing writes;
    counts hits and misses since it was opened."""

    table = ""
    schema = ""
    what = "cache"

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_cache_path()
        ensure_dir(self.path.parent)
        self.hits = 0
        self.misses = 0
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(self.schema)
        except sqlite3.DatabaseError as e:
            raise EmbedrlError(f"cannot open the {self.what} {self.path}: {e}") from e

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self._conn.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def select(self, prefix: dict[str, str], key_column: str, keys: Sequence[str],
               columns: Sequence[str]) -> dict[str, tuple]:
        """{key: (columns...)} for the keys found among the rows whose prefix columns equal `prefix`."""
        found: dict[str, tuple] = {}
        where = " AND ".join(f"{name}=?" for name in prefix)
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start:start + _CHUNK]
            rows = self._conn.execute(
                f"SELECT {key_column}, {', '.join(columns)} FROM {self.table} WHERE {where} AND {key_column} IN "
                f"({','.join('?' * len(chunk))})", (*prefix.values(), *chunk)).fetchall()
            found.update((row[0], tuple(row[1:])) for row in rows)
        return found

    def count(self, found: int, asked: int) -> None:
        self.hits += found
        self.misses += asked - found

    def replace(self, rows: Iterable[Sequence[Any]]) -> int:
        """Insert rows (every column, in table order), replacing those with the same key; one transaction."""
        rows = [tuple(r) for r in rows]
        if rows:
            try:
                with self._conn:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES "
                                           f"({','.join('?' * len(rows[0]))})", rows)
            except sqlite3.OperationalError as e:  # a full disk, a read-only folder
                raise database_write_failed(self.path, e) from e
        return len(rows)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}
