"""Image files: which suffixes count as images, and their size read from the header only.

A leaf module (no project imports), so the dataset readers (sources, coco, voc) can all use it without a cycle.
"""
from __future__ import annotations

import os
import struct
import sys

IMG_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as cv2.imread will see it (EXIF rotation applied), read from the header only.

    Raises ValueError naming the file when it is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with _pil_open()(path) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(274, 1)
            except Exception:  # broken EXIF blocks are common and harmless for the size
                orientation = 1
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error, ImportError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
        w, h = h, w
    return int(w), int(h)


def _pil_open():
    """PIL's own Image.open. ultralytics replaces it with a wrapper that, for a file PIL cannot identify, checks for
    (and may try to install) the pi-heif package and imports it: a hostile or broken image must not reach that."""
    from PIL import Image

    opener = Image.open
    if getattr(opener, "__module__", "").startswith("PIL"):
        return opener
    return getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", opener)
