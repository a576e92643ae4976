"""MNIST-style layout of drawn digits (crop to the ink, longer side 20 px, centre of mass in
the middle of 28x28) and the font-rendered digits evaluation set."""

from __future__ import annotations

import numpy as np
import pytest

from edgestack.families.image import mnist_style, read_idx
from tests.conftest import prerequisite


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0:pixels.shape[0], 0:pixels.shape[1]]
    total = pixels.sum()
    return float((ys * pixels).sum() / total), float((xs * pixels).sum() / total)


def test_an_off_centre_thick_stroke_is_cropped_scaled_and_centred():
    canvas = np.zeros((200, 300), np.uint8)
    canvas[20:120, 230:260] = 255  # a tall bar in the top right corner, 100 x 30
    out = mnist_style(canvas)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.flatnonzero(out.max(1) > 40), np.flatnonzero(out.max(0) > 40)
    assert 19 <= rows[-1] - rows[0] + 1 <= 21          # the longer side is 20 px
    assert 5 <= cols[-1] - cols[0] + 1 <= 8            # aspect kept (100:30 -> 20:6)
    cy, cx = centre_of_mass(out.astype(np.float64))
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1


def test_a_blank_canvas_stays_blank():
    assert not mnist_style(np.zeros((50, 50), np.uint8)).any()


def test_font_digits_are_balanced_deterministic_idx(tmp_path, monkeypatch):
    from training.data import font_digits

    prerequisite(None if font_digits.fonts() else "no fonts under /usr/share/fonts: `make data` installs them "
                 "(as root: apt-get install fonts-dejavu-core)")
    a_images, a_labels = font_digits.make(per_digit=3, seed=1)
    b_images, _ = font_digits.make(per_digit=3, seed=1)
    assert np.array_equal(a_images, b_images) and np.bincount(a_labels).tolist() == [3] * 10
    monkeypatch.setattr("sys.argv", ["font_digits", str(tmp_path), "--per-digit", "2"])
    assert font_digits.main() == 0
    images, labels = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (20, 28, 28) and labels.tolist() == [d for d in range(10) for _ in range(2)]


def png_of(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_an_upload_with_the_mnist_layout_is_laid_out_not_squashed():
    from edgestack.families.image import decode_image

    page = np.full((300, 400), 255, np.uint8)  # a photo of dark ink on white paper, off-centre
    page[30:130, 300:330] = 0
    plain = decode_image(png_of(page), 28, 28)
    laid_out = decode_image(png_of(page), 28, 28, layout="mnist")
    assert plain.shape == laid_out.shape == (28, 28)
    assert np.array_equal(laid_out, mnist_style(255 - page))  # inverted to light on dark, then laid out
    cy, cx = centre_of_mass(laid_out.astype(np.float64))
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1
    assert centre_of_mass(plain.astype(np.float64))[1] > 20  # resized whole, the stroke stays at the right


def test_drawings_of_any_size_need_a_layout_and_are_checked():
    from edgestack.errors import InputError
    from edgestack.families.image import MAX_DRAWING_SIDE, check_drawings

    drawing = np.zeros((90, 60))
    drawing[10:80, 25:35] = 255
    out = check_drawings(drawing.tolist(), 28, 28, "mnist")
    assert out.shape == (1, 28, 28) and out.dtype == np.float32 and out.max() > 200
    with pytest.raises(InputError, match=r"must have shape \[28, 28\]"):
        check_drawings(drawing, 28, 28, None)  # without a layout, pixels are the model's size
    with pytest.raises(InputError, match="layout"):
        check_drawings(drawing, 28, 28, "squash")
    with pytest.raises(InputError, match="at most") as too_big:
        check_drawings(np.zeros((1, MAX_DRAWING_SIDE + 1, 2)), 28, 28, "mnist")
    assert too_big.value.status == 413
    with pytest.raises(InputError, match="no images"):
        check_drawings(np.zeros((1, 0, 5)), 28, 28, "mnist")
    with pytest.raises(InputError, match="0..255"):
        check_drawings(drawing * 2, 28, 28, "mnist")


def test_writer_and_pen_augmentation_is_seeded_and_laid_out_like_drawn_input():
    import torch

    from training.image import drawn_augment, relayout, thicken_or_thin

    bar = torch.zeros(8, 1, 28, 28)
    bar[:, :, 2:12, 3:6] = 1.0  # a short stroke in the top-left corner
    first = drawn_augment(bar, torch.Generator().manual_seed(3), clean=0.0)
    again = drawn_augment(bar, torch.Generator().manual_seed(3), clean=0.0)
    other = drawn_augment(bar, torch.Generator().manual_seed(4), clean=0.0)
    assert torch.equal(first, again) and not torch.equal(first, other)
    for image in first[:, 0].numpy():  # re-laid out: 20 px tall, centred by mass
        rows = np.flatnonzero(image.max(1) > 0.1)
        assert 18 <= rows[-1] - rows[0] + 1 <= 22
        cy, cx = centre_of_mass(image)
        assert abs(cy - 13.5) <= 1.5 and abs(cx - 13.5) <= 1.5
    laid_out = relayout(bar)[0, 0].numpy()
    assert abs(centre_of_mass(laid_out)[1] - 13.5) <= 1
    thick = thicken_or_thin(bar, torch.Generator().manual_seed(0), low=1.5, high=2.0)
    thin = thicken_or_thin(bar, torch.Generator().manual_seed(0), low=-1.0, high=-0.9)
    assert thick.sum() > bar.sum() > thin.sum()


def test_the_layout_is_the_same_with_and_without_pillow(monkeypatch):
    from edgestack.families import image as processing

    digit = np.zeros((28, 28), np.uint8)
    digit[4:20, 9:14] = 255  # an MNIST-sized upload, not yet laid out
    digit[6:9, 14:18] = 180
    data = png_of(digit)
    with_pillow = processing.decode_image(data, 28, 28, layout="mnist")
    monkeypatch.setattr(processing, "_pillow", lambda: None)  # an edge device: numpy decoders only
    assert np.array_equal(processing.decode_image(data, 28, 28, layout="mnist"), with_pillow)
