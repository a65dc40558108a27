"""Checking an uploaded query image before anything decodes it.

A demo gets shared, so an upload is untrusted: the checks (file size, then format and pixel
count from the header, then the full decode under PIL's bomb limit) are
`embedrl.core.media.open_untrusted`'s, shared with the HTTP server. Every refusal is an
`UploadRejected` with a message fit for the user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
