import json

import numpy as np
import torch

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


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    cfg = image_training.Config(dataset="digits", epochs=6, patience=1, train_limit=400, lr=3e-2, augment=False)
    metrics = image_training.train(cfg, tmp_path / "es", progress=False)
    accs = [h["val_acc"] for h in metrics["history"]]
    best = accs.index(max(accs))  # the first of the best: a tie is not an improvement
    assert metrics["best_epoch"] == metrics["history"][best]["epoch"] and metrics["val_acc"] == accs[best]
    # patience 1: every epoch before the last improved on all before it, and a run that ended
    # before its 6 epochs ended on the first epoch that did not
    assert all(accs[i] > max(accs[:i]) for i in range(1, len(accs) - 1)), accs
    assert len(accs) == cfg.epochs or accs[-1] <= max(accs[:-1]), accs
    # the checkpoint written holds the best epoch's weights: it scores the best validation accuracy
    model, _ = image_training.load_checkpoint(tmp_path / "es")
    val = image_training.load_dataset(cfg).val
    assert float((image_training.predict(model, val.images).argmax(1) == val.labels).mean()) == metrics["val_acc"]


def test_augmentation_keeps_shape_and_changes_pixels():
    x = image_training.to_tensor(np.full((4, 28, 28), 200, np.uint8))
    x[:, :, :3] = 0
    out = image_training.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
