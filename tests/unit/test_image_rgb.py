"""The image family's processing for RGB models (edgestack/families/image.py): decoding in colour
with and without Pillow, pixel arrays in the shapes callers send, the model's tensor layout;
and the pieces of the image build that need no training (shape choice, architectures)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from edgestack.errors import InputError
from edgestack.families import image as processing


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def test_rgb_decoding_with_and_without_pillow_agree(photo):
    data = png(photo)
    with_pillow = processing.decode_image(data, 12, 16, dark_background=False, channels=3)
    assert with_pillow.shape == (12, 16, 3) and np.array_equal(with_pillow, photo)
    assert np.array_equal(processing.decode_png(data, rgb=True), photo)  # the numpy decoder, as on a device
    grey = processing.decode_image(data, 12, 16, dark_background=False)
    assert grey.shape == (12, 16) and np.array_equal(grey, processing.luma(photo))
    resized = processing.decode_image(data, 6, 8, dark_background=False, channels=3)
    assert resized.shape == (6, 8, 3)
    with pytest.raises(InputError, match="1 \\(grey\\) or 3 \\(RGB\\)"):
        processing.decode_image(data, 6, 8, channels=4)


def test_rgb_pixel_arrays_in_every_layout_and_the_tensor(photo):
    pixels = photo.astype(np.float32)
    one = processing.check_pixels(pixels.tolist(), 12, 16, channels=3)
    assert one.shape == (1, 12, 16, 3)
    chw = processing.check_pixels(pixels.transpose(2, 0, 1)[None], 12, 16, channels=3)
    assert np.array_equal(chw, one)
    with pytest.raises(InputError, match=r"\[12, 16, 3\]"):
        processing.check_pixels(pixels[..., 0], 12, 16, channels=3)
    with pytest.raises(InputError, match="0..255"):
        processing.check_pixels(pixels * 2, 12, 16, channels=3)
    tensor = processing.to_model_input(one, {"scale": 1 / 255, "mean": 0.0, "std": 1.0})
    assert tensor.shape == (1, 3, 12, 16) and tensor.dtype == np.float32
    assert np.allclose(tensor[0, 2], pixels[..., 2] / 255)
    grey = processing.to_model_input(one[..., 0], {"scale": 1 / 255, "mean": 0.0, "std": 1.0})
    assert grey.shape == (1, 1, 12, 16)


def test_shape_choice_and_networks_sized_to_the_input():
    torch = pytest.importorskip("torch")
    from training import image_nets
    from training.data.folders import Inspection, suggest_shape

    def inspection(sizes, colour):
        return Inspection(None, {}, [], sizes, colour)

    assert suggest_shape(inspection([(640, 480), (800, 600), (300, 200)], 5)) == [3, 96, 96]
    assert suggest_shape(inspection([(28, 28)] * 3, 0)) == [1, 28, 28]
    assert suggest_shape(inspection([(50, 70)] * 3, 0)) == [1, 48, 48]
    assert image_nets.resolve_arch("auto", [3, 64, 64], False) == "dwsep"
    assert image_nets.resolve_arch("auto", [1, 32, 32], False) == "seed-cnn"
    assert image_nets.resolve_arch("auto", [1, 96, 96], False) == "cnn"
    with pytest.raises(Exception, match="takes RGB input"):
        image_nets.resolve_arch("efficientnet-lite0", [1, 64, 64], False)
    for arch, shape in (("dwsep", [3, 40, 56]), ("cnn", [1, 96, 64]), ("seed-cnn", [3, 32, 32])):
        net = image_nets.build(arch, 7, shape, width=8, mean=[0.5] * shape[0], std=[0.25] * shape[0])
        assert net(torch.rand(2, *shape)).shape == (2, 7)
