"""The ABC corpus, the vocabulary, the tune sampler's cuts, ABC checks, and the music server's imports."""

from __future__ import annotations

import subprocess
import sys
import numpy as np
import pytest
from serving import abc_tools
from serving.tune import sample_index
from training.data import abc as abc_data


@pytest.fixture(scope="module")
def splits():
    return abc_data.load_splits("irish", seed=0)


def test_corpus_is_split_by_whole_tunes(splits):
    assert len(splits.train) + len(splits.val) + len(splits.test) == 804
    assert all(t.startswith("X:") for t in splits.train + splits.val + splits.test)
    assert not set(splits.train) & set(splits.val) and not set(splits.train) & set(splits.test)
    assert abc_data.load_splits("irish", seed=0).test == splits.test          # fixed by the seed
    assert abc_data.load_splits("irish", seed=1).test != splits.test


def test_vocabulary_handles_unknown_characters_explicitly(splits):
    vocab = abc_data.Vocabulary.from_text(abc_data.join_tunes(splits.train))
    assert vocab.decode(vocab.encode(splits.val[0][:50], unknown="drop")) == \
        "".join(ch for ch in splits.val[0][:50] if ch in vocab.index)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("X:1\nT:Caf\u00e9")
    assert len(vocab.encode("ab\u00e9c", unknown="drop")) == 3


def test_folder_of_abc_files_is_a_corpus(tmp_path, splits):
    (tmp_path / "a.abc").write_text("\n\n".join(splits.train[:6]))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.abc").write_text(splits.train[6])
    tunes, source = abc_data.load_corpus(data_dir=tmp_path)
    assert tunes == splits.train[:7] and source == str(tmp_path)


def test_sampling_cuts_are_respected():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    assert {sample_index(logits, rng, 1.0, 2, 1.0) for _ in range(300)} == {0, 1}
    assert {sample_index(logits, rng, 1.0, 0, 0.7) for _ in range(300)} == {0, 1}   # 0.5 + 0.3 reaches 0.7
    assert {sample_index(logits, rng, 1.0, 0, 0.4) for _ in range(100)} == {0}
    draws = [sample_index(logits, rng, 1.0, 0, 1.0) for _ in range(4000)]
    assert np.bincount(draws, minlength=4) / 4000 == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.03)
    cold = [sample_index(logits, rng, 0.05, 0, 1.0) for _ in range(100)]
    assert set(cold) == {0}


def test_abc_checks_on_real_and_broken_tunes(splits):
    real = splits.test[0]
    assert abc_tools.header_problems(real) == []
    rendered = abc_tools.render_midi(real)
    assert rendered.midi.startswith(b"MThd") and rendered.notes > 20
    assert "missing K: header" in abc_tools.header_problems("X:1\nT:t\nM:4/4\nabc|")[-1]
    assert abc_tools.header_problems("hello") == ["a tune must start with an X: (reference number) line"]
    assert "no music" in abc_tools.header_problems("X:1\nT:t\nM:4/4\nK:D\n|]")[0]


def test_music_serving_never_imports_torch():
    code = ("import sys, serving.service, serving.tune, serving.tune_http, serving.abc_tools; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_help_explains_abc_check():
    out = subprocess.run([sys.executable, "-m", "cli", "abc-check", "--help"],
                         capture_output=True, text=True).stdout
    assert "--temperature" in out and "abc2midi" in out
