"""Image classifiers and their training loop: the seeds' CNN on the packaged sets, any folder of images.

The packaged IDX sets (digits, fashion) train the seeds' conv 32 -> pool -> conv 64 -> pool ->
fc 128 -> fc 10 (Adam 1e-3, cross-entropy), as they always have. A folder of your own images
(dataset "folder": one sub-folder per class, training/data/folders.py) trains a network sized
to the input (training/image_nets.py): grey or RGB, any size, standardised inside the graph by
the training set's own mean and std per channel, with photo augmentation (random crops, flips
where the spec allows, colour jitter), optional class weights, a seeded stratified split and
early stopping on validation accuracy. `arch = "efficientnet-lite0"` is transfer learning from
packaged ImageNet weights (the backbone frozen by default: its features are computed once and
only the new head is trained; `fine_tune = true` trains it all).
Reads top to bottom: data, model, augmentation, the loop with early stopping, the outputs.
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
from training import image_nets
from training.configs import ImageConfig as Config
from training.data import images as image_data
from training.data.splits import class_weights
from training.image_nets import ConvNet  # noqa: F401 (part of this module's API)
from training.loop import KeepBest, save_classifier_run, set_training_threads

# What the exported graph expects; serving repeats exactly this in numpy.
PREPROCESS = {"layout": "NCHW", "height": 28, "width": 28, "channels": 1,
              "scale": 1 / 255.0, "mean": 0.0, "std": 1.0, "dark_background": True}
# Digits: uploads are drawings or photos of one digit, laid out as MNIST was made (mnist_style);
# clothing photos are resized whole, as Fashion-MNIST's were.
DRAWN_LAYOUT = {"digits": "mnist", "fashion": None}


PACKAGED = ("fashion", "digits")  # the IDX sets; "folder" is your own images (data_dir)


def preprocess_for(dataset: str) -> dict:
    """PREPROCESS plus the layout the server gives uploaded files of this dataset."""
    return {**PREPROCESS, "drawn_layout": DRAWN_LAYOUT.get(dataset)}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] exactly as PREPROCESS says (pixels / 255);
    RGB [N, H, W, 3] -> [N, 3, H, W]."""
    x = torch.from_numpy(images.astype(np.float32) * PREPROCESS["scale"])
    x = (x - PREPROCESS["mean"]) / PREPROCESS["std"]
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x.unsqueeze(1)


def channel_stats(images: np.ndarray, chunk: int = 2048) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels / 255 over a training split (uint8 [N, H, W(, C)])."""
    channels = 1 if images.ndim == 3 else images.shape[3]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for i in range(0, len(images), chunk):
        block = images[i:i + chunk].astype(np.float64).reshape(-1, channels) / 255.0
        total += block.sum(0)
        squares += (block ** 2).sum(0)
        count += len(block)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
    return [round(float(m), 6) for m in mean], [round(float(max(s, 1e-3)), 6) for s in std]


def photo_augment(x: torch.Tensor, generator: torch.Generator, crop_scale: float = 0.8, flip: bool = False,
                  jitter: float = 0.2) -> torch.Tensor:
    """Photos as a camera might have framed them: a random crop keeping `crop_scale`..1 of each
    side (scaled back to the full size), a left-right flip half the time (only with `flip`),
    brightness, contrast and (RGB) saturation each scaled by 1 +- `jitter`. Pixels in 0..1."""
    n = x.shape[0]

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    side = uniform(crop_scale, 1.0)
    shift = uniform(-1, 1, 2) * (1 - side)[:, None]
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([side * mirror, zero, shift[:, 0]], 1),
                         torch.stack([zero, side, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="border")
    if jitter:
        x = x * uniform(1 - jitter, 1 + jitter)[:, None, None, None]
        mean = x.mean((1, 2, 3), keepdim=True)
        x = mean + (x - mean) * uniform(1 - jitter, 1 + jitter)[:, None, None, None]
        if x.shape[1] == 3:
            grey = x.mean(1, keepdim=True)
            x = grey + (x - grey) * uniform(1 - jitter, 1 + jitter)[:, None, None, None]
    return x.clamp(0, 1)


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


def input_shape(cfg: Config) -> list[int]:
    """[channels, height, width]: the spec's, else 1x28x28 for the IDX sets, else chosen from the folder."""
    if cfg.input_shape is not None:
        shape = list(cfg.input_shape)
        if len(shape) != 3 or shape[0] not in (1, 3) or not all(8 <= side <= 512 for side in shape[1:]):
            raise UsageError(f"input shape {shape}: give [channels, height, width] with 1 or 3 channels and "
                             "sides of 8 to 512 pixels")
        return shape
    if cfg.dataset in PACKAGED:
        return [1, 28, 28]
    from training.data import folders

    return folders.suggest_shape(folders.inspect(Path(cfg.data_dir)))


def load_dataset(cfg: Config) -> image_data.ImageDataset:
    """The packaged IDX sets, or a folder of your own images at the config's input shape."""
    if cfg.dataset in PACKAGED:
        if cfg.arch not in ("auto", "seed-cnn") or input_shape(cfg) != [1, 28, 28]:
            raise UsageError("the packaged IDX sets take arch 'seed-cnn' (or 'auto') and input shape [1, 28, 28]")
        loader = {"fashion": image_data.fashion_mnist, "digits": image_data.digits}[cfg.dataset]
        return loader(cfg.data_dir, seed=cfg.seed)
    if cfg.dataset != "folder":
        raise UsageError(f"unknown image dataset {cfg.dataset!r}; use {', '.join(PACKAGED)} or folder (with a path)")
    if not cfg.data_dir:
        raise UsageError("dataset 'folder' needs a path: [data] path = \"/your/images\" (one sub-folder per class)")
    from training.data import folders

    channels, height, width = input_shape(cfg)
    data = folders.read_folder(Path(cfg.data_dir), height, width, channels)
    train, val, test = folders.split(data, cfg.seed)
    return image_data.ImageDataset(*(image_data.Split(data.images[i], data.labels[i]) for i in (train, val, test)),
                                   labels=data.classes, source=data.source, skipped=data.skipped)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate([model(to_tensor(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])


@torch.no_grad()
def pooled_features(model: image_nets.ImageNet, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """The frozen backbone's pooled features of every image (computed once for head training)."""
    model.eval()
    return torch.cat([model.features(to_tensor(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, images: np.ndarray, most: int = 2048, batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running mean and variance as exact averages over (up to
    `most`) training images, before the model is evaluated. With a small folder an epoch is a
    few steps, and running statistics updated with momentum 0.1 are still far from the weights'
    own: evaluated with them, a net that learns well scores chance."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    if not norms or not any(p.requires_grad for m in norms for p in m.parameters()):
        return  # no BN, or a frozen pretrained backbone whose statistics are ImageNet's
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for i in range(0, min(len(images), most), batch_size):
        model(to_tensor(images[i:i + batch_size]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def train(cfg: Config, out_dir: Path, *, progress: bool = True) -> dict:
    """Train, keep the best epoch by validation accuracy, write checkpoint + metrics + plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    set_training_threads(cfg.threads)
    data = load_dataset(cfg)
    shape = data.shape
    arch = image_nets.resolve_arch(cfg.arch, shape, cfg.dataset in PACKAGED)
    name = cfg.dataset if cfg.dataset in PACKAGED else Path(cfg.data_dir).name
    train_split = data.train.head(cfg.train_limit)
    scans = len(train_split)
    printed = ([], [], [])
    if cfg.printed_digits:  # in proportion to the scans used (train_limit: quick runs stay quick)
        printed = printed_digits(max(1, round(cfg.printed_digits * len(train_split) / len(data.train))), cfg.seed)
        train_split = image_data.Split(np.concatenate([train_split.images, printed[0]]),
                                       np.concatenate([train_split.labels, printed[1]]))
    images, y_train = train_split.images, torch.from_numpy(train_split.labels)
    mean, std = (None, None) if cfg.dataset in PACKAGED else channel_stats(images)
    model = image_nets.build(arch, len(data.labels), shape, width=cfg.width, dropout=cfg.dropout, mean=mean, std=std)
    frozen = arch == "efficientnet-lite0" and not cfg.fine_tune
    weight = torch.from_numpy(class_weights(train_split.labels, len(data.labels))) if cfg.class_weights else None
    if progress:
        skipped = f", {len(data.skipped)} unreadable files skipped" if data.skipped else ""
        extra = f" + {len(train_split) - scans} printed digits" if len(train_split) > scans else ""
        print(f"{name}: {len(train_split)} training images ({scans} of {len(data.train)}{extra}), {len(data.val)} validation, "
              f"{len(data.test)} test, {len(data.labels)} classes, input {'x'.join(map(str, shape))}, arch {arch}"
              f"{' (backbone frozen: features computed once)' if frozen else ''}{skipped}", flush=True)
    if frozen:  # transfer learning: the backbone's features once, then only the head learns
        for param in model.net.features.parameters():
            param.requires_grad = False
        features = {"train": pooled_features(model, images), "val": pooled_features(model, data.val.images)}
        head = nn.Sequential(model.net.dropout, model.net.head)

        def forward(idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            head.train()
            return head(features["train"][idx])

        def val_logits() -> np.ndarray:
            head.eval()
            with torch.no_grad():
                return head(features["val"]).numpy()
    else:
        def forward(idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            model.train()
            xb = to_tensor(images[idx.numpy()])
            if cfg.drawn:
                xb = drawn_augment(xb, generator, clean=1 - cfg.drawn_share)
            elif cfg.augment and cfg.dataset in PACKAGED:
                xb = augment(xb, generator)
            elif cfg.augment:
                xb = photo_augment(xb, generator, cfg.crop_scale, cfg.flip, cfg.color_jitter)
            return model(xb)

        def val_logits() -> np.ndarray:
            refresh_batchnorm(model, images)
            return predict(model, data.val.images)

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)

    history: list[dict] = []
    best = KeepBest(cfg.patience, higher_is_better=True)
    started = time.time()
    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(len(y_train), generator=generator)
        batches = range(0, len(order), cfg.batch_size)
        bar = tqdm(batches, desc=f"{name} epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not progress or not sys.stderr.isatty(), leave=False)
        total_loss, seen = 0.0, 0
        for start in bar:
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(forward(idx, generator), y_train[idx], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        logits = val_logits()
        val_loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(data.val.labels)).item()
        val_acc = float((logits.argmax(1) == data.val.labels).mean())
        history.append({"epoch": epoch, "train_loss": total_loss / seen, "val_loss": val_loss, "val_acc": val_acc})
        if progress:
            print(f"{name} epoch {epoch}: train loss {total_loss / seen:.4f}  "
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
    config = {**asdict(cfg), "num_classes": len(data.labels), "arch": arch, "input_shape": shape,
              "normalization": None if mean is None else {"mean": mean, "std": std, "in_graph": True,
                                                          "of": "pixels / 255, per channel"},
              "architecture": image_nets.describe(arch, shape, len(data.labels), cfg.width)}
    metrics = {"best_epoch": best_epoch, "val_acc": best_acc, "test_acc": test_acc,
               "test_size": len(data.test), "train_size": len(train_split),
               "printed_digits": len(printed[1]), "printed_fonts": printed[2],
               "skipped_files": len(data.skipped), "skipped_examples": data.skipped[:10],
               "data_source": data.source, "train_seconds": round(time.time() - started, 1), "history": history}
    save_classifier_run(out_dir, config, data.labels, metrics, data.test.labels, test_pred, f"{name} {arch}")
    return metrics


def load_checkpoint(run_dir: Path) -> tuple[nn.Module, dict]:
    """Rebuild the model from a run folder (safetensors only: nothing is unpickled)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    arch, shape = config.get("arch", "seed-cnn"), config.get("input_shape") or [1, 28, 28]
    if arch == "auto":  # a run of an edgestack before archs: the seeds' CNN
        arch = "seed-cnn"
    norm = config.get("normalization") or {}
    model = image_nets.build(arch, config["num_classes"], shape, width=config.get("width", 32),
                             dropout=config["dropout"], mean=norm.get("mean"), std=norm.get("std"), pretrained=False)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    return model.eval(), config
