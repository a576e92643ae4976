"""The seeds' character-level LSTM for ABC folk tunes, and its training loop.

Embedding(256) -> LSTM(hidden) -> Dense(vocab); Adam, sparse categorical cross-entropy,
gradient clipping, batches of random sequences cut from the training text (the MIT 6.S191
lab's recipe). The lab uses hidden 1024; the default build uses a smaller LSTM so it
trains in a few minutes on 2 cores (`--hidden-size 1024` for the lab's size).

Validation bits per character are measured every epoch by running the model statefully
over the whole validation text; the best epoch is kept. Outputs under the run folder:
model.safetensors, config.json, vocab.json, metrics.json, curves.png, samples.txt.
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

from training.configs import TuneConfig as Config
from training.data import abc as abc_data
from training.loop import KeepBest, set_training_threads
from training.plots import plot_curves


class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int = 256, hidden_size: int = 512):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    @property
    def hidden_size(self) -> int:
        return self.lstm.hidden_size

    def zero_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, batch, self.hidden_size)
        return torch.zeros(shape), torch.zeros(shape)

    def forward(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """tokens [B, T] int64 -> logits [B, T, V], (h, c) each [1, B, H]."""
        out, state = self.lstm(self.embedding(tokens), state)
        return self.head(out), state


def random_batches(ids: np.ndarray, seq_len: int, batch_size: int, steps: int, generator: np.random.Generator):
    """`steps` batches of (input, target) windows at random offsets: target is input shifted by one."""
    for _ in range(steps):
        starts = generator.integers(0, len(ids) - seq_len - 1, size=batch_size)
        window = np.stack([ids[s:s + seq_len + 1] for s in starts])
        yield torch.from_numpy(window[:, :-1]), torch.from_numpy(window[:, 1:])


def streams(ids: np.ndarray, n_streams: int) -> np.ndarray:
    """Cut a text into `n_streams` contiguous equal parts [S, L] (the tail that does not fit is dropped)."""
    n_streams = max(1, min(n_streams, len(ids) // 2))
    length = len(ids) // n_streams
    return ids[: n_streams * length].reshape(n_streams, length)


def bits_per_char(step_fn, ids: np.ndarray, *, n_streams: int = 16, chunk: int = 256) -> float:
    """Mean -log2 p(next char) over a whole text, run statefully in parallel streams.

    step_fn(tokens [S, T] int64 numpy, state) -> (logits [S, T, V] numpy, state); state None
    at the start. Shared by training (PyTorch) and export (ONNX Runtime), so both measure
    exactly the same thing.
    """
    grid = streams(ids, n_streams)
    state, total_nats, count = None, 0.0, 0
    for start in range(0, grid.shape[1] - 1, chunk):
        x = grid[:, start:start + chunk]
        y = grid[:, start + 1:start + chunk + 1]
        x = x[:, : y.shape[1]]
        logits, state = step_fn(np.ascontiguousarray(x), state)
        logits = logits.astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total_nats -= float(np.take_along_axis(log_probs, y[..., None], axis=-1).sum())
        count += y.size
    return total_nats / count / math.log(2)


def torch_step_fn(model: CharLSTM):
    @torch.no_grad()
    def step(tokens: np.ndarray, state):
        logits, state = model(torch.from_numpy(tokens), state)
        return logits.numpy(), state
    return step


def load_data(cfg: Config):
    splits = abc_data.load_splits(cfg.corpus, cfg.data_dir, seed=cfg.seed)
    train_tunes = splits.train[: cfg.train_limit] if cfg.train_limit else splits.train
    val_tunes = splits.val[: cfg.val_limit] if cfg.val_limit else splits.val
    test_tunes = splits.test[: cfg.val_limit] if cfg.val_limit else splits.test
    return splits, train_tunes, val_tunes, test_tunes


@torch.no_grad()
def sample(model: CharLSTM, vocab: abc_data.Vocabulary, prompt: str = "X:1\n", length: int = 400,
           temperature: float = 1.0, seed: int = 0) -> str:
    """A quick look at what the model writes (the served sampler lives in serving/, numpy only)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([vocab.encode(prompt)])
    logits, state = model(ids)
    out = prompt
    for _ in range(length):
        probs = torch.softmax(logits[0, -1] / temperature, dim=-1)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        out += vocab.chars[nxt]
        if out.endswith(abc_data.TUNE_SEPARATOR):
            break
        logits, state = model(torch.tensor([[nxt]]), state)
    return out.strip()


def train(cfg: Config, out_dir: Path, *, progress: bool = True) -> dict:
    """Train, keep the best epoch by validation bits per character, write the run folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    set_training_threads(cfg.threads)
    splits, train_tunes, val_tunes, test_tunes = load_data(cfg)
    train_text = abc_data.join_tunes(train_tunes)
    vocab = abc_data.Vocabulary.from_text(train_text)
    train_ids = np.asarray(vocab.encode(train_text), np.int64)
    val_text = abc_data.join_tunes(val_tunes)
    val_ids = np.asarray(vocab.encode(val_text, unknown="drop"), np.int64)
    dropped = len(val_text) - len(val_ids)

    model = CharLSTM(len(vocab), cfg.embedding_dim, cfg.hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = np.random.default_rng(cfg.seed)
    steps_per_epoch = max(1, len(train_ids) // (cfg.seq_len * cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (
        1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    if progress:
        print(f"folk-lstm: {len(train_tunes)} training tunes ({len(train_ids):,} chars), {len(val_tunes)} validation, "
              f"vocabulary {len(vocab)}; LSTM {cfg.hidden_size}, {steps_per_epoch} steps/epoch x {cfg.epochs} epochs",
              flush=True)

    history: list[dict] = []
    best = KeepBest(cfg.patience, higher_is_better=False)
    started = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        bar = tqdm(random_batches(train_ids, cfg.seq_len, cfg.batch_size, steps_per_epoch, generator),
                   total=steps_per_epoch, desc=f"folk-lstm epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not progress or not sys.stderr.isatty(), leave=False)
        total_loss = 0.0
        for step, (x, y) in enumerate(bar, 1):
            logits, _ = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
            bar.set_postfix(loss=f"{total_loss / step:.3f}")
        model.eval()
        val_bpc = bits_per_char(torch_step_fn(model), val_ids)
        train_loss = total_loss / steps_per_epoch
        history.append({"epoch": epoch, "train_loss": train_loss,
                        "val_loss": val_bpc * math.log(2), "val_bits_per_char": val_bpc})
        if progress:
            print(f"folk-lstm epoch {epoch}: train loss {train_loss:.4f}  val bits/char {val_bpc:.4f}  "
                  f"({time.time() - started:.0f}s)", flush=True)
        if best.update(epoch, val_bpc, model):
            if progress:
                print(f"early stop: no better validation bits/char for {cfg.patience} epochs")
            break

    best_bpc, best_epoch, best_state = best.score, best.epoch, best.state
    model.load_state_dict(best_state)
    model.eval()
    test_ids = np.asarray(vocab.encode(abc_data.join_tunes(test_tunes), unknown="drop"), np.int64)
    test_bpc = bits_per_char(torch_step_fn(model), test_ids)
    save_file(best_state, str(out_dir / "model.safetensors"))
    config = {**asdict(cfg), "vocab_size": len(vocab),
              "architecture": f"embedding{cfg.embedding_dim}-lstm{cfg.hidden_size}-dense{len(vocab)}"}
    metrics = {"best_epoch": best_epoch, "val_bits_per_char": best_bpc, "test_bits_per_char": test_bpc,
               "train_tunes": len(train_tunes), "val_tunes": len(val_tunes), "test_tunes": len(test_tunes),
               "train_chars": len(train_ids), "val_chars": len(val_ids), "val_chars_dropped_unknown": dropped,
               "train_seconds": round(time.time() - started, 1), "history": history,
               "data_source": splits.source}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "vocab.json").write_text(json.dumps(vocab.chars))
    (out_dir / "split.json").write_text(json.dumps({"val": val_tunes, "test": test_tunes}))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "samples.txt").write_text("\n\n".join(sample(model, vocab, seed=s) for s in range(3)) + "\n")
    plot_curves([{k: h[k] for k in ("epoch", "train_loss", "val_loss", "val_bits_per_char")} for h in history],
                out_dir / "curves.png", title=f"folk-lstm (LSTM {cfg.hidden_size})")
    if progress:
        print(f"folk-lstm: best epoch {best_epoch}, val {best_bpc:.4f} bits/char, test {test_bpc:.4f} bits/char "
              f"in {metrics['train_seconds']:.0f}s", flush=True)
    return metrics


def load_checkpoint(run_dir: Path) -> tuple[CharLSTM, dict, abc_data.Vocabulary]:
    """Rebuild the model from a run folder (safetensors only: nothing is unpickled)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    vocab = abc_data.Vocabulary(json.loads((run_dir / "vocab.json").read_text()))
    model = CharLSTM(config["vocab_size"], config["embedding_dim"], config["hidden_size"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    return model.eval(), config, vocab
