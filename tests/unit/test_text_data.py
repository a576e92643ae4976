"""The text datasets (packaged and a user's own CSV/JSONL/folder) and the text server's imports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import numpy as np
import pytest
from training.data import text as text_data


@pytest.fixture(scope="module")
def sentiment():
    return text_data.sentiment(seed=0)


def test_sentiment_loader_drops_plot_rows_and_splits_stratified(sentiment):
    total = len(sentiment.train) + len(sentiment.val) + len(sentiment.test)
    assert sentiment.labels == ["rotten", "fresh"]
    assert 12_700 <= total <= 12_808  # 12,808 snippets, exact duplicates kept once
    assert abs(len(sentiment.test) / total - 0.1) < 0.005 and abs(len(sentiment.val) / total - 0.1) < 0.005
    shares = [np.bincount(s.labels, minlength=2) / len(s) for s in (sentiment.train, sentiment.val, sentiment.test)]
    assert np.abs(shares[0] - shares[2]).max() < 0.01 and np.abs(shares[0] - shares[1]).max() < 0.01
    train, val, test = (set(s.texts) for s in (sentiment.train, sentiment.val, sentiment.test))
    assert not (train & test) and not (train & val) and not (val & test)
    assert all(t.strip() for t in sentiment.test.texts)


def test_splits_are_seeded(sentiment):
    again, other = text_data.sentiment(seed=0), text_data.sentiment(seed=1)
    assert again.test.texts == sentiment.test.texts
    assert other.test.texts != sentiment.test.texts


def test_topic_loader_has_five_balanced_topics():
    data = text_data.topic(seed=0)
    assert data.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(data.train) + len(data.val) + len(data.test) == 2125  # 2,225 files, 100 exact duplicates kept once
    assert set(np.unique(data.test.labels)) == set(range(5))
    assert min(np.bincount(data.test.labels)) >= 35


def test_stratified_subset_keeps_class_shares(sentiment):
    subset = sentiment.train.stratified_head(1000, seed=0)
    assert len(subset) in (999, 1000, 1001)
    full = np.bincount(sentiment.train.labels) / len(sentiment.train)
    assert np.abs(np.bincount(subset.labels) / len(subset) - full).max() < 0.01
    assert sentiment.train.stratified_head(None) is sentiment.train


def test_user_csv_jsonl_and_folder(tmp_path):
    rows = [(f"text number {i}", "pos" if i % 3 else "neg") for i in range(30)]
    with open(tmp_path / "mine.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "text"])
        writer.writerows([(label, t) for t, label in rows])
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps({"text": t, "label": label}) for t, label in rows))
    for label in ("a", "b"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "folder" / label / f"{i}.txt").write_text(f"{label} document {i}")
    for source in ("mine.csv", "mine.jsonl"):
        data = text_data.load("ignored", str(tmp_path / source))
        assert data.labels == ["neg", "pos"] and len(data.train) + len(data.val) + len(data.test) == 30
    assert text_data.load("x", str(tmp_path / "folder")).labels == ["a", "b"]


def test_user_files_with_mistakes_are_explained(tmp_path):
    (tmp_path / "bad.csv").write_text("sentence,category\nhello,x\n")
    with pytest.raises(ValueError, match="`text` and `label`"):
        text_data.load("x", str(tmp_path / "bad.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        text_data.load("x", str(tmp_path / "bad.jsonl"))
    (tmp_path / "one.jsonl").write_text("\n".join(json.dumps({"text": f"t{i}", "label": "only"}) for i in range(9)))
    with pytest.raises(ValueError, match="at least two labels"):
        text_data.load("x", str(tmp_path / "one.jsonl"))
    with pytest.raises(FileNotFoundError):
        text_data.load("x", str(tmp_path / "missing.csv"))


def test_text_serving_imports_neither_torch_nor_transformers():
    code = ("import sys, serving.service, serving.text; "
            "sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
