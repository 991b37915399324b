"""The image loader: MNIST-like 28x28 floats in [0, 1], white on black."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clients import images


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _mnist_like() -> np.ndarray:
    digit = np.zeros((28, 28), np.float32)
    digit[6:22, 13:16] = 1.0  # a "1"
    digit[6:9, 10:13] = 0.5
    return digit


def test_28x28_white_on_black_png_is_read_exactly():
    digit = _mnist_like()
    out = images.load_image(images.to_png(digit))
    assert out.shape == (28, 28) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.round(digit * 255) / 255, atol=1e-7)


def test_dark_on_light_is_inverted(tmp_path):
    digit = _mnist_like()
    path = tmp_path / "dark.png"
    path.write_bytes(images.to_png(1.0 - digit))
    expected = 1.0 - np.round((1.0 - digit) * 255) / 255
    np.testing.assert_allclose(images.load_image(path), expected, atol=1e-6)


def test_large_photo_like_picture_is_cropped_scaled_and_centred():
    picture = Image.new("RGB", (300, 200), (235, 230, 220))  # off-white paper
    draw = ImageDraw.Draw(picture)
    draw.line([(60, 20), (60, 180)], fill=(30, 30, 40), width=12)  # a tall stroke, off centre
    out = images.load_image(_png(picture, "JPEG"))
    assert out.shape == (28, 28) and out.min() >= 0.0 and out.max() <= 1.0
    ink = np.argwhere(out > 0.5)
    rows, cols = ink[:, 0], ink[:, 1]
    assert rows.max() - rows.min() + 1 in (19, 20, 21)  # the longer side fills the 20 px box
    assert abs(rows.mean() - 13.5) < 1.5 and abs(cols.mean() - 13.5) < 1.5  # centred
    assert out[0].max() < 0.05 and out[:, 0].max() < 0.05  # background is black


def test_aspect_ratio_is_kept():
    picture = Image.new("L", (400, 400), 0)
    ImageDraw.Draw(picture).rectangle([100, 150, 300, 250], fill=255)  # 2:1 box, white on black
    out = images.load_image(_png(picture))
    ink = np.argwhere(out > 0.5)
    height = ink[:, 0].max() - ink[:, 0].min() + 1
    width = ink[:, 1].max() - ink[:, 1].min() + 1
    assert 19 <= width <= 21 and 9 <= height <= 11


def test_transparent_background_counts_as_background():
    picture = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(picture).line([(50, 10), (50, 90)], fill=(0, 0, 0, 255), width=10)
    out = images.load_image(_png(picture))
    assert out[:, 0].max() < 0.05 and out.max() > 0.9  # black ink on transparent -> white digit
    light = Image.new("LA", (100, 100), (0, 0))
    ImageDraw.Draw(light).line([(50, 10), (50, 90)], fill=(255, 255), width=10)
    out = images.load_image(_png(light))
    assert out[:, 0].max() < 0.05 and out.max() > 0.9


def test_blank_picture_gives_zeros_and_batches_stack():
    blank = images.load_image(_png(Image.new("L", (50, 50), 255)))
    assert blank.shape == (28, 28) and blank.max() == 0.0
    batch = images.load_images([images.to_png(_mnist_like())] * 3)
    assert batch.shape == (3, 28, 28)
    assert images.load_images([]).shape == (0, 28, 28)


def test_unreadable_files_raise_image_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(images.ImageError, match="cannot read"):
        images.load_image(bad)
    with pytest.raises(images.ImageError):
        images.load_image(tmp_path / "missing.png")
    assert issubclass(images.ImageError, ValueError)
