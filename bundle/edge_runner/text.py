"""Text classifiers (sentiment, topic) on the device: tokenize, run, softmax, labels.

Needs onnxruntime, numpy and `tokenizers` (the small Rust tokenizer library that reads the
bundle's tokenizer.json; no torch, no transformers). Tokenization follows the server
(serving/text_classifier.py): truncation to the model's max length, padding to the longest
text of the batch, [PAD] as pad token. As on the server, an int8 model with dynamic
quantization scales its activations per call, so a text's probabilities can differ in the
last digits depending on which texts share its batch; the label almost never does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REQUIRES = ("onnxruntime", "numpy", "tokenizers")
CLI_HELP = "classify texts: give them with --text (repeatable) or as text files, one text per line"
LATENCY_UNIT = "1 text"
API_EXAMPLE = 'model.classify(["a warm, funny film", "dull and far too long"])'


def graphs(manifest: dict, variant: str) -> dict[str, str]:
    return {"model": manifest["variants"][variant]["file"]}


def bundle_files(manifest: dict) -> list[str]:
    return [manifest["preprocessing"]["tokenizer"]]


def add_arguments(parser) -> None:
    parser.add_argument("text_files", nargs="*", help="text files, one text per line (blank lines skipped)")
    parser.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    parser.add_argument("--top-k", type=int, default=3, help="how many labels to show per text")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Encoder:
    """tokenizer.json (a path or its JSON text) -> padded int64 input_ids and attention_mask."""

    def __init__(self, tokenizer: str | Path, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = (Tokenizer.from_file(str(tokenizer)) if isinstance(tokenizer, Path)
                          else Tokenizer.from_str(tokenizer))
        self.max_length = max_length
        pad_token = "[PAD]" if self.tokenizer.token_to_id("[PAD]") is not None else None
        self.pad_id = self.tokenizer.token_to_id(pad_token) if pad_token else 0
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token=pad_token or "[PAD]")

    def __call__(self, texts: list[str]):
        encodings = self.tokenizer.encode_batch(list(texts))
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        truncated = np.asarray([bool(e.overflowing) for e in encodings])
        return input_ids, mask, mask.sum(axis=1), truncated


def check_text(text) -> str:
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty (or only whitespace)")
    return text


class Classifier:
    """Texts -> probabilities with one ORT session (shared by the device Model and batch jobs)."""

    def __init__(self, session, encoder: Encoder, labels: list[str]):
        self.session, self.encoder, self.labels = session, encoder, labels
        self.input_names = [i.name for i in session.get_inputs()]

    def run(self, texts: list[str]):
        """Checked texts (one ORT call) -> probabilities float64 [N, C], tokens read, truncated?"""
        input_ids, mask, lengths, truncated = self.encoder(texts)
        feeds = {}
        for name in self.input_names:
            feeds[name] = {"input_ids": input_ids, "attention_mask": mask}.get(name, np.zeros_like(input_ids))
        (logits,) = self.session.run(None, feeds)[:1]
        return softmax(logits.astype(np.float64)), lengths, truncated


class Model:
    """A text classifier bundle: `classify(texts)`."""

    def __init__(self, bundle_dir: Path, manifest: dict, sessions: dict):
        self.bundle_dir, self.manifest = Path(bundle_dir), manifest
        pre = manifest["preprocessing"]
        self.labels = manifest["labels"]
        self.classifier = Classifier(sessions["model"], Encoder(self.bundle_dir / pre["tokenizer"], pre["max_length"]),
                                     self.labels)

    def classify(self, texts: list[str], top_k: int = 3, batch: int = 64) -> list[dict]:
        texts = [check_text(t) for t in texts]
        results = []
        for start in range(0, len(texts), batch):
            probs, lengths, truncated = self.classifier.run(texts[start:start + batch])
            # the server's answer (label, score, probabilities per label), plus the top-k
            for row, n, cut in zip(probs.astype(np.float32), lengths, truncated):
                best = np.argsort(-row, kind="stable")[:top_k]
                results.append({"label": self.labels[best[0]], "score": float(row[best[0]]),
                                "probabilities": {label: float(v) for label, v in zip(self.labels, row)},
                                "top_k": [{"label": self.labels[i], "probability": float(row[i])} for i in best],
                                "tokens": int(n), "truncated": bool(cut)})
        return results

    def predict_one(self, text: str) -> dict:
        return self.classify([text], top_k=1)[0]

    def run_cli(self, args) -> list[dict]:
        items = [(f"--text {i + 1}", t) for i, t in enumerate(args.text)]
        for path in args.text_files:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            items += [(f"{path}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
        if not items:
            raise ValueError("give texts with --text or text files")
        answers = self.classify([t for _, t in items], top_k=args.top_k)
        return [{"input": name, **answer} for (name, _), answer in zip(items, answers)]

    @staticmethod
    def format_text(result: dict) -> str:
        scores = ", ".join(f"{s['label']} {s['probability']:.3f}" for s in result["top_k"])
        cut = " (truncated)" if result["truncated"] else ""
        return f"{result['input']}: {result['label']}   ({scores}){cut}"


def example_input(manifest: dict, directory: Path) -> tuple[list[str], str]:
    text = "A quietly funny film with a warm heart, even if the last act drags a little."
    path = Path(directory) / "texts.txt"
    path.write_text(text + "\n")
    return [str(path)], text
