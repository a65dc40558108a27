"""Checking an uploaded query image before anything decodes it.

A demo gets shared, so an upload is untrusted: the checks (file size, then format and pixel
count from the header, then the full decode under PIL's bomb limit) are
`embedrl.core.media.open_untrusted`'s, shared with the HTTP server. Every refusal is an
`UploadRejected` with a message fit for the user.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from embedrl.core.media import (
    DEFAULT_MAX_IMAGE_MB,
    DEFAULT_MAX_PIXELS,
    ImageLimits,
    open_untrusted,
    set_pil_limit,
)
from embedrl.core.media import ImageRejected as UploadRejected

DEFAULT_MAX_UPLOAD_MB = DEFAULT_MAX_IMAGE_MB
__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_MB", "UploadLimits", "UploadRejected", "check_image_upload",
           "set_pil_limit"]


@dataclass(frozen=True)
class UploadLimits:
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def check_image_upload(path: str | os.PathLike, limits: UploadLimits = UploadLimits()) -> Image.Image:
    """Open an uploaded image as RGB, or raise `UploadRejected` saying why not."""
    return open_untrusted(path, ImageLimits(limits.max_upload_mb, limits.max_pixels))


def delete_upload(path: str) -> None:
    """Remove a refused upload (and the folder Gradio made for it) from Gradio's upload folder."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    if not is_in_or_equal(path, get_upload_folder()):
        return
    Path(path).unlink(missing_ok=True)
    try:
        Path(path).parent.rmdir()
    except OSError:
        pass  # not empty, or already gone


def private_temp_folder() -> str | None:
    """Give Gradio a temporary folder of this demo's own (uploads, rendered results), removed when the process
    exits, so nothing a visitor uploaded outlives the demo; None when the user chose one (GRADIO_TEMP_DIR)."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return None
    folder = tempfile.mkdtemp(prefix="embedrl-demo-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
