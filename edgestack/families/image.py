"""The image family's processing: decode, check and preprocess pixels, top-k labels.

Needs numpy only. Reads .npy arrays, IDX files (MNIST layout, optionally .gz), PGM/PPM
and 8-bit PNG with its own small decoders; when Pillow is installed (the server always has
it) it is used instead: any format it reads, resized with LANCZOS. Without Pillow an image
must already have the model's size.

The server (serving/image.py), batch jobs (batch/image.py), the Python client's v2 path,
training's IDX reader and the edge runner all use these functions, so they give the same
answers for the same pixels. Errors are InputError (a ValueError) with the HTTP status.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from .common import InputError, check_top_k, softmax, top_k

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
ARRAY_SUFFIXES = {".npy"}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# The one limit on an image's size, checked from its header before any pixel is decoded (413 above):
# 4096 x 4096, so a 12-megapixel phone photo passes; a 12 KB 1-bit PNG of 10000 x 9999 does not.
# Pillow's own bomb check uses it too, with its warnings turned into errors (decode_image).
MAX_IMAGE_PIXELS = 4096 * 4096


def is_idx(path: Path) -> bool:
    name = Path(path).name
    return "idx" in name and ("ubyte" in name or name.endswith((".idx", ".idx.gz")))


# ---------------------------------------------------------------------------- readers


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped), checking the magic number and the size."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(IDX_DTYPES[data[2]]), data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{path}: IDX header says {shape} ({expected} bytes), file has {len(data) - offset}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def luma(rgb: np.ndarray) -> np.ndarray:
    """RGB -> grey exactly as Pillow's convert('L') does it (ITU-R 601-2, integer rounding)."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def colour(pixels: np.ndarray, rgb: bool) -> np.ndarray:
    """uint8 [H, W, 1..4] (grey, grey+alpha, RGB, RGBA) -> grey [H, W] (rgb False, as Pillow's
    convert('L')) or [H, W, 3] (rgb True, as convert('RGB'): alpha dropped, grey repeated)."""
    if pixels.shape[-1] in (1, 2):
        grey = pixels[..., 0]
        return np.repeat(grey[..., None], 3, axis=-1) if rgb else grey
    return pixels[..., :3] if rgb else luma(pixels[..., :3])


def decode_png(data: bytes, rgb: bool = False) -> np.ndarray:
    """8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA, palette) -> uint8 grey [H, W]
    (or RGB [H, W, 3] with `rgb`)."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    pos, header, palette, idat = 8, None, None, []
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG (a chunk ends early)")
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None or len(header) < 13 or not idat:
        raise ValueError("damaged PNG (no IHDR or no image data)")
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    check_pixel_count(width, height)
    depth, color, interlace = header[8], header[9], header[12]
    if depth != 8 or interlace != 0 or color not in PNG_CHANNELS:
        raise ValueError(f"PNG with bit depth {depth}, colour type {color}, interlace {interlace}: "
                         "only 8-bit non-interlaced PNGs are decoded without Pillow (install Pillow for the rest)")
    channels = PNG_CHANNELS[color]
    stride = width * channels
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), height * (stride + 1) + 1)  # never more than it needs
    except zlib.error as exc:
        raise ValueError(f"damaged PNG ({exc})") from None
    if len(raw) != height * (stride + 1):
        raise ValueError("damaged or truncated PNG (image data has the wrong size)")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.int32)
    previous = np.zeros(stride, np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            current = line
        elif kind == 1:  # Sub: running sum per channel, modulo 256
            current = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            current = (line + previous) % 256
        elif kind in (3, 4):  # Average, Paeth: depend on the reconstructed left pixel
            current = np.zeros(stride, np.int32)
            left = np.zeros(channels, np.int32)
            up_left = np.zeros(channels, np.int32)
            for x in range(width):
                s = slice(x * channels, (x + 1) * channels)
                up = previous[s]
                predictor = (left + up) // 2 if kind == 3 else _paeth(left, up, up_left)
                current[s] = (line[s] + predictor) % 256
                left, up_left = current[s], up
        else:
            raise ValueError(f"damaged PNG (unknown filter type {kind})")
        out[y], previous = current, current
    pixels = out.astype(np.uint8).reshape(height, width, channels)
    if color == 3:
        if palette is None:
            raise ValueError("damaged PNG (palette image without a palette)")
        return colour(palette[np.minimum(pixels[..., 0], len(palette) - 1)], rgb)
    return colour(pixels, rgb)


def decode_pnm(data: bytes, rgb: bool = False) -> np.ndarray:
    """PGM/PPM, binary (P5/P6) or text (P2/P3), maxval <= 255 -> uint8 grey [H, W] (or RGB
    [H, W, 3] with `rgb`)."""
    magic = data[:2]
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        raise ValueError("not a PGM/PPM file")
    tokens, pos = [], 2
    pattern = re.compile(rb"\s*(?:#[^\n]*\n\s*)*(\d+)")
    for _ in range(3):
        match = pattern.match(data, pos)
        if not match:
            raise ValueError("damaged PGM/PPM header")
        tokens.append(int(match.group(1)))
        pos = match.end()
    width, height, maxval = tokens
    check_pixel_count(width, height)
    channels = 3 if magic in (b"P3", b"P6") else 1
    if not 0 < maxval < 256:
        raise ValueError(f"PGM/PPM with maxval {maxval}: only 8-bit files are decoded without Pillow")
    count = width * height * channels
    if magic in (b"P5", b"P6"):
        body = data[pos + 1: pos + 1 + count]
        if len(body) != count:
            raise ValueError("truncated PGM/PPM")
        values = np.frombuffer(body, np.uint8)
    else:
        values = np.array(data[pos:].split()[:count], dtype=np.int64)
        if len(values) != count:
            raise ValueError("truncated PGM/PPM")
    if count and (values.min() < 0 or values.max() > maxval):  # else they would wrap around modulo 256
        raise ValueError(f"PGM/PPM values must be 0..{maxval} (its maxval)")
    if maxval != 255:
        values = np.round(values.astype(np.float64) * 255 / maxval)
    pixels = values.astype(np.uint8).reshape(height, width, channels)
    return colour(pixels, rgb)


def check_pixel_count(width: int, height: int, what: str = "the image") -> None:
    """Refuse (413) an image larger than MAX_IMAGE_PIXELS, from the size its header declares."""
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{what} is {width}x{height} = {width * height:,} pixels; the limit is "
                         f"{MAX_IMAGE_PIXELS:,} (4096x4096): scale it down first", 413)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    if Image.MAX_IMAGE_PIXELS != MAX_IMAGE_PIXELS:
        import warnings

        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        # Pillow only warns between 1x and 2x its limit, and decodes anyway: an error instead (413).
        warnings.simplefilter("error", Image.DecompressionBombWarning)
    return Image


def decode_image(data: bytes, height: int, width: int, *, dark_background: bool = True,
                 what: str = "image", layout: str | None = None, channels: int = 1) -> np.ndarray:
    """Image file bytes -> uint8 [height, width] grey (channels 1), light-on-dark like the
    training data, or [height, width, 3] RGB (channels 3).

    With Pillow: grey-scale or RGB, resized whole with LANCZOS (large JPEGs are first decoded
    at a reduced scale no smaller than the target: Pillow's draft mode). Without: the numpy
    PNG/PGM decoders, and the image must already be height x width. `layout` "mnist" (a model
    whose manifest says `drawn_layout: mnist`): the image keeps its size and goes through
    lay_out() instead. Training reads image folders through this function too, so a model
    sees a file exactly as it was trained to."""
    check_layout(layout)
    check_channels(channels)
    keep_size = layout == "mnist"
    if not data:
        raise InputError(f"{what} is empty (0 bytes)")
    mode = "L" if channels == 1 else "RGB"
    Image = _pillow()
    if Image is not None:
        import io

        from PIL import UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                check_pixel_count(*img.size, what=what)
                if not keep_size:
                    img.draft(mode, (width, height))  # JPEG: decode at 1/2, 1/4, 1/8 when still >= the target
                img.load()
                picture = img.convert(mode)
        except UnidentifiedImageError:
            raise InputError(f"{what} is not an image in a format we read (PNG, JPEG, GIF, BMP, TIFF, WebP)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{what} has more pixels than allowed; the limit is {MAX_IMAGE_PIXELS:,} (4096x4096): "
                             "scale it down first", 413) from None
        except InputError:
            raise
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"{what} is a damaged or truncated image ({exc})") from None
        if picture.size != (width, height) and not keep_size:
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        pixels = np.asarray(picture, dtype=np.uint8)
    else:
        try:
            if data.startswith(PNG_SIGNATURE):
                pixels = decode_png(data, rgb=channels == 3)
            elif data[:2] in (b"P2", b"P3", b"P5", b"P6"):
                pixels = decode_pnm(data, rgb=channels == 3)
            else:
                raise InputError(f"{what} is not a PNG or PGM/PPM file (install Pillow to read other formats)")
        except InputError:
            raise
        except ValueError as exc:
            raise InputError(f"{what}: {exc}") from None
        if pixels.shape[:2] != (height, width) and not keep_size:
            raise InputError(f"{what} is {pixels.shape[1]}x{pixels.shape[0]}; the model takes {width}x{height}: "
                             "resize it first, or install Pillow to resize as the server does")
    # The datasets are light objects on a dark background; a photo or scan of dark ink
    # on white paper is inverted so that it looks like them.
    if dark_background and pixels.mean() > 127:
        pixels = 255 - pixels
    return lay_out(pixels, layout, height, width)


def check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise InputError(f"images have 1 (grey) or 3 (RGB) channels; got {channels}")
    return channels


def model_size(pre: dict) -> tuple[int, int, int]:
    """(height, width, channels) of an image model, from its manifest's preprocessing."""
    return pre["height"], pre["width"], pre.get("channels") or 1


# ------------------------------------------------------------------- pre/post-processing


LAYOUTS = {
    None: "the image as it is (pixels: already the model's size; files: resized whole)",
    "mnist": "a drawing or photo of one digit, any size: cropped to its ink, longer side fitted "
             "in 20/28 of the frame, centred by mass (mnist_style), as MNIST was made",
}
MAX_DRAWING_SIDE = 2048  # pixels sent as a drawing (layout "mnist") may be up to this many per side


def check_layout(layout: str | None) -> str | None:
    if layout not in LAYOUTS:
        raise InputError(f"`layout` must be one of {[k for k in LAYOUTS if k]} or left out; got {layout!r}")
    return layout


def lay_out(pixels: np.ndarray, layout: str | None, height: int, width: int) -> np.ndarray:
    """The one place a layout is applied: [H', W'] 0..255 -> uint8 [height, width].
    "mnist" scales the ink's longer side to 20/28 of the frame, as MNIST's 20 of 28."""
    if check_layout(layout) == "mnist":
        if height != width:
            raise InputError(f"layout 'mnist' needs a square model input; this model takes {width}x{height}")
        return mnist_style(pixels, box=round(height * 20 / 28), size=height)
    return np.asarray(pixels).clip(0, 255).astype(np.uint8)


def check_drawings(values, height: int, width: int, layout: str | None, what: str = "`pixels`",
                   channels: int = 1) -> np.ndarray:
    """check_pixels(), except that with a layout the images may have any size (up to
    MAX_DRAWING_SIDE per side) and come back laid out at the model's size: float32 [N, H, W]."""
    if check_layout(layout) is None:
        return check_pixels(values, height, width, what, channels)
    if channels != 1:
        raise InputError("`layout` applies to grey models only; this model takes RGB images")
    drawings = check_pixels(values, None, None, what)
    return np.stack([lay_out(d, layout, height, width) for d in drawings]).astype(np.float32)


def check_pixels(values, height: int | None, width: int | None, what: str = "`pixels`",
                 channels: int = 1) -> np.ndarray:
    """Intensities 0..255 as [H, W], [N, H, W] or [N, 1, H, W] (nested lists or an array)
    -> float32 [N, H, W]; InputError saying what is wrong otherwise. height and width None:
    any size up to MAX_DRAWING_SIDE (drawings that a layout fits to the model). channels 3
    (RGB models): [H, W, 3], [N, H, W, 3] or [N, 3, H, W] -> float32 [N, H, W, 3]."""
    if values is None:
        raise InputError(f"no input: send {what} (0..255 intensities) or upload images")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(f"{what} must be a rectangular nested list of numbers "
                         "(ragged rows or non-numeric values found)") from None
    if check_channels(channels) == 3:
        return _check_values(_rgb_shape(array, height, width, what, np.shape(values)), what)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if height is None:  # a drawing: any size
        if array.ndim != 3:
            raise InputError(f"{what} must have shape [H, W] or [N, H, W]; got {list(np.shape(values))}")
        if max(array.shape[1:]) > MAX_DRAWING_SIDE:
            raise InputError(f"{what}: a drawing may have at most {MAX_DRAWING_SIDE} pixels per side; "
                             f"got {list(array.shape[1:])}", 413)
    elif array.ndim != 3 or array.shape[1:] != (height, width):
        raise InputError(f"{what} must have shape [{height}, {width}], [N, {height}, {width}] or "
                         f"[N, 1, {height}, {width}]; got {list(np.shape(values))}")
    return _check_values(array, what)


def _check_values(array: np.ndarray, what: str) -> np.ndarray:
    if array.size == 0:
        raise InputError(f"{what} holds no images (or no pixels)")
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or infinity")
    if array.min() < 0 or array.max() > 255:
        raise InputError(f"{what} must be intensities in 0..255; got range [{array.min():g}, {array.max():g}]")
    return array.astype(np.float32)


def _rgb_shape(array: np.ndarray, height: int, width: int, what: str, given) -> np.ndarray:
    """[H, W, 3], [N, H, W, 3] or [N, 3, H, W] -> [N, H, W, 3]; InputError for anything else."""
    if array.ndim == 3:
        array = array[None]
    if array.ndim == 4 and array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)  # [N, 3, H, W], the model's layout
    if array.ndim != 4 or array.shape[1:] != (height, width, 3):
        raise InputError(f"{what} must have shape [{height}, {width}, 3], [N, {height}, {width}, 3] or "
                         f"[N, 3, {height}, {width}] (RGB); got {list(given)}")
    return array


def resample(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """float [H, W] -> float [height, width] with a triangle (bilinear) filter widened by the
    reduction factor, as Pillow's antialiased BILINEAR does. numpy only, so the server (with
    Pillow) and an edge device (without) lay a drawing out to the same pixels."""
    def weights(size_in: int, size_out: int) -> np.ndarray:
        scale = size_in / size_out
        support = max(scale, 1.0)
        centres = (np.arange(size_out) + 0.5) * scale - 0.5
        w = np.clip(1 - np.abs(np.arange(size_in)[None, :] - centres[:, None]) / support, 0, None)
        return w / w.sum(axis=1, keepdims=True)

    return weights(pixels.shape[0], height) @ pixels @ weights(pixels.shape[1], width).T


def mnist_style(pixels: np.ndarray, *, box: int = 20, size: int = 28, ink: float = 0.1) -> np.ndarray:
    """A drawn or photographed digit (light ink on dark, uint8 [H, W]) laid out the way MNIST
    was made: cropped to the ink, scaled so its longer side is `box` pixels (aspect kept,
    resample()), then placed in a `size` x `size` frame with its centre of mass in the middle.
    An image without ink comes back as an empty frame."""
    grey = np.asarray(pixels, dtype=np.float64)
    mask = grey > ink * max(float(grey.max()), 1.0)
    frame = np.zeros((size, size), np.float64)
    if not mask.any():
        return frame.astype(np.uint8)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = box / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = resample(crop, height, width)
    total = small.sum()
    cy, cx = ((np.arange(height)[:, None] * small).sum() / total, (np.arange(width)[None, :] * small).sum() / total)
    top = min(max(round(size / 2 - 0.5 - cy), 0), size - height)
    left = min(max(round(size / 2 - 0.5 - cx), 0), size - width)
    frame[top:top + height, left:left + width] = small
    return frame.round().clip(0, 255).astype(np.uint8)


def to_model_input(pixels: np.ndarray, pre: dict) -> np.ndarray:
    """float [N, H, W] 0..255 -> the model's float32 [N, 1, H, W], as the manifest says;
    RGB [N, H, W, 3] -> [N, 3, H, W]. (A model trained on its data's own mean and std per
    channel does that standardisation inside its graph: the manifest then says scale 1/255,
    mean 0, std 1 and records the statistics under `normalization`.)"""
    x = (np.asarray(pixels, np.float32) * pre["scale"] - pre["mean"]) / pre["std"]
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    return x[:, None].astype(np.float32)


def classify(probabilities: np.ndarray, labels: list[str], k: int = 3) -> list[dict]:
    """Probabilities [N, C] -> per image: the top label and the top-k with probabilities."""
    k = check_top_k(k, labels)
    results = []
    for row in probabilities:
        best = top_k(row, labels, k)
        results.append({"label": best[0]["label"], "top_k": best})
    return results


def probabilities(logits: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(logits, np.float64))


def read_inputs(paths: list[str], height: int, width: int, dark_background: bool = True, layout: str | None = None,
                channels: int = 1):
    """Files -> (names, pixels [N, H, W] (RGB: [N, H, W, 3]) or None per failed file, errors
    {name: reason}). `layout` (the manifest's drawn_layout) applies to image files, not to
    arrays and IDX."""
    names, images, errors = [], [], {}
    for path in map(Path, paths):
        try:
            if path.suffix == ".npy":
                array = check_pixels(np.load(path, allow_pickle=False), height, width, what=str(path),
                                     channels=channels)
                names += [f"{path}[{i}]" for i in range(len(array))] if len(array) > 1 else [str(path)]
                images += list(array)
            elif is_idx(path):
                array = check_pixels(read_idx(path), height, width, what=str(path), channels=channels)
                names += [f"{path}[{i}]" for i in range(len(array))]
                images += list(array)
            else:
                images.append(decode_image(path.read_bytes(), height, width, dark_background=dark_background,
                                           what=str(path), layout=layout, channels=channels).astype(np.float32))
                names.append(str(path))
        except (OSError, ValueError) as exc:
            names.append(str(path))
            images.append(None)
            errors[str(path)] = str(exc)
    return names, images, errors


def format_result(result: dict) -> str:
    """One line per input for people: `name: label   (label p, label p, ...)`, or its error."""
    if "error" in result:
        return f"{result['input']}: error: {result['error']}"
    scores = ", ".join(f"{s['label']} {s['probability']:.3f}" for s in result["top_k"])
    return f"{result['input']}: {result['label']}   ({scores})"
