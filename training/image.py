"""The seeds' CNN image classifier and its training loop.

conv 32 -> pool -> conv 64 -> pool -> fc 128 -> fc 10, Adam 1e-3, cross-entropy.
Reads top to bottom: data, model, one epoch, the loop with early stopping, the outputs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from edgestack.errors import UsageError
from training.configs import ImageConfig as Config
from training.data import images as image_data
from training.loop import KeepBest, save_classifier_run, set_training_threads

# What the exported graph expects; serving repeats exactly this in numpy.
PREPROCESS = {"layout": "NCHW", "height": 28, "width": 28, "channels": 1,
              "scale": 1 / 255.0, "mean": 0.0, "std": 1.0, "dark_background": True}
# Digits: uploads are drawings or photos of one digit, laid out as MNIST was made (mnist_style);
# clothing photos are resized whole, as Fashion-MNIST's were.
DRAWN_LAYOUT = {"digits": "mnist", "fashion": None}


def preprocess_for(dataset: str) -> dict:
    """PREPROCESS plus the layout the server gives uploaded files of this dataset."""
    return {**PREPROCESS, "drawn_layout": DRAWN_LAYOUT.get(dataset)}


class ConvNet(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.25):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] exactly as PREPROCESS says."""
    x = torch.from_numpy(images.astype(np.float32) * PREPROCESS["scale"])
    return ((x - PREPROCESS["mean"]) / PREPROCESS["std"]).unsqueeze(1)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation (+-10 degrees) and shift (+-2 px) of a batch."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 / 14)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def grow(x: torch.Tensor) -> torch.Tensor:
    """3x3 dilation (max over each pixel's neighbourhood) as two 1-D maxima: the same numbers as
    F.max_pool2d(x, 3, 1, 1), ten times faster on CPU at this size."""
    padded = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    height, width = x.shape[-2:]
    rows = torch.maximum(torch.maximum(padded[..., :, :width], padded[..., :, 1:width + 1]), padded[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :height, :], rows[..., 1:height + 1, :]), rows[..., 2:, :])


def thicken_or_thin(x: torch.Tensor, generator: torch.Generator, low: float = -0.6, high: float = 2.0) -> torch.Tensor:
    """Per image, strokes thinner or thicker by a random amount t in [low, high]: a grey-level
    blend towards one step of erosion (t < 0) or one, then two steps of 3x3 dilation (t > 0),
    so that a fraction of a step is a fraction of a pixel (MNIST's strokes are 2-3 px)."""
    t = (low + (high - low) * torch.rand(x.shape[0], generator=generator))[:, None, None, None]
    grown = grow(x)
    eroded = -grow(-x)
    thicker = torch.where(t <= 1, x + t.clamp(0, 1) * (grown - x), grown + (t - 1).clamp(0, 1) * (grow(grown) - grown))
    return torch.where(t < 0, x + (-t) * (eroded - x), thicker)


def relayout(x: torch.Tensor, box: int = 20, ink: float = 0.1) -> torch.Tensor:
    """mnist_style() (edgestack/families/image.py) for a batch, in torch: scale each image so its
    ink's longer side is `box` px and move its centre of mass to the middle. Bilinear, not LANCZOS."""
    n, _, height, width = x.shape
    mask = x[:, 0] > ink * x.amax(dim=(1, 2, 3)).clamp_min(1e-6)[:, None, None]
    rows, cols = mask.any(2), mask.any(1)
    index_h, index_w = torch.arange(height), torch.arange(width)
    extent_h = torch.where(rows, index_h, -1).amax(1) - torch.where(rows, index_h, height).amin(1) + 1
    extent_w = torch.where(cols, index_w, -1).amax(1) - torch.where(cols, index_w, width).amin(1) + 1
    scale = box / torch.maximum(extent_h, extent_w).clamp_min(1).float()
    mass = x[:, 0].sum((1, 2)).clamp_min(1e-6)
    cy = (x[:, 0] * index_h[None, :, None]).sum((1, 2)) / mass
    cx = (x[:, 0] * index_w[None, None, :]).sum((1, 2)) / mass
    # output pixel p samples the input at (p - 13.5) / scale + centre, in grid_sample's [-1, 1] units
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([1 / scale, zero, (2 * cx + 1) / width - 1], 1),
                         torch.stack([zero, 1 / scale, (2 * cy + 1) / height - 1], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def drawn_augment(x: torch.Tensor, generator: torch.Generator, clean: float = 0.25) -> torch.Tensor:
    """A batch as other writers and pens would have made it: stroke thickness (fractional
    dilation/erosion), scale and aspect 0.8-1.2, slant (shear +-0.4), rotation +-12 degrees,
    elastic distortion (a smooth random field, up to ~2 px), then relayout() as the server lays
    out drawn input. Deterministic for the generator's state."""
    n = x.shape[0]
    fine = thicken_or_thin(x, generator)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    angle, shear = uniform(-12, 12) * math.pi / 180, uniform(-0.4, 0.4)
    scale_x, scale_y = uniform(0.8, 1.2), uniform(0.8, 1.2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(n)
    # output -> input: rotate, then shear (slant), then scale
    theta = torch.stack([torch.stack([cos / scale_x, (-sin + shear * cos) / scale_x, zero], 1),
                         torch.stack([sin / scale_y, (cos + shear * sin) / scale_y, zero], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, 28, 28], align_corners=False)
    field = torch.rand(n, 2, 4, 4, generator=generator) * 2 - 1
    strength = uniform(0, 2 * 2 / 28)[:, None, None, None]  # up to 2 px in [-1, 1] units
    grid = grid + (F.interpolate(field, size=(28, 28), mode="bicubic", align_corners=False) * strength).permute(0, 2, 3, 1)
    drawn = relayout(F.grid_sample(fine, grid, align_corners=False, padding_mode="zeros"))
    # a share of each batch stays as scanned (small shifts and turns only): the scans are the test
    keep = (torch.rand(n, generator=generator) < clean)[:, None, None, None]
    return torch.where(keep, augment(x, generator), drawn)


def printed_digits(per_digit: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Digits rendered from the training fonts, laid out as the server lays out drawn input:
    (images uint8 [10 * per_digit, 28, 28], labels, font file names). None installed: empty,
    with a warning (scripts/install-system-data.sh installs three font packages as root)."""
    from edgestack.families.image import mnist_style
    from training.data import font_digits

    files = font_digits.training_fonts()
    if not files:
        print("!! no training fonts installed (apt-get install fonts-liberation2 fonts-freefont-ttf "
              "fonts-urw-base35): digits-cnn trains on the scans only", file=sys.stderr)
        return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), []
    canvases, labels = font_digits.make(per_digit, seed + 1, files)
    return np.stack([mnist_style(c) for c in canvases]), labels, [f.name for f in files]


def load_dataset(cfg: Config) -> image_data.ImageDataset:
    loaders = {"fashion": image_data.fashion_mnist, "digits": image_data.digits}
    if cfg.dataset not in loaders:
        raise UsageError(f"unknown image dataset {cfg.dataset!r}; use {sorted(loaders)}")
    if cfg.arch not in ("auto", "seed-cnn") or cfg.input_shape not in (None, [1, 28, 28]):
        raise UsageError("the packaged IDX sets take arch 'seed-cnn' (or 'auto') and input shape [1, 28, 28]")
    loader = loaders[cfg.dataset]
    return loader(cfg.data_dir, seed=cfg.seed)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate([model(to_tensor(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])


def train(cfg: Config, out_dir: Path, *, progress: bool = True) -> dict:
    """Train, keep the best epoch by validation accuracy, write checkpoint + metrics + plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    set_training_threads(cfg.threads)
    data = load_dataset(cfg)
    train_split = data.train.head(cfg.train_limit)
    printed = ([], [], [])
    if cfg.printed_digits:  # in proportion to the scans used (train_limit: quick runs stay quick)
        printed = printed_digits(max(1, round(cfg.printed_digits * len(train_split) / len(data.train))), cfg.seed)
        train_split = image_data.Split(np.concatenate([train_split.images, printed[0]]),
                                       np.concatenate([train_split.labels, printed[1]]))
    x_train, y_train = to_tensor(train_split.images), torch.from_numpy(train_split.labels)
    model = ConvNet(len(data.labels), cfg.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)

    history: list[dict] = []
    best = KeepBest(cfg.patience, higher_is_better=True)
    started = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        batches = range(0, len(order), cfg.batch_size)
        bar = tqdm(batches, desc=f"{cfg.dataset} epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not progress or not sys.stderr.isatty(), leave=False)
        total_loss, seen = 0.0, 0
        for start in bar:
            idx = order[start:start + cfg.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if cfg.drawn:
                xb = drawn_augment(xb, generator, clean=1 - cfg.drawn_share)
            elif cfg.augment:
                xb = augment(xb, generator)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        val_logits = predict(model, data.val.images)
        val_loss = F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(data.val.labels)).item()
        val_acc = float((val_logits.argmax(1) == data.val.labels).mean())
        history.append({"epoch": epoch, "train_loss": total_loss / seen, "val_loss": val_loss, "val_acc": val_acc})
        if progress:
            print(f"{cfg.dataset} epoch {epoch}: train loss {total_loss / seen:.4f}  "
                  f"val loss {val_loss:.4f}  val acc {val_acc:.4f}", flush=True)
        if best.update(epoch, val_acc, model):
            if progress:
                print(f"early stop: no better validation accuracy for {cfg.patience} epochs")
            break

    best_acc, best_epoch, best_state = best.score, best.epoch, best.state
    model.load_state_dict(best_state)
    test_pred = predict(model, data.test.images).argmax(1)
    test_acc = float((test_pred == data.test.labels).mean())
    save_file(best_state, str(out_dir / "model.safetensors"))
    config = {**asdict(cfg), "num_classes": len(data.labels), "architecture": "conv32-pool-conv64-pool-fc128-fc10"}
    metrics = {"best_epoch": best_epoch, "val_acc": best_acc, "test_acc": test_acc,
               "test_size": len(data.test), "train_size": len(train_split),
               "printed_digits": len(printed[1]), "printed_fonts": printed[2],
               "train_seconds": round(time.time() - started, 1), "history": history}
    save_classifier_run(out_dir, config, data.labels, metrics, data.test.labels, test_pred, f"{cfg.dataset} CNN")
    return metrics


def load_checkpoint(run_dir: Path) -> tuple[ConvNet, dict]:
    """Rebuild the model from a run folder (safetensors only: nothing is unpickled)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    model = ConvNet(config["num_classes"], config["dropout"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    return model.eval(), config
