"""Checking an uploaded query image before anything decodes it.

A demo gets shared, so an upload is untrusted: it may be huge on disk, a small file that
decodes to billions of pixels (a decompression bomb), or not an image at all. The checks
run in this order, each before the costlier next step: file size (stat), format and pixel
count from the header (PIL reads only the header on open), then the full decode under
PIL's own bomb limit. Every refusal is an `UploadRejected` with a message fit for the user.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from embedrl.core.errors import EmbedrlError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_PIXELS = 16_000_000


class UploadRejected(EmbedrlError):
    """An upload the demo refuses; the message is shown to the user as is."""


@dataclass(frozen=True)
class UploadLimits:
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def set_pil_limit(max_pixels: int) -> None:
    """Make PIL warn over `max_pixels` and refuse twice that, for any image the process opens."""
    Image.MAX_IMAGE_PIXELS = max(1, int(max_pixels))


def check_image_upload(path: str | os.PathLike, limits: UploadLimits = UploadLimits()) -> Image.Image:
    """Open an uploaded image as RGB, or raise `UploadRejected` saying why not."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise UploadRejected("the upload could not be read; please upload it again") from None
    if size > limits.max_bytes:
        raise UploadRejected(f"the image is {size / 2**20:.1f} MB; the limit is {limits.max_upload_mb:g} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check follows
            with Image.open(path) as im:  # reads the header only
                if im.format not in ALLOWED_FORMATS:
                    raise UploadRejected(f"{im.format} images are not accepted; upload a "
                                         f"{', '.join(f.lower() for f in ALLOWED_FORMATS)} image")
                pixels = im.width * im.height
                if pixels > limits.max_pixels:
                    raise UploadRejected(f"the image is {im.width}x{im.height} pixels; the limit is "
                                         f"{limits.max_pixels / 1e6:g} megapixels")
                im.seek(0)
                return im.convert("RGB")  # the full decode, still under PIL's bomb limit
    except UploadRejected:
        raise
    except Image.DecompressionBombError:
        raise UploadRejected(f"the image decodes to more than {limits.max_pixels / 1e6:g} megapixels; "
                             "refused") from None
    except UnidentifiedImageError:
        raise UploadRejected("this file is not an image (or not one this demo reads); upload a "
                             "PNG, JPEG, WebP, GIF, BMP or TIFF image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UploadRejected(f"the image could not be decoded ({type(e).__name__}); it may be truncated "
                             "or corrupt") from None


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
