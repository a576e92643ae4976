"""ABC folk tunes as text: the packaged Irish set, music21's O'Neill's 1850, or your own .abc files.

A corpus is a list of tunes (each a string starting with ``X:``). Splits are made by tune,
never inside one, fixed by a seed. The character vocabulary comes from the training tunes
only; characters outside it are handled explicitly (see `Vocabulary.encode`).

Nothing here imports the packages the data comes from: `mitdeeplearning`'s ``__init__``
pulls in tensorflow, so its data file is found with importlib's spec machinery instead.
"""

from __future__ import annotations

import importlib.util
import random
import re
from dataclasses import dataclass
from pathlib import Path

from edgestack.errors import DataError, DataMissing  # noqa: F401 (raised here; callers import it from here too)
from edgestack.settings import get_settings

# Tunes are separated by a blank line in the training text; generation stops when the
# model writes one (the end of a tune).
TUNE_SEPARATOR = "\n\n"
CORPORA = ("irish", "oneills")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def irish_abc_path() -> Path:
    """mitdeeplearning/data/irish.abc: the MIT 6.S191 lab's 804 Irish tunes."""
    base = _package_dir("mitdeeplearning")
    path = base / "data" / "irish.abc" if base else None
    if path is None or not path.is_file():
        raise DataMissing(
            "the Irish tunes (mitdeeplearning/data/irish.abc) are not installed. Install with\n"
            "    pip install --no-deps --no-build-isolation mitdeeplearning==0.7.5   (needs setuptools<81)\n"
            "(`make venv` does this), or train on your own tunes: --data-dir /folder/of/abc/files")
    return path


def split_tunes(text: str) -> list[str]:
    """One string per tune: split before every line starting with X:, strip, drop empties.

    Blank lines inside a tune are removed, so that a blank line means "end of tune" in
    the training text and generation can stop there.
    """
    tunes = []
    for chunk in re.split(r"\n(?=X:)", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.rstrip() for line in chunk.strip().split("\n") if line.strip()]
        if lines and lines[0].startswith("X:"):
            tunes.append("\n".join(lines))
    return tunes


def read_abc_files(paths: list[Path]) -> list[str]:
    tunes = []
    for path in sorted(paths):
        tunes.extend(split_tunes(Path(path).read_text(encoding="utf-8", errors="replace")))
    return tunes


def load_corpus(corpus: str = "irish", data_dir: str | Path | None = None) -> tuple[list[str], str]:
    """(tunes, source). data_dir: a folder of .abc files (searched recursively) wins over corpus."""
    if data_dir:
        folder = Path(data_dir)
        files = sorted(folder.rglob("*.abc")) if folder.is_dir() else ([folder] if folder.is_file() else [])
        tunes = read_abc_files(files)
        if not tunes:
            if not folder.exists():
                raise DataMissing(f"{folder} does not exist")
            raise DataError(f"no ABC tunes (lines starting with X:) in {folder}: give a folder of .abc files")
        return tunes, str(folder)
    if corpus == "irish":
        path = irish_abc_path()
        return split_tunes(path.read_text(encoding="utf-8")), str(path)
    if corpus == "oneills":
        base = _package_dir("music21")
        folder = base / "corpus" / "oneills1850" if base else None
        if folder is None or not folder.is_dir():
            raise DataMissing("O'Neill's 1850 collection comes with music21: pip install --no-deps music21")
        return read_abc_files(list(folder.rglob("*.abc"))), str(folder)
    raise ValueError(f"unknown corpus {corpus!r}; use one of {CORPORA} or --data-dir")


@dataclass
class TuneSplits:
    train: list[str]
    val: list[str]
    test: list[str]
    source: str


def split_corpus(tunes: list[str], *, seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.1) -> tuple[list[str], list[str], list[str]]:
    """Shuffle whole tunes with a seed, then cut: a tune is in exactly one split."""
    order = list(range(len(tunes)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(tunes) * val_fraction))
    n_test = max(1, round(len(tunes) * test_fraction))
    if len(tunes) < n_val + n_test + 1:
        raise DataError(f"{len(tunes)} tunes are too few to split into train/validation/test (3 at least; "
                        "a few dozen make a model)")
    pick = [tunes[i] for i in order]
    return pick[n_val + n_test:], pick[:n_val], pick[n_val:n_val + n_test]


def load_splits(corpus: str = "irish", data_dir: str | Path | None = None, *, seed: int = 0) -> TuneSplits:
    data_dir = data_dir or get_settings().abc_dir
    tunes, source = load_corpus(corpus, data_dir)
    train, val, test = split_corpus(tunes, seed=seed)
    return TuneSplits(train, val, test, source)


def join_tunes(tunes: list[str]) -> str:
    """The text a model reads: every tune followed by a blank line (end of tune)."""
    return "".join(t + TUNE_SEPARATOR for t in tunes)


class Vocabulary:
    """Characters <-> ids. Built from training text only, stored with the artifact.

    Characters outside the vocabulary: `encode(..., unknown="error")` raises naming them
    (serving refuses such a prompt); `unknown="drop"` removes them and counts them
    (validation and test text, whose rare symbols the training tunes may lack).
    """

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary has duplicate characters")
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        return sorted({ch for ch in text if ch not in self.index})

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        if unknown == "drop":
            return [self.index[ch] for ch in text if ch in self.index]
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"characters outside the vocabulary: {''.join(missing)!r}")
        return [self.index[ch] for ch in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)
