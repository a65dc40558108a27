"""The metadata store of an index: FAISS row id -> item (JSON), its T-CoT text and user fields.

An sqlite file beside the FAISS index. A build writes it to a temporary file and renames
it into place; `add` appends rows in one transaction. Rows at or beyond the manifest's
`count` belong to an unfinished `add` and are never read (the manifest is the commit point).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import database_write_failed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    row_id INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL,
    item TEXT NOT NULL,
    tcot TEXT,
    fields TEXT NOT NULL
)
"""


class ItemStore:
    """Row id -> {"id", "item", "tcot", "fields"}."""

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise EmbedrlError(f"metadata store missing: {self.path}")
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self._conn = sqlite3.connect(uri, uri=True, timeout=60.0, check_same_thread=False)
            if not readonly:
                self._conn.execute(_SCHEMA)
            self._conn.execute("SELECT COUNT(*) FROM rows").fetchone()
        except sqlite3.DatabaseError as e:
            if "full" in str(e):
                raise database_write_failed(self.path, e) from e
            raise EmbedrlError(f"metadata store {self.path} is unreadable ({e}); rebuild the index") from e

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ItemStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    def put_many(self, start: int, items: Sequence[dict[str, Any]], tcots: Sequence[str | None] | None = None,
                 fields: Sequence[dict[str, Any]] | None = None) -> None:
        """Write rows start, start+1, ... in one transaction (replacing any left by an unfinished add)."""
        tcots = tcots if tcots is not None else [None] * len(items)
        fields = fields if fields is not None else [{}] * len(items)
        rows = [(start + i, str(item.get("id", start + i)), json.dumps(item, ensure_ascii=False), tcot,
                 json.dumps(f, ensure_ascii=False)) for i, (item, tcot, f) in enumerate(zip(items, tcots, fields))]
        try:
            with self._conn:
                self._conn.executemany("INSERT OR REPLACE INTO rows VALUES (?,?,?,?,?)", rows)
        except sqlite3.OperationalError as e:  # a full disk, a read-only folder
            raise database_write_failed(self.path, e) from e

    def get_many(self, row_ids: Sequence[int]) -> list[dict[str, Any] | None]:
        ids = [int(r) for r in row_ids]
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row_id, item_id, item, tcot, fields in self._conn.execute(
                    f"SELECT * FROM rows WHERE row_id IN ({','.join('?' * len(chunk))})", chunk):
                found[row_id] = {"row": row_id, "id": item_id, "item": json.loads(item), "tcot": tcot,
                                 "fields": json.loads(fields)}
        return [found.get(r) for r in ids]

    def existing_ids(self, ids: Sequence[str], below: int) -> list[str]:
        """Those of `ids` that rows before `below` (the index's committed rows) already hold, in `ids` order."""
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            found.update(r[0] for r in self._conn.execute(
                f"SELECT item_id FROM rows WHERE row_id < ? AND item_id IN ({','.join('?' * len(chunk))})",
                [below, *chunk]))
        return [i for i in unique if i in found]

    def find(self, item_id: str, below: int) -> dict[str, Any] | None:
        """The first row holding item `item_id` among rows below `below` (the committed ones), or None."""
        found = self._conn.execute("SELECT row_id FROM rows WHERE item_id = ? AND row_id < ? ORDER BY row_id LIMIT 1",
                                   (str(item_id), int(below))).fetchone()
        return None if found is None else self.get_many([found[0]])[0]

    def ids(self, limit: int | None = None) -> list[str]:
        """Item ids in row order (up to `limit` rows)."""
        sql = "SELECT item_id FROM rows ORDER BY row_id" + (" LIMIT ?" if limit is not None else "")
        return [r[0] for r in self._conn.execute(sql, (limit,) if limit is not None else ())]
