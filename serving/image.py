"""Image classifier runner: uploads or pixel arrays through the image family's processing, batched on ORT.

Uploads are decoded off the event loop, in a small pool of their own (DECODER): a request's
images are one job, decoded in order, stopping at the first bad one. Every image's size is
checked from its header before its pixels are decoded (edgestack/families/image.py,
MAX_IMAGE_PIXELS), so a decompression bomb costs a header read and gets 413. When more
than MAX_DECODE_JOBS requests wait for the pool, the next one gets 503 + Retry-After at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from edgestack.errors import InputError
from edgestack.families import image as processing
from serving.limits import BoundedPool
from serving.runner import ModelRunner, ModelView

DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
MAX_DECODE_JOBS = 64  # requests decoding or waiting to; beyond: 503


DECODER = BoundedPool("decode", DECODE_THREADS, MAX_DECODE_JOBS, "decoding images")


def upload_bytes(image: bytes | str | Path) -> bytes:
    """An upload as its bytes: BentoML hands endpoints temporary file paths, Ray the bytes."""
    return image if isinstance(image, bytes) else Path(image).read_bytes()


class ImageRequests(ModelView):
    """An image classifier's request side (manifest only): decoding uploads, checking pixel arrays."""

    @property
    def size(self) -> tuple[int, int]:
        pre = self.meta.preprocessing
        return pre.height, pre.width

    @property
    def channels(self) -> int:
        return self.meta.preprocessing.channels or 1

    @cached_property
    def preprocessing(self) -> dict:
        """The manifest's preprocessing as the image family's processing takes it (a dict)."""
        return self.meta.preprocessing.to_dict()

    def decode_image(self, data: bytes, what: str = "upload") -> np.ndarray:
        """PNG/JPEG/... bytes -> uint8 [H, W] grey, light-on-dark like the training data, laid
        out as the manifest's `drawn_layout` says (digits-cnn: as MNIST was made)."""
        return processing.decode_image(data, *self.size, what=what, layout=self.meta.preprocessing.drawn_layout,
                                       dark_background=self.meta.preprocessing.dark_background,
                                       channels=self.channels)

    def decode_all(self, images: Sequence[bytes | str | Path]) -> np.ndarray:
        """Uploads -> uint8 [N, H, W], in order; the first bad one's InputError (blocking)."""
        return np.stack([self.decode_image(upload_bytes(image), f"upload #{i + 1}") for i, image in enumerate(images)])

    async def decode_images(self, images: Sequence[bytes | str | Path]) -> np.ndarray:
        """decode_all() on the decoding pool, off the event loop."""
        return await DECODER.run(self.decode_all, images)

    def pixels_from_array(self, values, layout: str | None = None) -> np.ndarray:
        """A nested list of pixel intensities 0..255: [H, W], [N, H, W] or [N, 1, H, W]; with a
        `layout` ("mnist"), drawings of any size, laid out at the model's size."""
        return processing.check_drawings(values, *self.size, layout, channels=self.channels)

    def image_info(self) -> dict:
        """What a client (the playground) needs to know of the input: size, channels, and
        whether drawn input fits (the manifest lays drawings out: `drawn_layout`)."""
        height, width = self.size
        return {"height": height, "width": width, "channels": self.channels,
                "drawing": self.meta.preprocessing.drawn_layout is not None}


class ImageClassifier(ImageRequests, ModelRunner):
    def describe(self) -> dict:
        return {**super().describe(), "image": self.image_info()}

    async def classify(self, pixels: np.ndarray, top_k: int = 3, return_input: bool = False) -> list[dict]:
        """pixels [N, H, W] 0..255 -> per image: top-k labels with probabilities; with
        `return_input`, also `input`: the image as the model saw it ([H][W] 0..255 integers)."""
        labels = self.meta.labels
        processing.check_top_k(top_k, labels)
        if len(pixels) > self.options.max_items:
            raise InputError(f"{len(pixels)} images in one request; the limit is {self.options.max_items}", 413)
        (logits,) = await self.batcher.submit(processing.to_model_input(pixels, self.preprocessing))
        predictions = processing.classify(processing.probabilities(logits), labels, top_k)
        if return_input:
            for prediction, image in zip(predictions, pixels):
                prediction["input"] = np.asarray(image).round().clip(0, 255).astype(np.uint8).tolist()
        return predictions

    def warm_up(self) -> None:
        height, width = self.size
        for batch in (1, min(8, self.options.max_batch)):
            self._run_rows(np.zeros((batch, self.channels, height, width), np.float32))
