"""Text classifiers (sentiment, topic) on the device: tokenize, run, softmax, labels.

Needs onnxruntime, numpy and `tokenizers` (the small Rust tokenizer library that reads the
bundle's tokenizer.json; no torch, no transformers). Tokenization, checks and answers are
the text family's processing (edgestack/families/text.py), copied into the bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:  # inside a bundle: `edgestack bundle` copied the family's processing here
    from .families import text as processing
except ModuleNotFoundError as missing:  # in the source tree (any other missing module is a real error)
    if missing.name != f"{__package__}.families":
        raise
    from edgestack.families import text as processing

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


class Model:
    """A text classifier bundle: `classify(texts)`."""

    def __init__(self, bundle_dir: Path, manifest: dict, sessions: dict):
        self.bundle_dir, self.manifest = Path(bundle_dir), manifest
        pre = manifest["preprocessing"]
        self.labels = manifest["labels"]
        self.classifier = processing.Classifier(
            sessions["model"], processing.Encoder(self.bundle_dir / pre["tokenizer"], pre["max_length"]), self.labels)

    def classify(self, texts: list[str], top_k: int = 3, batch: int = 64) -> list[dict]:
        texts = processing.check_texts(list(texts))
        results = []
        for start in range(0, len(texts), batch):
            results += processing.answers(*self.classifier.run(texts[start:start + batch]), self.labels, top_k)
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


def answers(model: Model, inputs: dict, batch: int = 64) -> dict:
    """The golden check's answers (edge_runner/health.py): {"texts": str [N]} -> class probabilities."""
    texts = [str(t) for t in inputs["texts"]]
    return {"probabilities": np.concatenate([model.classifier.run(texts[i:i + batch])[0]
                                             for i in range(0, len(texts), batch)])}


def example_golden(manifest: dict) -> dict:
    return {"texts": np.asarray(["A quietly funny film with a warm heart, even if the last act drags a little.",
                                 "Shares fell sharply after the bank reported a loss for the third quarter."])}


def example_input(manifest: dict, directory: Path) -> tuple[list[str], str]:
    text = "A quietly funny film with a warm heart, even if the last act drags a little."
    path = Path(directory) / "texts.txt"
    path.write_text(text + "\n")
    return [str(path)], text
