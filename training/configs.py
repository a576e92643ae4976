"""The training Config of each family, free of torch, so a model spec can be checked against it cheaply.

A model spec (models/NAME.toml, edgestack/specs.py) fills one of these dataclasses. Its
`[data]`, `[input]` and `[architecture]` tables name the fields listed in the class's
`SPEC_SECTIONS` (spec key -> field); every other field belongs to `[training]` under its own
name. `edgestack build --set KEY=VALUE` and the other training flags take field names.

training/image.py, training/text.py and training/tune.py import their Config from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass
class ImageConfig:
    dataset: str = "fashion"          # fashion | digits (packaged IDX) | folder (data_dir: one sub-folder per class)
    data_dir: str | None = None       # your own IDX folder (fashion/digits) or image folder (folder)
    # [channels, height, width] the model takes; None: chosen from the data (folder) or 1x28x28 (IDX)
    input_shape: list[int] | None = None
    # seed-cnn: the seeds' conv32-pool-conv64-pool-fc128 (grey, any size); cnn: a plain CNN sized to
    # the input; dwsep: depthwise-separable blocks (MobileNet-style) for RGB on edge CPUs;
    # auto: seed-cnn for IDX data and grey folders up to 48 px, dwsep for RGB, cnn for larger grey images
    arch: str = "auto"
    width: int = 32                   # cnn/dwsep: channels of the first block (doubled per stage)
    dropout: float = 0.25
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    augment: bool = True              # IDX: small random rotations and shifts; folder: photo augmentation
    flip: bool = False                # folder: random left-right flips (only where a mirrored image is the same class)
    crop_scale: float = 0.8           # folder: random crops keep at least this share of each side
    color_jitter: float = 0.2         # folder: random brightness/contrast/saturation, +- this share
    # Writers and pens the scans do not show (digits-cnn): stroke thickness, scale and aspect,
    # slant, elastic distortion, then laid out again as mnist_style() lays out drawn input.
    drawn: bool = False
    drawn_share: float = 0.75         # of each batch; the rest gets only the small turns and shifts
    # Printed digits added to the training split, per class (fewer in proportion under train_limit):
    # rendered from the installed fonts other than the evaluation set's DejaVu
    # (training/data/font_digits.py), laid out MNIST-style.
    printed_digits: int = 0
    patience: int = 3                 # early stopping: epochs without a better validation accuracy
    seed: int = 0
    train_limit: int | None = None    # use only the first N training images (tests, quick runs)
    class_weights: bool = False       # weigh the loss by inverse class frequency (imbalanced folders)
    fine_tune: bool = False           # efficientnet-lite0: train the pretrained backbone too (slow); else only the head
    threads: int | None = None

    SPEC_SECTIONS: ClassVar[dict] = {
        "data": {"source": "dataset", "path": "data_dir"},
        "input": {"shape": "input_shape"},
        "architecture": {"arch": "arch", "width": "width", "dropout": "dropout"},
    }


@dataclass
class TextConfig:
    dataset: str = "sentiment"            # sentiment | topic (packaged data)
    data_dir: str | None = None           # your own CSV / JSONL (text,label) or <label>/*.txt folder
    text_column: str = "text"             # your own CSV/JSONL: the column (key) holding the text
    label_column: str = "label"           # ... and the one holding the label
    arch: str = "minilm"                  # minilm (pretrained, fine-tuned) | tiny (from scratch)
    epochs: int = 2
    batch_size: int = 32
    lr: float = 2e-5                      # AdamW, encoder (the seeds' recipe; the 2-core profile raises it)
    head_lr: float | None = None          # AdamW, the new classification layer (None: lr)
    freeze_layers: int = 0                # freeze embeddings + the lowest (N-1) encoder layers (0: none)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1             # linear warm-up over this share of the steps, then linear decay
    max_length: int = 128                 # tokens per text at export and serve time
    train_max_length: int | None = None   # shorter truncation for the training pass only (None: max_length)
    train_limit: int | None = None        # stratified subset of N training texts (None or 0: all)
    patience: int = 2                     # stop after this many epochs without a better validation accuracy
    seed: int = 0
    class_weights: bool = False           # weigh the loss by inverse label frequency (imbalanced data)
    baseline: bool = True                 # also fit TF-IDF + logistic regression on the same split
    threads: int | None = None
    # tiny (from scratch) encoder and its tokenizer
    vocab_size: int = 8000
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2

    SPEC_SECTIONS: ClassVar[dict] = {
        "data": {"source": "dataset", "path": "data_dir", "text_column": "text_column",
                 "label_column": "label_column"},
        "input": {"max_length": "max_length"},
        "architecture": {"arch": "arch", "vocab_size": "vocab_size", "hidden_size": "hidden_size",
                         "layers": "layers", "heads": "heads"},
    }


@dataclass
class TuneConfig:
    corpus: str = "irish"             # irish (mitdeeplearning, 804 tunes) | oneills (music21, 2,009)
    data_dir: str | None = None       # a folder of .abc files instead of a packaged corpus
    hidden_size: int = 384            # the lab uses 1024; smaller trains faster on 2 cores
    embedding_dim: int = 256
    seq_len: int = 100
    batch_size: int = 32
    lr: float = 5e-3
    lr_final: float = 0.1             # cosine decay of the learning rate to lr * lr_final by the last epoch
    clip: float = 1.0                 # gradient norm clipping
    epochs: int = 12                  # one epoch = as many random sequences as the training text holds
    patience: int = 4                 # early stopping on validation bits per character
    seed: int = 0
    train_limit: int | None = None    # train on only the first N training tunes (tests, quick runs)
    val_limit: int | None = None      # evaluate on only the first N validation / test tunes
    threads: int | None = None

    SPEC_SECTIONS: ClassVar[dict] = {
        "data": {"source": "corpus", "path": "data_dir"},
        "input": {},
        "architecture": {"hidden_size": "hidden_size", "embedding_dim": "embedding_dim"},
    }
