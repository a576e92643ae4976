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

import os

import numpy as np
from tokenizers import Tokenizer

from serving.errors import InputError
from serving.runner import ModelRunner

DEFAULT_MAX_TEXT_CHARS = 20_000


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def max_text_chars() -> int:
    return int(os.environ.get("EDGESTACK_MAX_TEXT_CHARS", DEFAULT_MAX_TEXT_CHARS))


class TextEncoder:
    """tokenizer.json -> padded int64 (input_ids, attention_mask), plus lengths and truncation flags."""

    def __init__(self, tokenizer_path, max_length: int):
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.max_length = max_length
        pad_token = "[PAD]" if self.tokenizer.token_to_id("[PAD]") is not None else None
        self.pad_id = self.tokenizer.token_to_id(pad_token) if pad_token else 0
        self.tokenizer.enable_truncation(max_length)
        # no `length`: pad to the longest text of each batch, not to max_length
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token=pad_token or "[PAD]")

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        truncated = np.asarray([bool(e.overflowing) for e in encodings])
        return input_ids, mask, mask.sum(axis=1), truncated


def check_texts(items, *, max_items: int, max_chars: int, what: str = "texts") -> list[str]:
    """Caller input -> a list of non-empty strings, or InputError saying what is wrong."""
    if not isinstance(items, list):
        raise InputError(f"`{what}` must be a list of strings, got {type(items).__name__}")
    if not items:
        raise InputError(f"`{what}` is an empty list: send at least one text")
    if len(items) > max_items:
        raise InputError(f"{len(items)} texts in one request; the limit is {max_items}", 413)
    for i, item in enumerate(items):
        where = what if what == "text" else f"{what}[{i}]"
        if not isinstance(item, str):
            raise InputError(f"{where} is {type(item).__name__}, not a string")
        if not item.strip():
            raise InputError(f"{where} is empty (or only whitespace)")
        if len(item) > max_chars:
            raise InputError(f"{where} has {len(item)} characters; the limit is {max_chars} "
                             "(EDGESTACK_MAX_TEXT_CHARS)", 413)
    return items


class TextClassifier(ModelRunner):
    def __init__(self, art, options=None, on_batch=None):
        super().__init__(art, options, on_batch=on_batch)
        pre = art.manifest["preprocessing"]
        self.encoder = TextEncoder(art.file(pre["tokenizer"]), pre["max_length"])
        self.max_chars = max_text_chars()
        names = self.session.input_names
        self._dtypes = {n: self.session.input_dtype(i) for i, n in enumerate(names)}

    @property
    def labels(self) -> list[str]:
        return self.artifact.manifest["labels"]

    def describe(self) -> dict:
        return {**super().describe(), "max_length_tokens": self.encoder.max_length,
                "max_text_chars": self.max_chars, "long_texts": "truncated to max_length_tokens (reported)"}

    def _run_rows(self, rows: np.ndarray) -> list[np.ndarray]:
        """A batch of texts (object array) -> [probabilities, tokens used, truncated]."""
        input_ids, mask, lengths, truncated = self.encoder(rows.tolist())
        feeds = {}
        for name, dtype in self._dtypes.items():
            if name == "input_ids":
                feeds[name] = input_ids.astype(dtype, copy=False)
            elif name == "attention_mask":
                feeds[name] = mask.astype(dtype, copy=False)
            elif name == "token_type_ids":
                feeds[name] = np.zeros_like(input_ids, dtype=dtype)
            else:
                raise RuntimeError(f"{self.name}: unexpected model input {name!r}")
        (logits,) = self.session.run(feeds)
        return [softmax(logits.astype(np.float64)).astype(np.float32), lengths, truncated]

    async def classify(self, texts: list[str], what: str = "texts") -> list[dict]:
        """Checked texts -> per text: label, probability per label, tokens read, truncated?"""
        texts = check_texts(texts, max_items=self.options.max_items, max_chars=self.max_chars, what=what)
        rows = np.empty(len(texts), dtype=object)
        rows[:] = texts
        probs, lengths, truncated = await self.batcher.submit(rows)
        labels = self.labels
        return [{"label": labels[int(np.argmax(p))], "score": float(np.max(p)),
                 "probabilities": {label: float(v) for label, v in zip(labels, p)},
                 "tokens": int(n), "truncated": bool(t)} for p, n, t in zip(probs, lengths, truncated)]

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """v2 tensor path: {"text": BYTES/str array, shape [N] or [N, 1]} -> {"probabilities": [N, C]}."""
        name = self.inputs[0]["name"]
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
        return {self.outputs[0]["name"]: probs}

    def warm_up(self) -> None:
        short = np.array(["warm up"], dtype=object)
        long = np.array(["warm up " * self.encoder.max_length] * min(8, self.options.max_batch), dtype=object)
        for rows in (short, long, short):
            self._run_rows(rows)
