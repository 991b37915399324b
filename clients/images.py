"""PNG/JPEG files -> MNIST-like 28x28 float arrays in [0, 1], white digit on black.

The contract is the one every path of the project follows (the model's image-bytes signature
too): grayscale, 28x28, values in [0, 1], white ink on a black background.

- A picture that is already 28x28 is only converted (grayscale, /255, inverted when it is
  dark-on-light), so an MNIST digit saved as PNG reads back exactly as the model's image-bytes
  signature reads it.
- Any other size gets MNIST's own preprocessing, which is what makes a photo-like digit give a
  sensible answer: crop to the ink, resize so the longer side is 20 px (aspect preserved),
  and paste it into a 28x28 black canvas centred on its centre of mass.
- Dark-on-light pictures (the usual photo or scan) are inverted; which one a picture is, is
  decided by its border, which is background in any sensible digit picture. Transparent
  pixels count as background.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

SIZE = 28
DIGIT_BOX = 20  # MNIST fits each digit into a 20x20 box inside the 28x28 frame


class ImageError(ValueError):
    """The file is not a readable image."""


def _open(source: str | os.PathLike | bytes | Any):
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    try:
        if isinstance(source, (bytes, bytearray)):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(os.fspath(source))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        name = "image bytes" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
        raise ImageError(f"cannot read {name}: {exc}") from None


def _grayscale(image) -> np.ndarray:
    """Floats in [0, 1]. Transparent pixels become background: composited over black when the
    visible pixels are light (white ink), over white otherwise (the usual dark ink)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        gray = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
        visible = alpha > 0.5
        ink_is_light = visible.any() and float(gray[visible].mean()) > 0.5
        background = 0.0 if ink_is_light else 1.0
        return gray * alpha + background * (1.0 - alpha)
    if image.mode in ("I;16", "I", "F"):  # 16-bit / float pictures: scale by their peak
        arr = np.asarray(image, dtype=np.float32)
        peak = float(arr.max()) or 1.0
        return np.clip(arr / peak, 0.0, 1.0)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


def _border(arr: np.ndarray) -> np.ndarray:
    return np.concatenate([arr[0, :], arr[-1, :], arr[1:-1, 0], arr[1:-1, -1]])


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(arr.astype(np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """A grayscale float picture -> 28x28 float32, white on black, in [0, 1]."""
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(f"expected a 2-D picture, got shape {list(gray.shape)}")
    gray = gray.astype(np.float32)
    if _border(gray).mean() > 0.5:  # dark ink on a light background
        gray = 1.0 - gray
    if gray.shape == (SIZE, SIZE):
        return np.clip(gray, 0.0, 1.0)

    # Stretch contrast: background to 0, the strongest ink to 1 (photos are rarely clean).
    background = float(np.median(_border(gray)))
    peak = float(gray.max())
    if peak - background < 1e-3:
        return np.zeros((SIZE, SIZE), np.float32)  # a blank picture
    gray = np.clip((gray - background) / (peak - background), 0.0, 1.0)

    rows = np.flatnonzero(gray.max(axis=1) > 0.1)
    cols = np.flatnonzero(gray.max(axis=0) > 0.1)
    crop = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = DIGIT_BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    digit = np.clip(_resize(crop, new_h, new_w), 0.0, 1.0)

    # Centre of mass to the centre of the 28x28 frame, as MNIST did.
    total = float(digit.sum()) or 1.0
    cy = float((digit.sum(axis=1) * np.arange(new_h)).sum()) / total
    cx = float((digit.sum(axis=0) * np.arange(new_w)).sum()) / total
    top = int(round(SIZE / 2 - cy - 0.5))
    left = int(round(SIZE / 2 - cx - 0.5))
    top = min(max(top, 0), SIZE - new_h)
    left = min(max(left, 0), SIZE - new_w)
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top : top + new_h, left : left + new_w] = digit
    return out


def load_image(source: str | os.PathLike | bytes | Any) -> np.ndarray:
    """One PNG/JPEG (path, bytes or PIL image) -> [28, 28] float32 in [0, 1]."""
    return to_mnist(_grayscale(_open(source)))


def load_images(sources: Iterable[str | os.PathLike | bytes | Any]) -> np.ndarray:
    """Several pictures -> [n, 28, 28] float32."""
    arrays = [load_image(s) for s in sources]
    if not arrays:
        return np.zeros((0, SIZE, SIZE), np.float32)
    return np.stack(arrays)


def to_png(digit: np.ndarray) -> bytes:
    """A [28,28] (or [784]) float digit in [0,1] as 8-bit grayscale PNG bytes."""
    from PIL import Image

    arr = np.asarray(digit, dtype=np.float32).reshape(SIZE, SIZE)
    pixels = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
