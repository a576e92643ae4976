import json

import numpy as np
import torch
from safetensors.torch import load_file

from training import image as image_training


def _short(tmp_path, name, **kw):
    cfg = image_training.Config(dataset="fashion", epochs=1, train_limit=1024, batch_size=64, augment=False, **kw)
    return image_training.train(cfg, tmp_path / name, progress=False), tmp_path / name


def test_short_training_run_writes_checkpoint_metrics_and_plots(tmp_path):
    metrics, run = _short(tmp_path, "a")
    for name in ("model.safetensors", "config.json", "labels.json", "metrics.json", "curves.png", "confusion.png"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_size"] == 10000 and saved["train_size"] == 1024
    # 1024 images, one epoch: far better than chance (10%) on the full test split
    assert saved["test_acc"] > 0.55
    model, config = image_training.load_checkpoint(run)
    assert config["architecture"] == "conv32-pool-conv64-pool-fc128-fc10"
    assert sum(p.numel() for p in model.parameters()) == 421642


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    _short(tmp_path, "a", seed=3)
    _short(tmp_path, "b", seed=3)
    _short(tmp_path, "c", seed=4)
    a, b, c = (load_file(str(tmp_path / n / "model.safetensors")) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc2.weight"], c["fc2.weight"])


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    cfg = image_training.Config(dataset="digits", epochs=6, patience=1, train_limit=400, lr=3e-2, augment=False)
    metrics = image_training.train(cfg, tmp_path / "es", progress=False)
    history = metrics["history"]
    best = max(history, key=lambda h: h["val_acc"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["val_acc"] == best["val_acc"]
    # stopped as soon as one epoch failed to improve (or ran to the end)
    assert len(history) == 6 or history[-1]["val_acc"] <= metrics["val_acc"]


def test_augmentation_keeps_shape_and_changes_pixels():
    x = image_training.to_tensor(np.full((4, 28, 28), 200, np.uint8))
    x[:, :, :3] = 0
    out = image_training.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
