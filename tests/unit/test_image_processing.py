"""The image family's numpy decoders against Pillow, and the batch and bundle commands' --help."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from edgestack.families import image as edge_image
from training.data import images


@pytest.fixture(scope="module")
def digit_pixels():
    data = images.digits()
    return data.test.images[:24], data.test.labels[:24]


def png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def encode_png(grey: np.ndarray, filter_type: int) -> bytes:
    """A grey PNG whose every row uses `filter_type` (Pillow never writes type 3, Average)."""
    height, width = grey.shape
    rows, previous = [], np.zeros(width, np.int32)
    for line in grey.astype(np.int32):
        left = np.concatenate([[0], line[:-1]])
        up_left = np.concatenate([[0], previous[:-1]])
        predictor = {0: 0, 1: left, 2: previous, 3: (left + previous) // 2,
                     4: edge_image._paeth(left, previous, up_left)}[filter_type]
        rows.append(bytes([filter_type]) + ((line - predictor) % 256).astype(np.uint8).tobytes())
        previous = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (edge_image.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def test_numpy_png_and_pgm_decoders_match_pillow(digit_pixels):
    pixels, _ = digit_pixels
    rng = np.random.default_rng(0)
    for i, grey in enumerate(pixels[:5]):
        colour = np.stack([grey, np.roll(grey, 3, 0), rng.integers(0, 256, grey.shape, dtype=np.uint8)], -1)
        candidates = [png(grey), png(colour, "RGB"), png(colour, "RGBA"), png(grey, "LA"),
                      png(colour, "P"), *(encode_png(grey, f) for f in range(5))]
        for data in candidates:
            expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
            np.testing.assert_array_equal(edge_image.decode_png(data), expected)
        pgm = b"P5\n28 28\n255\n" + grey.tobytes()
        np.testing.assert_array_equal(edge_image.decode_pnm(pgm), np.asarray(Image.open(io.BytesIO(pgm))))
    with pytest.raises(ValueError, match="truncated"):
        edge_image.decode_png(encode_png(pixels[0], 2)[:-30])


def test_bundle_help_explains_the_options():
    result = subprocess.run([sys.executable, "-m", "cli", "bundle", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for text in ("--target-platform", "--variant", "model.ort", "required_operators", "onnxruntime and numpy"):
        assert text in result.stdout


def run_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def test_batch_help_explains_the_options():
    result = run_cli("batch", "--help")
    assert result.returncode == 0
    for option in ("--engine", "--workers", "--threads", "--shard-size", "--address", "--overwrite", "errors.jsonl"):
        assert option in result.stdout
