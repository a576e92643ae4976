"""Character-level music generators (folk-lstm) on the device: ABC tunes from a prompt.

Two graphs: `prompt` reads the whole prompt in one call, `step` writes one character per
call, (token, h, c) -> (logits, h', c'); the LSTM state lives here between calls.
Sampling is the server's (serving/music_generator.py): temperature, top-k, top-p, a seed
(same seed and parameters, same tune), a maximum length, and a stop at the blank line
that ends a tune. Needs numpy and onnxruntime only.
"""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path

import numpy as np

MAX_TEMPERATURE = 5.0

CLI_HELP = ("write ABC folk tunes: give prompts with --prompt (repeatable) or as files; same --seed and "
            "parameters, same tune")
LATENCY_UNIT = "1 character"
API_EXAMPLE = 'model.generate("X:1\\nT:", seed=7, max_length=400, temperature=0.9)["tune"]'


def graphs(manifest: dict, variant: str) -> dict[str, str]:
    meta = manifest["variants"][variant]
    return {"step": meta["file"], "prompt": meta["prompt_file"]}


def bundle_files(manifest: dict) -> list[str]:
    return [manifest["vocabulary"]["file"]]


def add_arguments(parser) -> None:
    parser.add_argument("prompt_files", nargs="*", help="files whose whole text is a prompt")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable; default: X:1)")
    parser.add_argument("--seed", type=int, help="random seed (default: a random one, printed with the tune)")
    parser.add_argument("--max-length", type=int, default=1000, help="most new characters (default 1000)")
    parser.add_argument("--temperature", type=float, default=1.0, help=f"(0, {MAX_TEMPERATURE:g}], default 1")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest characters (0: off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1: off)")


def sample_index(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int, top_p: float) -> int:
    """One draw from softmax(logits / temperature), cut to the top-k and the top-p nucleus.
    (The server's function, character for character: the same seed gives the same tune.)"""
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < len(z):
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        ranked = p[order]
        keep = np.cumsum(ranked) - ranked < top_p  # smallest set whose mass reaches top_p
        nucleus = np.zeros_like(p)
        nucleus[order[keep]] = ranked[keep]
        p = nucleus / nucleus.sum()
    cumulative = np.cumsum(p)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), len(p) - 1))


class Model:
    """A folk-lstm bundle: `generate(prompt, seed=..., ...)` -> the tune."""

    def __init__(self, bundle_dir: Path, manifest: dict, sessions: dict, chars: list[str] | None = None):
        self.bundle_dir, self.manifest = Path(bundle_dir), manifest
        self.step_session, self.prompt_session = sessions["step"], sessions["prompt"]
        self.chars: list[str] = chars or json.loads((self.bundle_dir / manifest["vocabulary"]["file"]).read_text())
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        generation = manifest["generation"]
        self.hidden, self.end_of_tune = int(generation["hidden_size"]), generation["end_of_tune"]
        self.default_prompt = generation["default_prompt"]
        self._bench_state = None

    def check(self, prompt, max_length: int, temperature: float, top_k: int, top_p: float) -> str:
        """Raise ValueError naming the problem; returns the prompt."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be text, got {type(prompt).__name__}")
        unknown = sorted({ch for ch in prompt if ch not in self.index})
        if unknown:
            raise ValueError(f"prompt has characters outside the model's vocabulary: "
                             f"{', '.join(repr(ch) for ch in unknown[:10])}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a whole number >= 1, got {max_length!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                and 0 < temperature <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be in (0, {MAX_TEMPERATURE:g}], got {temperature!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= len(self.chars):
            raise ValueError(f"top_k must be a whole number from 0 to {len(self.chars)}, got {top_k!r}")
        if not (isinstance(top_p, (int, float)) and math.isfinite(top_p) and 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        return prompt

    def read_prompt(self, text: str):
        ids = np.asarray([[self.index[ch] for ch in self.end_of_tune + text]], np.int64)
        h = np.zeros((1, 1, self.hidden), np.float32)
        logits, h, c = self.prompt_session.run(None, {"tokens": ids, "h": h, "c": h.copy()})
        return logits[0, -1], h, c

    def step(self, token: int, h, c):
        logits, h, c = self.step_session.run(None, {"token": np.asarray([token], np.int64), "h": h, "c": c})
        return logits[0], h, c

    def generate(self, prompt: str | None = None, *, seed: int | None = None, max_length: int = 1000,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> dict:
        prompt = self.check(self.default_prompt if prompt is None else prompt, max_length, temperature, top_k, top_p)
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        rng = np.random.default_rng(seed)
        logits, h, c = self.read_prompt(prompt)
        text, generated = prompt, []
        for _ in range(max_length):
            token = sample_index(logits, rng, temperature, top_k, top_p)
            text += self.chars[token]
            if text.endswith(self.end_of_tune):
                break  # the blank line that ends a tune is not part of it
            generated.append(self.chars[token])
            logits, h, c = self.step(token, h, c)
        return {"tune": (prompt + "".join(generated)).rstrip("\n"), "generated_chars": len(generated),
                "stop_reason": "end_of_tune" if len(generated) < max_length else "max_length", "seed": seed}

    def predict_one(self, _sample=None) -> int:
        """One generated character from a fixed state (the batch-1 path the benchmark times)."""
        if self._bench_state is None:
            self._bench_state = self.read_prompt(self.default_prompt)
        logits, h, c = self._bench_state
        token = sample_index(logits, np.random.default_rng(0), 1.0, 0, 1.0)
        self.step(token, h, c)
        return token

    def run_cli(self, args) -> list[dict]:
        prompts = [(f"--prompt {i + 1}", p) for i, p in enumerate(args.prompt)]
        prompts += [(path, Path(path).read_text()) for path in args.prompt_files]
        results = []
        for i, (name, prompt) in enumerate(prompts or [("default prompt", self.default_prompt)]):
            seed = None if args.seed is None else args.seed + i
            try:
                results.append({"input": name, **self.generate(prompt, seed=seed, max_length=args.max_length,
                                                               temperature=args.temperature, top_k=args.top_k,
                                                               top_p=args.top_p)})
            except ValueError as exc:
                results.append({"input": name, "error": str(exc)})
        return results

    @staticmethod
    def format_text(result: dict) -> str:
        if "error" in result:
            return f"% {result['input']}: error: {result['error']}\n"
        return (f"% {result['input']}: seed {result['seed']}, {result['generated_chars']} characters, "
                f"{result['stop_reason']}\n{result['tune']}\n")


def example_input(manifest: dict, directory: Path) -> tuple[list[str], None]:
    """Command-line arguments for benchmarks: one fixed-seed tune of at most 200 characters."""
    path = Path(directory) / "prompt.abc"
    path.write_text(manifest["generation"]["default_prompt"])
    return [str(path), "--seed", "0", "--max-length", "200"], None
