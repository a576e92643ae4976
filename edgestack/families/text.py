"""The text family's processing: input checks, tokenization, the ONNX feeds, answers.

No torch and no transformers: `tokenizers` (a small Rust extension) reads the artifact's
tokenizer.json. Truncation to the model's max length (reported per text), padding to the
longest text of each batch (never to the maximum), [PAD] as pad token. The server
(serving/text.py), batch jobs (batch/text.py) and the edge runner use these, so they agree.

An int8 model with dynamic quantization scales its activations per call, so a text's
probabilities can differ in the last digits depending on which texts share its batch; the
label almost never does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import InputError, softmax, top_k


def check_texts(items, *, max_items: int | None = None, max_chars: int | None = None,
                what: str = "texts") -> list[str]:
    """Caller input -> a list of non-empty strings, or InputError saying what is wrong."""
    if not isinstance(items, list):
        raise InputError(f"`{what}` must be a list of strings, got {type(items).__name__}")
    if not items:
        raise InputError(f"`{what}` is an empty list: send at least one text")
    if max_items is not None and len(items) > max_items:
        raise InputError(f"{len(items)} texts in one request; the limit is {max_items}", 413)
    for i, item in enumerate(items):
        where = what if what == "text" else f"{what}[{i}]"
        if not isinstance(item, str):
            raise InputError(f"{where} is {type(item).__name__}, not a string")
        if not item.strip():
            raise InputError(f"{where} is empty (or only whitespace)")
        if max_chars is not None and len(item) > max_chars:
            raise InputError(f"{where} has {len(item)} characters; the limit is {max_chars} "
                             "(EDGESTACK_MAX_TEXT_CHARS)", 413)
    return items


class Encoder:
    """tokenizer.json (a path, or its JSON text) -> padded int64 input_ids and attention_mask,
    plus tokens read and truncation flags per text."""

    def __init__(self, tokenizer: str | Path, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = (Tokenizer.from_str(tokenizer) if isinstance(tokenizer, str) and tokenizer.lstrip().startswith("{")
                          else Tokenizer.from_file(str(tokenizer)))
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


class Classifier:
    """Texts -> probabilities through one ONNX Runtime session (an `onnxruntime.InferenceSession`)."""

    def __init__(self, session, encoder: Encoder, labels: list[str]):
        self.session, self.encoder, self.labels = session, encoder, labels
        self.input_names = [i.name for i in session.get_inputs()]
        unexpected = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unexpected:
            raise ValueError(f"unexpected text model inputs {sorted(unexpected)}")

    def run(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked texts (one ORT call) -> probabilities float64 [N, C], tokens read, truncated?"""
        input_ids, mask, lengths, truncated = self.encoder(texts)
        known = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        (logits,) = self.session.run(None, {name: known[name] for name in self.input_names})[:1]
        return softmax(logits.astype(np.float64)), lengths, truncated


def answers(probabilities: np.ndarray, lengths, truncated, labels: list[str], k: int | None = None) -> list[dict]:
    """Per text: label, score, probability per label, tokens read, truncated? (and the top-k when asked)."""
    out = []
    for row, n, cut in zip(np.asarray(probabilities, np.float32), lengths, truncated):
        best = int(np.argmax(row))
        answer = {"label": labels[best], "score": float(row[best]),
                  "probabilities": {label: float(v) for label, v in zip(labels, row)}}
        if k is not None:
            answer["top_k"] = top_k(row, labels, k, with_index=False)
        out.append({**answer, "tokens": int(n), "truncated": bool(cut)})
    return out
