"""Small file helpers shared by every part: atomic writes, JSONL with line-numbered errors.

Everything embedrl writes goes through `atomic_write` (temp file in the same folder, fsync,
rename), so an interrupted job never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file beside `path`; on clean exit it replaces `path` in one rename."""
    path = Path(path)
    ensure_dir(path.parent)
    if "b" in mode:
        encoding = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create a directory (and parents), turning OS errors into a one-line user error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EmbedrlError(f"cannot create directory {path}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK):
        raise EmbedrlError(f"directory {path} is not writable; choose another output location")
    return path


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EmbedrlError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EmbedrlError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows atomically, one JSON object a line (keys in insertion order, so output is stable)."""
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | os.PathLike, errors: list[str] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, row) for each non-blank line.

    A malformed line raises naming file and line; when an `errors` list is given instead,
    the message is appended there and reading goes on.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbedrlError(f"file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem = None if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"
            except json.JSONDecodeError as e:
                problem = f"malformed JSON ({e.msg})"
            if problem:
                if errors is None:
                    raise EmbedrlError(f"{path}:{lineno}: {problem}")
                errors.append(f"{path}:{lineno}: {problem}")
                continue
            yield lineno, row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [row for _, row in iter_jsonl(path)]
