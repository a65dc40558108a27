"""Opening an untrusted image (an upload, a request's bytes) under limits, before anything decodes it.

An image from outside may be huge, a small file that decodes to billions of pixels (a
decompression bomb), or not an image at all. The checks run in this order, each before the
costlier next step: byte size, then format and pixel count from the header (PIL reads only
the header on open), then the full decode under PIL's own bomb limit. Every refusal is an
`ImageRejected` whose message can be shown to the sender as is. The demo's uploads and the
HTTP server's images both come through here.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from embedrl.core.errors import EmbedrlError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
DEFAULT_MAX_IMAGE_MB = 10.0
DEFAULT_MAX_PIXELS = 16_000_000


class ImageRejected(EmbedrlError):
    """An image refused by `open_untrusted`; the message says why, fit for the sender."""


class ImageTooLarge(ImageRejected):
    """An image over the byte limit (refused before it is read or decoded)."""


@dataclass(frozen=True)
class ImageLimits:
    max_mb: float = DEFAULT_MAX_IMAGE_MB
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


def check_size(size: int, limits: ImageLimits) -> None:
    """Refuse `size` bytes over the limit (call it before reading or base64-decoding the bytes)."""
    if size > limits.max_bytes:
        raise ImageTooLarge(f"the image is {size / 2**20:.1f} MB; the limit is {limits.max_mb:g} MB")


def open_untrusted(source: str | os.PathLike | bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode a file or bytes as an RGB image, or raise `ImageRejected` saying why not."""
    if isinstance(source, bytes):
        check_size(len(source), limits)
        source = io.BytesIO(source)
    else:
        try:
            check_size(os.path.getsize(source), limits)
        except OSError:
            raise ImageRejected("the image could not be read; please send it again") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check follows
            with Image.open(source) as im:  # reads the header only
                if im.format not in ALLOWED_FORMATS:
                    raise ImageRejected(f"{im.format} images are not accepted; send a "
                                        f"{', '.join(f.lower() for f in ALLOWED_FORMATS)} image")
                if im.width * im.height > limits.max_pixels:
                    raise ImageRejected(f"the image is {im.width}x{im.height} pixels; the limit is "
                                        f"{limits.max_pixels / 1e6:g} megapixels")
                im.seek(0)
                return im.convert("RGB")  # the full decode, still under PIL's bomb limit
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        raise ImageRejected(f"the image decodes to more than {limits.max_pixels / 1e6:g} megapixels; "
                            "refused") from None
    except UnidentifiedImageError:
        raise ImageRejected("this is not an image (or not in a format read here); send a "
                            "PNG, JPEG, WebP, GIF, BMP or TIFF image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageRejected(f"the image could not be decoded ({type(e).__name__}); it may be truncated "
                            "or corrupt") from None


def set_pil_limit(max_pixels: int) -> None:
    """Make PIL warn over `max_pixels` and refuse twice that, for any image the process opens."""
    Image.MAX_IMAGE_PIXELS = max(1, int(max_pixels))
