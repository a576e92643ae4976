"""Image classifiers on the device: decode, preprocess like the server, run, top-k labels.

Needs numpy only. Reads .npy arrays, IDX files (MNIST layout, optionally .gz), PGM/PPM
and 8-bit PNG with its own small decoders; when Pillow happens to be installed it is used
instead (any format it reads, and resizing with the same filter as the server). Without
Pillow an image must already have the model's size.

The same functions serve `edgestack batch`, so a batch job, the server and a device give
the same answers for the same pixels.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
ARRAY_SUFFIXES = {".npy"}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


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


def decode_png(data: bytes) -> np.ndarray:
    """8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA, palette) -> uint8 grey [H, W]."""
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
    depth, color, interlace = header[8], header[9], header[12]
    if depth != 8 or interlace != 0 or color not in PNG_CHANNELS:
        raise ValueError(f"PNG with bit depth {depth}, colour type {color}, interlace {interlace}: "
                         "only 8-bit non-interlaced PNGs are decoded without Pillow (install Pillow for the rest)")
    channels = PNG_CHANNELS[color]
    stride = width * channels
    try:
        raw = zlib.decompress(b"".join(idat))
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
        return luma(palette[np.minimum(pixels[..., 0], len(palette) - 1)])
    if channels in (1, 2):
        return pixels[..., 0]
    return luma(pixels[..., :3])


def decode_pnm(data: bytes) -> np.ndarray:
    """PGM/PPM, binary (P5/P6) or text (P2/P3), maxval <= 255 -> uint8 grey [H, W]."""
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
    if maxval != 255:
        values = np.round(values.astype(np.float64) * 255 / maxval)
    pixels = values.astype(np.uint8).reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else luma(pixels)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def decode_image(data: bytes, height: int, width: int, *, dark_background: bool = True,
                 what: str = "image") -> np.ndarray:
    """Image file bytes -> uint8 [height, width] grey, light-on-dark like the training data.

    With Pillow: grey-scale, resize with LANCZOS (exactly what the server does). Without:
    the numpy PNG/PGM decoders, and the image must already be height x width."""
    if not data:
        raise ValueError(f"{what} is empty (0 bytes)")
    Image = _pillow()
    if Image is not None:
        import io

        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                grey = img.convert("L")
        except Image.DecompressionBombError:
            raise ValueError(f"{what} has too many pixels") from None
        except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError, ...
            if "cannot identify image file" in str(exc):
                raise ValueError(f"{what} is not an image in a format we read") from None
            raise ValueError(f"{what} is a damaged or truncated image ({exc})") from None
        if grey.size != (width, height):
            grey = grey.resize((width, height), Image.Resampling.LANCZOS)
        pixels = np.asarray(grey, dtype=np.uint8)
    else:
        if data.startswith(PNG_SIGNATURE):
            pixels = decode_png(data)
        elif data[:2] in (b"P2", b"P3", b"P5", b"P6"):
            pixels = decode_pnm(data)
        else:
            raise ValueError(f"{what} is not a PNG or PGM/PPM file (install Pillow to read other formats)")
        if pixels.shape != (height, width):
            raise ValueError(f"{what} is {pixels.shape[1]}x{pixels.shape[0]}; the model takes {width}x{height}: "
                             "resize it first, or install Pillow to resize as the server does")
    # The training data are light objects on a dark background: invert dark-on-light scans.
    if dark_background and pixels.mean() > 127:
        pixels = 255 - pixels
    return pixels


# ------------------------------------------------------------------- pre/post-processing


def check_pixels(pixels, height: int, width: int) -> np.ndarray:
    """[H, W], [N, H, W] or [N, 1, H, W] intensities 0..255 -> float32 [N, H, W]."""
    array = np.asarray(pixels)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1:] != (height, width):
        raise ValueError(f"pixels must have shape [{height}, {width}] or [N, {height}, {width}], got {list(np.shape(pixels))}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"pixels must be numbers, got {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise ValueError("pixels must be finite intensities in 0..255")
    return array


def to_model_input(pixels: np.ndarray, pre: dict) -> np.ndarray:
    """float [N, H, W] 0..255 -> the model's float32 [N, 1, H, W], as the manifest says."""
    x = (np.asarray(pixels, np.float32) * pre["scale"] - pre["mean"]) / pre["std"]
    return x[:, None].astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def read_inputs(paths: list[str], height: int, width: int, dark_background: bool = True):
    """Files -> (names, pixels [N, H, W] or None per failed file, errors {name: reason})."""
    names, images, errors = [], [], {}
    for path in map(Path, paths):
        try:
            if path.suffix == ".npy":
                array = check_pixels(np.load(path, allow_pickle=False), height, width)
                names += [f"{path}[{i}]" for i in range(len(array))] if len(array) > 1 else [str(path)]
                images += list(array)
            elif is_idx(path):
                array = check_pixels(read_idx(path), height, width)
                names += [f"{path}[{i}]" for i in range(len(array))]
                images += list(array)
            else:
                images.append(decode_image(path.read_bytes(), height, width, dark_background=dark_background,
                                           what=str(path)).astype(np.float32))
                names.append(str(path))
        except (OSError, ValueError) as exc:
            names.append(str(path))
            images.append(None)
            errors[str(path)] = str(exc)
    return names, images, errors


# --------------------------------------------------------- what the bundle maker reads

CLI_HELP = ("classify images: .npy arrays ([H, W] or [N, H, W], 0..255), IDX files, PGM/PPM and 8-bit PNG "
            "(any format Pillow reads, and any size, when Pillow is installed)")
LATENCY_UNIT = "1 image"
API_EXAMPLE = 'model.predict_files(["image.png"])      # or model.classify(pixels uint8 [N, H, W], top_k=3)'


def graphs(manifest: dict, variant: str) -> dict[str, str]:
    """Bundle graph role -> the artifact file it comes from."""
    return {"model": manifest["variants"][variant]["file"]}


def bundle_files(manifest: dict) -> list[str]:
    return []  # labels and preprocessing travel in the manifest


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files, .npy arrays or IDX files")
    parser.add_argument("--top-k", type=int, default=3, help="how many labels to show per input")


class Model:
    """An image classifier bundle: `classify(pixels)` and `predict_files(paths)`."""

    def __init__(self, bundle_dir: Path, manifest: dict, sessions: dict):
        self.bundle_dir, self.manifest, self.session = Path(bundle_dir), manifest, sessions["model"]
        self.pre = manifest["preprocessing"]
        self.height, self.width = self.pre["height"], self.pre["width"]
        self.labels = manifest["labels"]
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, pixels, batch: int = 256) -> np.ndarray:
        """pixels [N, H, W] (or [H, W]) 0..255 -> class probabilities float64 [N, classes]."""
        array = check_pixels(pixels, self.height, self.width)
        out = [softmax(self.session.run(None, {self.input_name: to_model_input(array[i:i + batch], self.pre)})[0]
                       .astype(np.float64)) for i in range(0, len(array), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def classify(self, pixels, top_k: int = 3) -> list[dict]:
        results = []
        for row in self.probabilities(pixels):
            best = np.argsort(-row, kind="stable")[:top_k]
            results.append({"label": self.labels[best[0]], "top_k": [
                {"label": self.labels[i], "index": int(i), "probability": float(row[i])} for i in best]})
        return results

    def predict_one(self, pixels) -> dict:
        """One image [H, W] -> its top label (the batch-1 path the benchmark times)."""
        return self.classify(pixels, top_k=1)[0]

    def predict_files(self, paths: list[str], top_k: int = 3) -> list[dict]:
        names, images, errors = read_inputs(paths, self.height, self.width, self.pre.get("dark_background", False))
        good = [i for i, image in enumerate(images) if image is not None]
        answers = iter(self.classify(np.stack([images[i] for i in good]), top_k) if good else [])
        return [{"input": name, **(next(answers) if image is not None else {"error": errors[name]})}
                for name, image in zip(names, images)]

    def run_cli(self, args) -> list[dict]:
        if not 1 <= args.top_k <= len(self.labels):
            raise ValueError(f"--top-k must be between 1 and {len(self.labels)}")
        return self.predict_files(args.inputs, args.top_k)

    @staticmethod
    def format_text(result: dict) -> str:
        if "error" in result:
            return f"{result['input']}: error: {result['error']}"
        scores = ", ".join(f"{s['label']} {s['probability']:.3f}" for s in result["top_k"])
        return f"{result['input']}: {result['label']}   ({scores})"


def example_input(manifest: dict, directory: Path) -> tuple[list[str], np.ndarray]:
    """A sample input file for benchmarks (a .npy frame, as a camera pipeline would hand over)."""
    height, width = manifest["preprocessing"]["height"], manifest["preprocessing"]["width"]
    y, x = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((y - height / 2) / (height / 4)) ** 2 + ((x - width / 2) / (width / 5)) ** 2))
    pixels = (255 * blob).astype(np.uint8)
    path = Path(directory) / "example.npy"
    np.save(path, pixels)
    return [str(path)], pixels
