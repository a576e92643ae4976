"""Image classifier runner: decode uploads or pixel arrays, batch through ORT, top-k labels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from serving.errors import InputError
from serving.runner import ModelRunner

Image.MAX_IMAGE_PIXELS = 50_000_000  # decompression-bomb guard: refuse absurd dimensions


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class ImageClassifier(ModelRunner):
    @property
    def size(self) -> tuple[int, int]:
        pre = self.artifact.manifest["preprocessing"]
        return pre["height"], pre["width"]

    def decode_image(self, data: bytes, what: str = "upload") -> np.ndarray:
        """PNG/JPEG/... bytes -> uint8 [H, W] grey, light-on-dark like the training data."""
        if not data:
            raise InputError(f"{what} is empty (0 bytes)")
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                grey = img.convert("L")
        except UnidentifiedImageError:
            raise InputError(f"{what} is not an image in a format we read (PNG, JPEG, GIF, BMP, TIFF, WebP)") from None
        except Image.DecompressionBombError:
            raise InputError(f"{what} has too many pixels (limit {Image.MAX_IMAGE_PIXELS})", 413) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"{what} is a damaged or truncated image ({exc})") from None
        height, width = self.size
        if grey.size != (width, height):
            grey = grey.resize((width, height), Image.Resampling.LANCZOS)
        pixels = np.asarray(grey, dtype=np.uint8)
        # The datasets are light objects on a dark background; a photo or scan of dark ink
        # on white paper is inverted so that it looks like them.
        if self.artifact.manifest["preprocessing"].get("dark_background") and pixels.mean() > 127:
            pixels = 255 - pixels
        return pixels

    def pixels_from_array(self, values) -> np.ndarray:
        """A nested list of pixel intensities 0..255: [H, W], [N, H, W] or [N, 1, H, W]."""
        if values is None:
            raise InputError("no input: send `pixels` (0..255 intensities) or upload images")
        try:
            array = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError("`pixels` must be a rectangular nested list of numbers "
                             "(ragged rows or non-numeric values found)") from None
        height, width = self.size
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3 or array.shape[1:] != (height, width):
            raise InputError(f"`pixels` must have shape [{height}, {width}], [N, {height}, {width}] or "
                             f"[N, 1, {height}, {width}]; got {list(np.shape(values))}")
        if array.shape[0] == 0:
            raise InputError("`pixels` holds no images")
        if not np.isfinite(array).all():
            raise InputError("`pixels` contains NaN or infinity")
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"`pixels` must be intensities in 0..255; got range "
                             f"[{array.min():g}, {array.max():g}]")
        return array

    def to_model_input(self, pixels: np.ndarray) -> np.ndarray:
        pre = self.artifact.manifest["preprocessing"]
        x = (np.asarray(pixels, np.float32) * pre["scale"] - pre["mean"]) / pre["std"]
        return x[:, None].astype(np.float32)

    async def classify(self, pixels: np.ndarray, top_k: int = 3) -> list[dict]:
        """pixels [N, H, W] 0..255 -> per image: top-k labels with probabilities."""
        labels = self.artifact.manifest["labels"]
        if not 1 <= top_k <= len(labels):
            raise InputError(f"top_k must be between 1 and {len(labels)}, got {top_k}")
        if len(pixels) > self.options.max_items:
            raise InputError(f"{len(pixels)} images in one request; the limit is {self.options.max_items}", 413)
        (logits,) = await self.batcher.submit(self.to_model_input(pixels))
        probs = softmax(logits.astype(np.float64))
        results = []
        for row in probs:
            best = np.argsort(-row)[:top_k]
            results.append({"label": labels[best[0]], "top_k": [
                {"label": labels[i], "index": int(i), "probability": float(row[i])} for i in best]})
        return results

    def warm_up(self) -> None:
        height, width = self.size
        for batch in (1, min(8, self.options.max_batch)):
            self._run_rows(np.zeros((batch, 1, height, width), np.float32))
