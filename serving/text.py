"""Text classifier runner: tokenize with `tokenizers`, batch through ONNX Runtime, softmax.

No torch and no transformers: the artifact's `tokenizer.json` is read by the `tokenizers`
library (a small Rust extension) and the model is an ONNX graph. Concurrent requests are
merged by the adaptive batcher as *texts*; each merged batch is tokenized at once and padded
to its longest text (never to the maximum length), so short texts stay cheap.

Input rules (the same for the REST endpoint and the v2 tensor path):
- every item must be a non-empty string (400 otherwise);
- at most EDGESTACK_MAX_ITEMS texts per request (413 otherwise);
- at most EDGESTACK_MAX_TEXT_CHARS characters per text (default 20,000; 413 otherwise);
- texts longer than the model's max length in tokens (128) are truncated to it: the model
  reads the first 128 tokens, and the answer says so (`truncated: true`, `tokens`).
"""

from __future__ import annotations

import numpy as np

from edgestack.errors import InputError
from edgestack.families import text as processing
from edgestack.families.text import check_texts
from edgestack.settings import get_settings
from serving.runner import ModelRunner


class TextClassifier(ModelRunner):
    def __init__(self, art, options=None, on_batch=None):
        super().__init__(art, options, on_batch=on_batch)
        pre = art.meta.preprocessing
        self.encoder = processing.Encoder(art.file(pre.tokenizer), pre.max_length)
        self.classifier = processing.Classifier(self.session.session, self.encoder, self.labels)
        self.max_chars = get_settings().max_text_chars

    @property
    def labels(self) -> list[str]:
        return self.meta.labels

    def describe(self) -> dict:
        return {**super().describe(), "max_length_tokens": self.encoder.max_length,
                "max_text_chars": self.max_chars, "long_texts": "truncated to max_length_tokens (reported)"}

    def _run_rows(self, rows: np.ndarray) -> list[np.ndarray]:
        """A batch of texts (object array) -> [probabilities, tokens used, truncated]."""
        probs, lengths, truncated = self.classifier.run(rows.tolist())
        return [probs.astype(np.float32), lengths, truncated]

    async def classify(self, texts: list[str], what: str = "texts") -> list[dict]:
        """Checked texts -> per text: label, probability per label, tokens read, truncated?"""
        texts = check_texts(texts, max_items=self.options.max_items, max_chars=self.max_chars, what=what)
        rows = np.empty(len(texts), dtype=object)
        rows[:] = texts
        return processing.answers(*await self.batcher.submit(rows), self.labels)

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """v2 tensor path: {"text": BYTES/str array, shape [N] or [N, 1]} -> {"probabilities": [N, C]}."""
        name = self.meta.inputs[0].name
        if set(feeds) != {name}:
            raise InputError(f"{self.name} takes one input {name!r} (BYTES, shape [-1]); got {sorted(feeds)}")
        array = np.asarray(feeds[name])
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InputError(f"input {name!r} must have shape [-1] (or [-1, 1]), got {list(array.shape)}")
        texts = []
        for i, item in enumerate(array.tolist()):
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{name}[{i}] is not valid UTF-8") from None
            texts.append(item)
        texts = check_texts(texts, max_items=self.options.max_items, max_chars=self.max_chars, what=name)
        rows = np.empty(len(texts), dtype=object)
        rows[:] = texts
        probs, _, _ = await self.batcher.submit(rows)
        return {self.output_names[0]: probs}

    def warm_up(self) -> None:
        short = np.array(["warm up"], dtype=object)
        long = np.array(["warm up " * self.encoder.max_length] * min(8, self.options.max_batch), dtype=object)
        for rows in (short, long, short):
            self._run_rows(rows)
