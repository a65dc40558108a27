"""Small file helpers shared by every part: atomic writes, JSONL with line-numbered errors.

Everything embedrl writes goes through `atomic_write` (temp file in the same folder, fsync,
rename), so an interrupted job never leaves a half-written file that looks complete. Written
files get the permissions the umask gives any new file (a temp file alone would be 0600), and
a failed write (a full disk, a read-only folder) is an `EmbedrlError` naming the file. Readers
decode UTF-8 and name the file (and line) holding bytes that are not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError


def umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it,
    which would race with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def write_failed(path: str | os.PathLike | None, error: OSError) -> EmbedrlError:
    """A write that the system refused, as a one-line error naming the file and what to do."""
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EFBIG: "the file system or a limit refuses a file this large; write elsewhere",
            errno.EROFS: "the file system is read-only; write elsewhere",
            errno.EACCES: "no permission; write elsewhere"}.get(error.errno, "check the folder and retry")
    return EmbedrlError(f"cannot write {path or 'a file'}: {error.strerror or error} ({hint})")


def database_write_failed(path: str | os.PathLike, error: Exception) -> EmbedrlError:
    """An sqlite write that failed ("database or disk is full", a read-only folder), as one line naming the file."""
    return EmbedrlError(f"cannot write {path}: {error} (free some space, or write elsewhere)")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file beside `path`; on clean exit it replaces `path` in one rename."""
    path = Path(path)
    ensure_dir(path.parent)
    if "b" in mode:
        encoding = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_failed(path, e) from e
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise write_failed(path, e) from e
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


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A whole text file, decoded as UTF-8; a missing file or other bytes name the file."""
    path = Path(path)
    if not path.is_file():
        raise EmbedrlError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise EmbedrlError(f"{path}:{line}: {_not_utf8(e)}") from None


def _not_utf8(e: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{e.object[e.start]:02x}); save the file as UTF-8"


def read_json(path: str | os.PathLike) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
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
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                problem = _not_utf8(e)
            else:
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
