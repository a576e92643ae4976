"""The image family's own decoders (edgestack/families/image.py: what an edge device without Pillow
runs) on PNGs written here byte by byte (every colour type, every filter on every row, several
IDAT chunks) and on PGM/PPM text and binary; every refusal; and decode_image with and without
Pillow. Pillow reads the same bytes as the reference."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from edgestack.families import image
from edgestack.families.common import InputError

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)  # 7 wide: not a multiple of anything


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode(pixels: np.ndarray, color: int, filters, *, depth: int = 8, interlace: int = 0, palette=None,
           idat_parts: int = 1, header: bytes | None = None) -> bytes:
    """A PNG of `pixels` [H, W, C] with colour type `color`; row y uses filters[y % len(filters)]."""
    height, width, channels = pixels.shape
    rows, previous = [], np.zeros(width * channels, np.int32)
    for y, line in enumerate(pixels.reshape(height, -1).astype(np.int32)):
        kind = filters[y % len(filters)]
        left = np.concatenate([np.zeros(channels, np.int32), line[:-channels]])
        up_left = np.concatenate([np.zeros(channels, np.int32), previous[:-channels]])
        predictor = {0: 0, 1: left, 2: previous, 3: (left + previous) // 2,
                     4: image._paeth(left, previous, up_left)}[kind]
        rows.append(bytes([kind]) + ((line - predictor) % 256).astype(np.uint8).tobytes())
        previous = line
    data = zlib.compress(b"".join(rows))
    cut = [len(data) * i // idat_parts for i in range(idat_parts + 1)]
    body = header if header is not None else struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    out = image.PNG_SIGNATURE + chunk(b"IHDR", body)
    if palette is not None:
        out += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    out += b"".join(chunk(b"IDAT", data[a:b]) for a, b in zip(cut, cut[1:]))
    return out + chunk(b"tEXt", b"Comment\x00made here") + chunk(b"IEND", b"")


def pillow(data: bytes, mode: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


@pytest.mark.parametrize("color, channels", [(0, 1), (4, 2), (2, 3), (6, 4)], ids=["grey", "grey+alpha", "rgb", "rgba"])
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]], ids=lambda f: "filters" + "".join(map(str, f)))
def test_every_colour_type_and_filter_decodes_as_pillow_does(color, channels, filters):
    data = encode(PIXELS[..., :channels], color, filters, idat_parts=3)
    np.testing.assert_array_equal(image.decode_png(data), pillow(data, "L"))
    np.testing.assert_array_equal(image.decode_png(data, rgb=True), pillow(data, "RGB"))


def test_a_palette_image_decodes_through_its_palette():
    palette = RNG.integers(0, 256, (6, 3))
    index = RNG.integers(0, 6, (5, 7, 1), dtype=np.uint8)
    data = encode(index, 3, [0, 4], palette=palette)
    np.testing.assert_array_equal(image.decode_png(data, rgb=True), palette[index[..., 0]])
    np.testing.assert_array_equal(image.decode_png(data), pillow(data, "L"))
    index[0, 0, 0] = 200  # an index past the palette's end reads its last entry, never out of bounds
    assert (image.decode_png(encode(index, 3, [0], palette=palette), rgb=True)[0, 0] == palette[-1]).all()
    with pytest.raises(ValueError, match=r"^damaged PNG \(palette image without a palette\)$"):
        image.decode_png(encode(index, 3, [0]))


def test_grey_and_colour_conversions_are_pillows():
    rgb = RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image.luma(rgb), np.asarray(Image.fromarray(rgb).convert("L")))
    assert image.luma(np.array([[[255, 255, 255]]], np.uint8))[0, 0] == 255 and image.luma(np.zeros((1, 1, 3), np.uint8)) == 0
    grey = RNG.integers(0, 256, (3, 3, 1), dtype=np.uint8)
    assert image.colour(grey, rgb=True).shape == (3, 3, 3) and (image.colour(grey, rgb=True)[..., 2] == grey[..., 0]).all()
    assert (image.colour(np.concatenate([grey, grey * 0], -1), rgb=False) == grey[..., 0]).all()  # alpha dropped
    rgba = RNG.integers(0, 256, (2, 2, 4), dtype=np.uint8)
    assert (image.colour(rgba, rgb=True) == rgba[..., :3]).all()
    left, up, up_left = np.array([10, 50, 10]), np.array([40, 40, 20]), np.array([35, 60, 15])
    assert image._paeth(left, up, up_left).tolist() == [10, 40, 15]  # the PNG spec's predictor: left, up, up-left


@pytest.mark.parametrize("make, words", [
    (lambda good: b"GIF89a" + good[6:], r"^not a PNG file$"),
    (lambda good: good[:45], r"^truncated PNG \(a chunk ends early\)$"),
    (lambda good: good[:40], r"^damaged PNG \(no IHDR or no image data\)$"),  # stops before IDAT's header
    (lambda good: image.PNG_SIGNATURE + chunk(b"IEND", b""), r"^damaged PNG \(no IHDR or no image data\)$"),
    (lambda good: encode(PIXELS[..., :1], 0, [0], header=b"\0" * 12), r"^damaged PNG \(no IHDR"),
    (lambda good: encode(PIXELS[..., :1], 0, [0], depth=16),
     r"^PNG with bit depth 16, colour type 0, interlace 0: only 8-bit non-interlaced PNGs"),
    (lambda good: encode(PIXELS[..., :1], 0, [0], interlace=1), r"bit depth 8, colour type 0, interlace 1"),
    (lambda good: encode(PIXELS[..., :1], 5, [0]), r"colour type 5"),
    (lambda good: good.replace(zlib.compress(b"x")[:0] + b"IDAT", b"IDAT", 1)[:8] + chunk(
        b"IHDR", struct.pack(">IIBBBBB", 7, 5, 8, 0, 0, 0, 0)) + chunk(b"IDAT", b"not zlib at all"),
     r"^damaged PNG \(Error -3"),
    (lambda good: image.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 6, 8, 0, 0, 0, 0))
     + good[good.index(b"IDAT") - 4:], r"^damaged or truncated PNG \(image data has the wrong size\)$"),
])
def test_broken_pngs_say_what_is_wrong(make, words):
    good = encode(PIXELS[..., :1], 0, [0])
    with pytest.raises(ValueError, match=words):
        image.decode_png(make(good))


def test_an_unknown_filter_type_and_extra_data_are_refused():
    rows = b"".join(bytes([7]) + bytes(7) for _ in range(5))
    data = (image.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 5, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match=r"^damaged PNG \(unknown filter type 7\)$"):
        image.decode_png(data)
    longer = zlib.compress(b"".join(bytes([0]) + bytes(7) for _ in range(6)))  # a row more than IHDR says
    data = (image.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 5, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", longer) + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match="wrong size"):
        image.decode_png(data)


def test_the_size_a_header_declares_is_checked_before_decoding():
    image.check_pixel_count(4096, 4096)
    with pytest.raises(InputError) as caught:
        image.check_pixel_count(4097, 4096, "photo.png")
    assert caught.value.status == 413 and str(caught.value) == (
        "photo.png is 4097x4096 = 16,781,312 pixels; the limit is 16,777,216 (4096x4096): scale it down first")
    huge = image.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 9999, 8, 0, 0, 0, 0)) + chunk(b"IDAT", b"x")
    with pytest.raises(InputError, match="10000x9999"):
        image.decode_png(huge)
    with pytest.raises(InputError, match="5000x5000"):
        image.decode_pnm(b"P5 5000 5000 255\n")


# ------------------------------------------------------------------ PGM / PPM

def test_pgm_and_ppm_binary_and_text_with_comments_and_small_maxvals():
    grey, rgb = PIXELS[..., 0], PIXELS[..., :3]
    p5 = b"P5\n# a comment\n7 5\n255\n" + grey.tobytes()
    np.testing.assert_array_equal(image.decode_pnm(p5), grey)
    np.testing.assert_array_equal(image.decode_pnm(p5, rgb=True), np.repeat(grey[..., None], 3, -1))
    p6 = b"P6 7 5 255\n" + rgb.tobytes()
    np.testing.assert_array_equal(image.decode_pnm(p6, rgb=True), rgb)
    np.testing.assert_array_equal(image.decode_pnm(p6), pillow(p6, "L"))
    p2 = b"P2\n7 5\n# max\n255\n" + " ".join(map(str, grey.reshape(-1))).encode()
    np.testing.assert_array_equal(image.decode_pnm(p2), grey)
    p3 = b"P3\n7 5\n255\n" + "\n".join(map(str, rgb.reshape(-1))).encode()
    np.testing.assert_array_equal(image.decode_pnm(p3, rgb=True), rgb)
    four = b"P2 2 1 3\n0 3"  # maxval 3: scaled to 0..255
    assert image.decode_pnm(four).tolist() == [[0, 255]]
    assert image.decode_pnm(b"P2 3 1 15\n0 5 15").tolist() == [[0, 85, 255]]


@pytest.mark.parametrize("data, words", [
    (b"P7 1 1 255\n\0", "^not a PGM/PPM file$"),
    (b"P5 7\n", "^damaged PGM/PPM header$"),
    (b"P5 # only a comment", "^damaged PGM/PPM header$"),
    (b"P5 2 2 65535\n" + b"\0" * 8, "^PGM/PPM with maxval 65535: only 8-bit files are decoded without Pillow$"),
    (b"P5 2 2 0\n" + b"\0" * 4, "maxval 0"),
    (b"P5 2 2 255\n\0\0\0", "^truncated PGM/PPM$"),
    (b"P2 2 2 255\n0 0 0", "^truncated PGM/PPM$"),
    (b"P6 1 1 255\n\0\0", "^truncated PGM/PPM$"),
])
def test_broken_pgm_and_ppm_say_what_is_wrong(data, words):
    with pytest.raises(ValueError, match=words):
        image.decode_pnm(data)


# ------------------------------------------------------------------ decode_image

def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(params=["pillow", "numpy"])
def decoder(request, monkeypatch):
    """decode_image as a server (Pillow) and as an edge device without Pillow runs it."""
    if request.param == "numpy":
        monkeypatch.setattr(image, "_pillow", lambda: None)
    return request.param


def test_an_image_of_the_models_size_is_read_grey_or_rgb(decoder):
    dark = (PIXELS[..., :3] // 2).astype(np.uint8)  # mean < 128: already light on dark
    grey = image.decode_image(png_bytes(dark), 5, 7)
    assert grey.dtype == np.uint8 and grey.shape == (5, 7)
    np.testing.assert_array_equal(grey, pillow(png_bytes(dark), "L"))
    colour = image.decode_image(png_bytes(dark, "RGB"), 5, 7, channels=3)
    np.testing.assert_array_equal(colour, dark)
    pgm = b"P5 7 5 255\n" + dark[..., 0].tobytes()
    np.testing.assert_array_equal(image.decode_image(pgm, 5, 7), dark[..., 0])


def test_a_light_background_is_inverted_unless_the_model_was_trained_on_light(decoder):
    light = np.full((5, 7), 200, np.uint8)
    light[2, 3] = 10
    assert image.decode_image(png_bytes(light), 5, 7)[2, 3] == 245  # mean > 127: inverted to light on dark
    assert image.decode_image(png_bytes(light), 5, 7, dark_background=False)[2, 3] == 10
    edge = np.full((2, 2), 127, np.uint8)  # mean 127: not over the line, kept
    assert image.decode_image(png_bytes(edge), 2, 2).tolist() == [[127, 127], [127, 127]]
    over = np.full((2, 2), 128, np.uint8)
    assert image.decode_image(png_bytes(over), 2, 2).tolist() == [[127, 127], [127, 127]]


def test_refusals_of_decode_image_are_input_errors(decoder):
    with pytest.raises(InputError, match="^upload.png is empty \\(0 bytes\\)$"):
        image.decode_image(b"", 5, 7, what="upload.png")
    with pytest.raises(InputError, match="layout"):
        image.decode_image(png_bytes(PIXELS[..., 0]), 5, 7, layout="squash")
    with pytest.raises(InputError, match="1 \\(grey\\) or 3 \\(RGB\\) channels; got 2"):
        image.decode_image(png_bytes(PIXELS[..., 0]), 5, 7, channels=2)
    with pytest.raises(InputError) as caught:
        image.decode_image(b"this is text", 5, 7, what="notes.png")
    assert str(caught.value).startswith("notes.png is not a")


def test_without_pillow_the_size_must_match_and_only_png_and_pnm_are_read(monkeypatch):
    monkeypatch.setattr(image, "_pillow", lambda: None)
    with pytest.raises(InputError, match=r"^x is 7x5; the model takes 8x8: resize it first, or install Pillow"):
        image.decode_image(png_bytes(PIXELS[..., 0]), 8, 8, what="x")
    gif = io.BytesIO()
    Image.fromarray(PIXELS[..., 0]).save(gif, "GIF")
    with pytest.raises(InputError, match=r"^x is not a PNG or PGM/PPM file \(install Pillow to read other formats\)$"):
        image.decode_image(gif.getvalue(), 5, 7, what="x")
    with pytest.raises(InputError, match=r"^x: truncated PNG"):
        image.decode_image(png_bytes(PIXELS[..., 0])[:45], 5, 7, what="x")
    drawing = np.zeros((40, 30), np.uint8)
    drawing[5:35, 12:18] = 255
    laid_out = image.decode_image(png_bytes(drawing), 28, 28, layout="mnist")  # any size: laid out, not refused
    assert laid_out.shape == (28, 28) and np.array_equal(laid_out, image.mnist_style(drawing))


def test_with_pillow_other_formats_are_resized_and_damage_or_bombs_refused():
    photo = (np.add.outer(np.arange(40), np.arange(60)) * 1.2).astype(np.uint8)  # smooth, as photos are
    jpeg = io.BytesIO()
    Image.fromarray(photo).save(jpeg, "JPEG")
    out = image.decode_image(jpeg.getvalue(), 10, 15)
    expected = np.asarray(Image.open(io.BytesIO(jpeg.getvalue())).convert("L").resize((15, 10), Image.Resampling.LANCZOS))
    assert out.shape == (10, 15) and np.abs(out.astype(int) - expected).max() <= 2  # draft decoding may differ a little
    with pytest.raises(InputError, match="^x is not an image in a format we read"):
        image.decode_image(b"this is text, not an image", 5, 7, what="x")
    with pytest.raises(InputError, match="^x is a damaged or truncated image"):
        image.decode_image(png_bytes(photo)[:60], 5, 7, what="x")
    bomb = io.BytesIO()
    Image.new("1", (4100, 4100)).save(bomb, "PNG")  # 2 KB that decode to 16.8 megapixels
    assert image._pillow().MAX_IMAGE_PIXELS == image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():  # as _pillow() leaves them in a server (pytest resets them per test)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InputError) as caught:
            image.decode_image(bomb.getvalue(), 28, 28, what="x")
    assert caught.value.status == 413 and str(caught.value).startswith("x has more pixels than allowed; the limit is")
    with warnings.catch_warnings():  # and were the warning only a warning: the header's size is refused all the same
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(InputError) as caught:
            image.decode_image(bomb.getvalue(), 28, 28, what="x")
    assert caught.value.status == 413 and str(caught.value).startswith("x is 4100x4100 = 16,810,000 pixels")


# ------------------------------------------------------------------ what mutation testing found still unchecked

def test_luma_rounds_exactly_as_pillow_over_a_million_pixels():
    rgb = np.random.default_rng(11).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    ours = image.luma(rgb)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(rgb).convert("L")))


def test_png_chunks_are_read_in_any_order_and_nothing_after_iend():
    pixels = PIXELS[..., :1]
    good = encode(pixels, 0, [0])
    ihdr_end = 8 + 25
    text = chunk(b"tEXt", b"Software\x00a camera")
    before = good[:ihdr_end] + text + chunk(b"pHYs", b"\0" * 9) + good[ihdr_end:]  # ancillary chunks before IDAT
    np.testing.assert_array_equal(image.decode_png(before), pixels[..., 0])
    after = good + chunk(b"IDAT", b"junk after the end")  # whatever follows IEND is not part of the image
    np.testing.assert_array_equal(image.decode_png(after), pixels[..., 0])
    with pytest.raises(ValueError, match=r"^truncated PNG \(a chunk ends early\)$"):  # IDAT's header, no body
        image.decode_png(good[:ihdr_end + 8])


def test_a_header_declaring_a_huge_width_or_height_is_refused_not_misread():
    for width, height in ((2**24 + 5, 5), (7, 2**24 + 5)):
        data = image.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
        with pytest.raises(InputError) as caught:
            image.decode_png(data)
        assert caught.value.status == 413 and f"{width}x{height}" in str(caught.value)


def test_a_png_inflating_far_beyond_its_header_is_not_inflated():
    import tracemalloc

    bomb = zlib.compress(b"\0" * (200 << 20), 9)  # 200 MB of zeros in about 200 KB
    data = (image.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 5, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", bomb) + chunk(b"IEND", b""))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="wrong size"):
            image.decode_png(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak / 2**20:.0f} MiB"  # the header's 40 bytes and a little, not 200 MB


def test_average_and_paeth_filters_on_a_larger_colour_image():
    big = np.random.default_rng(3).integers(0, 256, (24, 31, 4), dtype=np.uint8)
    for filters in ([3], [4], [3, 4], [4, 3, 1, 2]):
        data = encode(big, 6, filters)
        np.testing.assert_array_equal(image.decode_png(data, rgb=True), pillow(data, "RGB"))


def test_pnm_edge_values_and_types():
    assert image.decode_pnm(b"P5 2 1 1\n\x00\x01").tolist() == [[0, 255]]  # maxval 1 is 8 bits or less
    with pytest.raises(ValueError, match="^PGM/PPM with maxval 256: only 8-bit"):
        image.decode_pnm(b"P5 2 1 256\n\x00\x01")
    trailing = image.decode_pnm(b"P5 2 1 255\n\x07\x09" + b"\n")  # a trailing newline is not part of the pixels
    assert trailing.tolist() == [[7, 9]] and trailing.dtype == np.uint8
    assert image.decode_pnm(b"P2 2 1 255\n7 9").dtype == np.uint8
    assert image.decode_pnm(b"P6 1 1 255\n\x10\x20\x30", rgb=True).dtype == np.uint8


def test_pillows_limits_are_set_once_and_bombs_become_errors(monkeypatch):
    import warnings

    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.resetwarnings()
        assert image._pillow() is PILImage and PILImage.MAX_IMAGE_PIXELS == image.MAX_IMAGE_PIXELS
        assert any(action == "error" and category is PILImage.DecompressionBombWarning
                   for action, _, category, _, _ in warnings.filters)


def test_decode_image_names_what_it_read_and_passes_its_options_on(monkeypatch):
    with pytest.raises(InputError, match=r"^image is empty \(0 bytes\)$"):
        image.decode_image(b"", 5, 7)
    bomb = io.BytesIO()
    Image.new("1", (4100, 4100)).save(bomb, "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InputError, match=r"^x has more pixels than allowed; the limit is 16,777,216 \(4096x4096\): "
                                             r"scale it down first$"):
            image.decode_image(bomb.getvalue(), 28, 28, what="x")
    # resized whole with LANCZOS, exactly as Pillow does it
    picture = (np.add.outer(np.arange(20), np.arange(30)) * 3).astype(np.uint8)
    expected = np.asarray(Image.fromarray(picture).resize((15, 10), Image.Resampling.LANCZOS))
    got = image.decode_image(png_bytes(picture), 10, 15, dark_background=False)
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    # a JPEG: decoded in draft mode at the smallest scale still at least the target, then resized
    jpeg = io.BytesIO()
    Image.fromarray(np.repeat(np.repeat(picture, 8, 0), 8, 1)).save(jpeg, "JPEG", quality=95)
    with Image.open(io.BytesIO(jpeg.getvalue())) as img:
        img.draft("L", (15, 10))
        want = np.asarray(img.convert("L").resize((15, 10), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(image.decode_image(jpeg.getvalue(), 10, 15, dark_background=False), want)
    # a drawing laid out (layout mnist) keeps every decoded pixel: no draft, no resize before the layout
    drawing = np.zeros((160, 120), np.uint8)
    drawing[20:140, 50:70] = 255
    jpeg = io.BytesIO()
    Image.fromarray(drawing).save(jpeg, "JPEG", quality=95)
    full = np.asarray(Image.open(io.BytesIO(jpeg.getvalue())).convert("L"))
    np.testing.assert_array_equal(image.decode_image(jpeg.getvalue(), 28, 28, layout="mnist"), image.mnist_style(full))
    # without Pillow: every PNM kind, grey or RGB as asked
    monkeypatch.setattr(image, "_pillow", lambda: None)
    rgb = PIXELS[..., :3] // 2
    for data in (b"P6 7 5 255\n" + rgb.tobytes(), b"P3 7 5 255\n" + " ".join(map(str, rgb.reshape(-1))).encode()):
        np.testing.assert_array_equal(image.decode_image(data, 5, 7, channels=3), rgb)
        assert image.decode_image(data, 5, 7).shape == (5, 7)
    grey = rgb[..., 0]
    for data in (b"P5 7 5 255\n" + grey.tobytes(), b"P2 7 5 255\n" + " ".join(map(str, grey.reshape(-1))).encode()):
        np.testing.assert_array_equal(image.decode_image(data, 5, 7), grey)
    with pytest.raises(InputError, match=r"^scan.pgm: truncated PGM/PPM$"):
        image.decode_image(b"P5 7 5 255\n\0", 5, 7, what="scan.pgm")
