"""Media as the published downloads leave them: extracted folders, zip / tar archives, dataset cells.

A reader asks a `MediaRoot` for an image (`image(rel)`) or a video's frames (`frames(rel_dir)`) by the
path a row holds. The root looks in its folders first (what the official download scripts leave after
extracting), then inside its archives (a `.zip` or an uncompressed `.tar`, read member by member
without extracting), and returns a path, a `MediaRef` for an archive member, or None when the file is
nowhere -- the reader then reports it. A gzip-compressed tar has no random access (every read would
decompress from the start), so it is refused with the command that extracts it.

Member names are matched with and without their first folder, so `MMEB/ImageNet-1K/x.jpg` (the
image archive's top folder) answers `ImageNet-1K/x.jpg` and `A-OKVQA/Train/x.jpg` (inside
`images_zip/A-OKVQA.zip`) answers `images/A-OKVQA/Train/x.jpg` (the MMEB-train row path).

Frames: image files of a folder (or archive prefix) in natural order (frame_2 before frame_10), then
`num_frames` sampled uniformly, indices linspace(0, n - 1, num_frames) truncated to int, all of them
when there are fewer -- the MMEB-V2 harness's `process_video_frames` (TIGER-AI-Lab/VLM2Vec
`src/utils/vision_utils/vision_utils.py`). A video with fewer frames keeps the ones it has (the
harness asserts there; see eval/README.md).
"""

from __future__ import annotations

import os
import re
import tarfile
import threading
import zipfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import ImageLike, MediaRef, sample_frames

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
ARCHIVE_SUFFIXES = (".zip", ".tar")
COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.gz-00")


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not PurePosixPath(name).name.startswith("._")


# ---------------------------------------------------------------- references into archives and datasets

_OPEN = threading.local()  # per thread (and per process after a fork): open archive handles


def _handle(path: str, opener):
    handles = getattr(_OPEN, "handles", None)
    if handles is None or getattr(_OPEN, "pid", None) != os.getpid():
        handles = _OPEN.handles = {}
        _OPEN.pid = os.getpid()
    if path not in handles:
        handles[path] = opener(path)
    return handles[path]


class ZipMember(MediaRef):
    """One file inside a zip archive (MMEB-train's images_zip/<Subset>.zip)."""

    def __init__(self, archive: str, name: str):
        self.archive, self.name = archive, name

    def read_bytes(self) -> bytes:
        return _handle(self.archive, zipfile.ZipFile).read(self.name)

    def __str__(self) -> str:
        return f"{self.archive}!{self.name}"

    def __reduce__(self):
        return ZipMember, (self.archive, self.name)


class TarMember(MediaRef):
    """One file inside an uncompressed tar archive, read at its offset."""

    def __init__(self, archive: str, name: str, offset: int, size: int):
        self.archive, self.name, self.offset, self.size = archive, name, offset, size

    def read_bytes(self) -> bytes:
        f = _handle(self.archive, lambda p: open(p, "rb"))  # noqa: SIM115 - kept open for the process
        f.seek(self.offset)
        return f.read(self.size)

    def __str__(self) -> str:
        return f"{self.archive}!{self.name}"

    def __reduce__(self):
        return TarMember, (self.archive, self.name, self.offset, self.size)


class CellImage(MediaRef):
    """An image stored in a dataset's column (a BEIR corpus page), read from the dataset on demand."""

    def __init__(self, dataset: Any, row: int, column: str, label: str):
        self.dataset, self.row, self.column, self.label = dataset, row, column, label

    def read_bytes(self) -> bytes:
        cell = self.dataset[self.row][self.column]
        if isinstance(cell, dict) and cell.get("bytes"):
            return cell["bytes"]
        if isinstance(cell, dict) and cell.get("path") and os.path.isfile(cell["path"]):
            return Path(cell["path"]).read_bytes()
        raise KeyError(f"no image bytes in row {self.row}, column {self.column!r}")

    def __str__(self) -> str:
        return self.label


# ---------------------------------------------------------------- archives

class Archive:
    """The members of a zip or uncompressed tar, by name and by name without its first folder."""

    def __init__(self, path: Path):
        self.path = path
        if str(path).endswith(COMPRESSED_TAR):
            raise EmbedrlError(f"{path} is a compressed tar, which cannot be read in place; extract it "
                               f"(tar -xzf {path.name} in its folder; see `embedrl data check`)")
        self.members: dict[str, MediaRef] = {}
        try:
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as z:
                    for info in z.infolist():
                        if not info.is_dir():
                            self._add(info.filename, ZipMember(str(path), info.filename))
            else:
                with tarfile.open(path, "r:") as t:
                    for info in t:
                        if info.isfile():
                            self._add(info.name, TarMember(str(path), info.name, info.offset_data, info.size))
        except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
            raise EmbedrlError(f"cannot read the archive {path}: {e}") from e

    def _add(self, name: str, ref: MediaRef) -> None:
        name = name.lstrip("./")
        self.members.setdefault(name, ref)
        parts = name.split("/", 1)
        if len(parts) == 2:
            self.members.setdefault(parts[1], ref)

    @cached_property
    def folders(self) -> dict[str, list[str]]:
        """folder name -> its image members, for frame folders inside an archive."""
        out: dict[str, list[str]] = {}
        for name in self.members:
            if is_image_name(name):
                out.setdefault(str(PurePosixPath(name).parent), []).append(name)
        return out


def _variants(rel: str) -> list[str]:
    """`rel` and its shorter suffixes (down to folder/file): archives may leave out leading folders."""
    parts = str(rel).replace("\\", "/").lstrip("./").split("/")
    return ["/".join(parts[k:]) for k in range(max(1, len(parts) - 1))]


class MediaRoot:
    """Resolves row paths under folders (first) and archives (then); remembers nothing missing itself."""

    def __init__(self, folders: Sequence[Path], archives: Sequence[Path] = ()):
        self.folders = [Path(f) for f in folders]
        self.archive_paths = [Path(a) for a in archives]

    @cached_property
    def archives(self) -> list[Archive]:
        return [Archive(p) for p in self.archive_paths if p.is_file()]

    def _keys(self, archive: Archive, rel: Any) -> list[str]:
        """Member names `rel` may have in `archive`: under each media folder's place in the archive (the
        archive extracts into its own folder, `video_ret.zip` -> `video_ret/`, or beside itself), then
        `rel` and its shorter suffixes."""
        rel = str(rel).strip("/")
        keys = []
        for folder in self.folders:
            for base in (archive.path.parent / archive.path.name.split(".")[0], archive.path.parent):
                try:
                    prefix = folder.relative_to(base).as_posix()
                except ValueError:
                    continue
                keys.append(rel if prefix == "." else f"{prefix}/{rel}")
        return keys + _variants(rel)

    def image(self, rel: Any) -> ImageLike | None:
        """The image at `rel` (a path, or an archive member), or None when it is nowhere."""
        for folder in self.folders:
            path = folder / str(rel)
            if path.is_file():
                return str(path)
        for archive in self.archives:
            for name in self._keys(archive, rel):
                if name in archive.members:
                    return archive.members[name]
        return None

    def frames(self, rel: Any, num_frames: int) -> list[ImageLike] | None:
        """The sampled frames of the frame folder `rel`, or None when it is absent or holds no image."""
        for folder in self.folders:
            path = folder / str(rel)
            if path.is_dir():
                names = sorted((n for n in os.listdir(path) if is_image_name(n)), key=natural_key)
                if names:
                    return sample_frames([str(path / n) for n in names], num_frames)
        for archive in self.archives:
            for name in self._keys(archive, rel):
                members = archive.folders.get(name)
                if members:
                    members = sorted(members, key=lambda m: natural_key(PurePosixPath(m).name))
                    return sample_frames([archive.members[m] for m in members], num_frames)
        return None

    def where(self, rel: Any) -> str:
        """Where `rel` was looked for, for a message."""
        places = [str(f / str(rel)) for f in self.folders] + [f"{a}!{rel}" for a in self.archive_paths]
        return " or ".join(places)

    def subfolders(self, rel: Any) -> list[tuple[str, list[ImageLike]]] | None:
        """The frame folders directly inside `rel` (moment-retrieval clips), by name, frames unsampled."""
        for folder in self.folders:
            path = folder / str(rel)
            if path.is_dir():
                out = []
                for name in sorted(os.listdir(path), key=natural_key):
                    sub = path / name
                    if sub.is_dir():
                        frames = sorted((n for n in os.listdir(sub) if is_image_name(n)), key=natural_key)
                        out.append((name, [str(sub / n) for n in frames]))
                return out
        for archive in self.archives:
            for prefix in self._keys(archive, rel):
                subs = {k: v for k, v in archive.folders.items() if str(PurePosixPath(k).parent) == prefix}
                if subs:
                    return [(PurePosixPath(k).name,
                             [archive.members[m] for m in sorted(v, key=lambda m: natural_key(PurePosixPath(m).name))])
                            for k, v in sorted(subs.items(), key=lambda kv: natural_key(PurePosixPath(kv[0]).name))]
        return None


def media_root(root: Path, folders: str | Sequence[str] | None, archives: Sequence[str] = ()) -> MediaRoot:
    """A MediaRoot for registry paths (relative to the data root `root`)."""
    if folders is None:
        folders = ["."]
    elif isinstance(folders, str):
        folders = [folders]
    return MediaRoot([root / f for f in folders], [root / a for a in archives
                                                   if str(a).endswith(ARCHIVE_SUFFIXES)])
