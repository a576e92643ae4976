"""Image classifier runner: uploads or pixel arrays through the image family's processing, batched on ORT."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from edgestack.errors import InputError
from edgestack.families import image as processing
from serving.runner import ModelRunner, ModelView


class ImageRequests(ModelView):
    """An image classifier's request side (manifest only): decoding uploads, checking pixel arrays."""

    @property
    def size(self) -> tuple[int, int]:
        pre = self.meta.preprocessing
        return pre.height, pre.width

    @cached_property
    def preprocessing(self) -> dict:
        """The manifest's preprocessing as the image family's processing takes it (a dict)."""
        return self.meta.preprocessing.to_dict()

    def decode_image(self, data: bytes, what: str = "upload") -> np.ndarray:
        """PNG/JPEG/... bytes -> uint8 [H, W] grey, light-on-dark like the training data."""
        return processing.decode_image(data, *self.size, what=what,
                                       dark_background=self.meta.preprocessing.dark_background)

    def pixels_from_array(self, values) -> np.ndarray:
        """A nested list of pixel intensities 0..255: [H, W], [N, H, W] or [N, 1, H, W]."""
        return processing.check_pixels(values, *self.size)


class ImageClassifier(ImageRequests, ModelRunner):
    async def classify(self, pixels: np.ndarray, top_k: int = 3) -> list[dict]:
        """pixels [N, H, W] 0..255 -> per image: top-k labels with probabilities."""
        labels = self.meta.labels
        processing.check_top_k(top_k, labels)
        if len(pixels) > self.options.max_items:
            raise InputError(f"{len(pixels)} images in one request; the limit is {self.options.max_items}", 413)
        (logits,) = await self.batcher.submit(processing.to_model_input(pixels, self.preprocessing))
        return processing.classify(processing.probabilities(logits), labels, top_k)

    def warm_up(self) -> None:
        height, width = self.size
        for batch in (1, min(8, self.options.max_batch)):
            self._run_rows(np.zeros((batch, 1, height, width), np.float32))
