"""Text classifiers in batch jobs and edge bundles, against the server's own text runner.

A tiny real sentiment-tiny (from-scratch 2-layer transformer, 1 epoch on 400 real movie-review
snippets) in the session's artifacts folder (test_text.py's own builds live in a folder of their own).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.clean_venv import clean_env

TINY_TEXT = {"epochs": 1, "train_limit": 400, "baseline": False, "vocab_size": 1000, "hidden_size": 32, "threads": 1}
TEXTS = ["A warm, funny and moving film.", "Dull, far too long and badly acted.",
         "The cast is fine but the script never finds its feet.", "word " * 300]


@pytest.fixture(scope="module")
def text_root(artifacts_root):
    """Built once per session in the session's artifacts folder (the playground's browser test
    serves the same one; test_text.py builds its own in a folder of its own)."""
    from export.build import build

    art = build("sentiment-tiny", TINY_TEXT, root=artifacts_root, progress=False)
    return artifacts_root, art


def served(art, texts: list[str]) -> np.ndarray:
    """The server's text runner (serving/text.py), in process, one ORT call for `texts`."""
    from serving.runner import RunnerOptions
    from serving.text import TextClassifier

    runner = TextClassifier(art, RunnerOptions(device="cpu", threads=1))
    rows = np.empty(len(texts), dtype=object)
    rows[:] = texts
    return runner._run_rows(rows)[0]


def test_text_batch_from_csv_and_jsonl_with_bad_rows(text_root, tmp_path):
    root, art = text_root
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)] + [{"id": "blank", "text": "   "}]
    with open(tmp_path / "reviews.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    env = {**os.environ, "EDGESTACK_ARTIFACTS": str(root)}
    out = tmp_path / "reviews.parquet"
    result = subprocess.run([sys.executable, "-m", "cli", "batch", "sentiment-tiny", str(tmp_path / "reviews.csv"),
                             str(out), "--key-column", "id", "--batch-size", "8"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    import pyarrow.parquet as pq

    got = pq.read_table(out).to_pylist()
    assert [r["key"] for r in got] == ["r0", "r1", "r2", "r3"]
    assert got[3]["truncated"] and got[3]["tokens"] == art.manifest["preprocessing"]["max_length"]
    # one ORT call over the same four texts, as the server's runner makes it: same numbers
    np.testing.assert_allclose([r["probabilities"] for r in got], served(art, TEXTS), atol=1e-6)
    errors = [json.loads(line) for line in (tmp_path / "reviews.errors.jsonl").read_text().splitlines()]
    assert errors == [{"index": 4, "key": "blank", "error": "text is empty (or only whitespace)"}]

    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(r) for r in
                                                    [{"text": TEXTS[0]}, {"text": 3.5}, {"body": "no text column"}]))
    result = subprocess.run([sys.executable, "-m", "cli", "batch", "sentiment-tiny",
                             str(tmp_path / "mixed.jsonl"), str(tmp_path / "mixed.jsonl.out.jsonl"), "--format", "jsonl"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    reasons = [json.loads(line)["error"] for line in (tmp_path / "mixed.jsonl.out.errors.jsonl").read_text().splitlines()]
    assert "must be a string, got float" in reasons[0] and "no 'text' value" in reasons[1]


def test_text_bundle_runs_with_onnxruntime_numpy_and_tokenizers_only(text_root, clean_venv, tmp_path):
    from bundle.make import make_bundle

    root, art = text_root
    built = make_bundle("sentiment-tiny", tmp_path / "bundles", root=root, progress=False)
    assert built.manifest["runner"]["requires"] == ["onnxruntime", "numpy", "tokenizers"]
    assert (built.path / "tokenizer.json").is_file() and (built.path / "labels.txt").is_file()
    python = clean_venv(*built.manifest["runner"]["requires"])
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in "
                            "('PIL', 'torch', 'transformers', 'edgestack', 'serving') if u.find_spec(m)])"],
                           capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS[1:]) + "\n\n")
    run = subprocess.run([str(python), "-m", "edge_runner", "--text", TEXTS[0], str(tmp_path / "texts.txt"),
                          "--json", "--top-k", "2"], cwd=built.path, capture_output=True, text=True, env=clean_env())
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert [a["input"] for a in answers] == ["--text 1", *(f"{tmp_path / 'texts.txt'}:{n}" for n in (1, 2, 3))]
    expected = served(art, TEXTS)  # the CLI sends all four texts in one ORT call, as this does
    labels = art.manifest["labels"]
    np.testing.assert_allclose([[a["probabilities"][label] for label in labels] for a in answers], expected, atol=1e-6)
    assert [a["label"] for a in answers] == [labels[i] for i in expected.argmax(1)]
    assert answers[3]["truncated"] and not answers[0]["truncated"]
