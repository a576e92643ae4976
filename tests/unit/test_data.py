import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.data import images


def _rows(images_: np.ndarray, labels: np.ndarray) -> list[bytes]:
    return [image.tobytes() + bytes([int(label)]) for image, label in zip(images_, labels)]


def _row_hashes(array: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in array.reshape(len(array), -1)}


def test_fashion_mnist_from_debian_package_has_official_sizes_and_disjoint_splits():
    data = images.fashion_mnist()
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.train.images.dtype == np.uint8 and data.train.images.shape[1:] == (28, 28)
    assert set(np.unique(data.test.labels)) == set(range(10))
    assert data.labels[9] == "Ankle boot"
    # train and validation split the official training file: together they hold each of its
    # 60,000 (image, label) rows exactly as often as the file does (no row reused, none lost)
    official = Path(data.source)
    rows = Counter(_rows(images.read_idx(official / "train-images-idx3-ubyte.gz"),
                         images.read_idx(official / "train-labels-idx1-ubyte.gz")))
    split = Counter(_rows(data.train.images, data.train.labels)) + Counter(_rows(data.val.images, data.val.labels))
    assert split == rows
    assert not set(_rows(data.test.images, data.test.labels)) <= set(rows)  # the test file is another one


def test_fashion_split_is_fixed_by_seed():
    a, b = images.fashion_mnist(seed=0), images.fashion_mnist(seed=0)
    c = images.fashion_mnist(seed=1)
    assert np.array_equal(a.val.labels, b.val.labels)
    assert not np.array_equal(a.val.images, c.val.images)


def test_digits_are_real_stratified_and_disjoint():
    data = images.digits()
    assert (len(data.train), len(data.val), len(data.test)) == (4000, 500, 500)
    for split in (data.train, data.val, data.test):
        assert np.bincount(split.labels, minlength=10).tolist() == [len(split) // 10] * 10
    train, val, test = (_row_hashes(s.images) for s in (data.train, data.val, data.test))
    # a handful of MNIST digits are pixel-identical duplicates; splits share (almost) none
    assert len(train & test) <= 2 and len(train & val) <= 2 and len(val & test) <= 2
    assert data.train.images.max() == 255  # raw intensities, not pre-scaled


def _write_idx(path, array: np.ndarray, dtype_code: int = 0x08):
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_loader_reads_a_users_own_directory(tmp_path):
    source = images.digits()
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", source.train.images[:300])
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", source.train.labels[:300])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", source.test.images[:100])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", source.test.labels[:100])
    data = images.load_idx_dir(tmp_path, images.DIGIT_LABELS, val_size=50)
    assert (len(data.train), len(data.val), len(data.test)) == (250, 50, 100)
    assert np.array_equal(data.test.images, source.test.images[:100])


def test_idx_loader_rejects_non_idx_and_truncated_files(tmp_path):
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"PK\x03\x04 definitely not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        images.read_idx(bad)
    short = tmp_path / "y-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="header says"):
        images.read_idx(short)


def test_missing_dataset_says_how_to_install_or_bring_your_own(tmp_path):
    with pytest.raises(images.DataMissing, match="apt-get install dataset-fashion-mnist.*EDGESTACK_FASHION_DIR"):
        images.fashion_mnist(tmp_path / "nowhere")
