"""The tune family's processing (folk-lstm): sampling parameters, the sampler, the
character loop that writes a tune, the result.

Two graphs run it: `prompt` reads the whole prompt in one call, `step` writes one character
per call, (token, h, c) -> (logits, h', c'); the caller owns the sessions and hands in
`read_prompt` and `step` functions. Same seed and parameters, same tune, on the server
(serving/tune.py), in batch jobs and on a device. numpy only.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from .common import InputError

MAX_TEMPERATURE = 5.0
DEFAULT_MAX_LENGTH = 1000


@dataclass(frozen=True)
class SamplingParams:
    prompt: str = "X:1\n"
    max_length: int = DEFAULT_MAX_LENGTH  # most new characters
    temperature: float = 1.0
    top_k: int = 0                        # 0: off
    top_p: float = 1.0                    # 1: off
    seed: int | None = None               # None: a random one, returned so the tune can be had again


def check_sampling(prompt=None, max_length=None, temperature=1.0, top_k=0, top_p=1.0, seed=None, *,
                   vocabulary: dict[str, int], default_prompt: str, max_prompt_chars: int | None = None,
                   max_new_chars: int | None = None) -> SamplingParams:
    """Every caller mistake becomes an InputError naming the parameter and the allowed range."""
    prompt = default_prompt if prompt is None else prompt
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be text, got {type(prompt).__name__}")
    if max_prompt_chars is not None and len(prompt) > max_prompt_chars:
        raise InputError(f"prompt has {len(prompt)} characters; the limit is {max_prompt_chars} "
                         "(EDGESTACK_MAX_PROMPT_CHARS)", 413)
    unknown = sorted({ch for ch in prompt if ch not in vocabulary})
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown[:10])
        raise InputError(f"prompt has characters outside the model's vocabulary: {shown} "
                         f"(it knows {len(vocabulary)} characters of ABC notation)")
    limit = max_new_chars
    if max_length is None:
        max_length = DEFAULT_MAX_LENGTH if limit is None else min(DEFAULT_MAX_LENGTH, limit)
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise InputError(f"max_length must be a whole number, got {max_length!r}")
    if max_length < 1 or (limit is not None and max_length > limit):
        raise InputError(f"max_length must be between 1 and {limit} (EDGESTACK_MAX_NEW_CHARS), got {max_length}"
                         if limit is not None else f"max_length must be a whole number >= 1, got {max_length}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or not 0 < temperature <= MAX_TEMPERATURE:
        raise InputError(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}], got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= len(vocabulary):
        raise InputError(f"top_k must be a whole number from 0 (off) to {len(vocabulary)}, got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) \
            or not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise InputError(f"seed must be a whole number from 0 to 2**63-1, got {seed!r}")
    if seed is None:
        seed = secrets.randbelow(2**31)
    return SamplingParams(prompt, max_length, float(temperature), top_k, float(top_p), seed)


def sample_index(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int, top_p: float) -> int:
    """One draw from softmax(logits / temperature), cut to the top-k and the top-p nucleus."""
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


def prompt_ids(text: str, vocabulary: dict[str, int], end_of_tune: str) -> np.ndarray:
    """The prompt as the model reads it: after an end of tune (as tunes follow each other in training)."""
    return np.asarray([[vocabulary[ch] for ch in end_of_tune + text]], np.int64)


def pieces(params: SamplingParams, read_prompt: Callable, step: Callable, chars: list[str], end_of_tune: str,
           stop=None) -> Iterator[str]:
    """New characters one by one: stops at max_length, at the end of the tune (the blank line
    that ends it is not part of it), or when `stop` (a threading.Event) is set.
    read_prompt(text) -> (last logits, h, c); step(token, h, c) -> (logits, h, c)."""
    rng = np.random.default_rng(params.seed)
    logits, h, c = read_prompt(params.prompt)
    text = params.prompt
    for _ in range(params.max_length):
        if stop is not None and stop.is_set():
            return
        token = sample_index(logits, rng, params.temperature, params.top_k, params.top_p)
        text += chars[token]
        if text.endswith(end_of_tune):
            return
        yield chars[token]
        logits, h, c = step(token, h, c)


def result(params: SamplingParams, generated: str) -> dict:
    """The answer for a finished tune: the tune, how it stopped, the seed and parameters to repeat it."""
    return {"tune": (params.prompt + generated).rstrip("\n"), "generated_chars": len(generated),
            "stop_reason": "end_of_tune" if len(generated) < params.max_length else "max_length",
            "seed": params.seed, "params": {k: v for k, v in asdict(params).items() if k != "prompt"}}


def graph_files(manifest: dict, variant: str) -> dict[str, str]:
    """Graph role -> artifact file of a variant: the step graph and the prompt graph."""
    meta = manifest["variants"][variant]
    return {"step": meta["file"], "prompt": meta["prompt_file"]}


class Generator:
    """Writes tunes with two ONNX Runtime sessions (`onnxruntime.InferenceSession`s: step and
    prompt graphs); the LSTM state lives here between calls."""

    def __init__(self, step_session, prompt_session, chars: list[str], generation: dict):
        self.step_session, self.prompt_session, self.chars = step_session, prompt_session, chars
        self.index = {ch: i for i, ch in enumerate(chars)}
        self.hidden, self.end_of_tune = int(generation["hidden_size"]), generation["end_of_tune"]
        self.default_prompt = generation["default_prompt"]

    def zero_state(self, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
        zeros = np.zeros((1, batch, self.hidden), np.float32)
        return zeros, zeros.copy()

    def read_prompt(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prompt read in one call: the last logits and the state."""
        h, c = self.zero_state()
        logits, h, c = self.prompt_session.run(None, {"tokens": prompt_ids(text, self.index, self.end_of_tune),
                                                      "h": h, "c": c})
        return logits[0, -1], h, c

    def step(self, token: int, h: np.ndarray, c: np.ndarray):
        logits, h, c = self.step_session.run(None, {"token": np.asarray([token], np.int64), "h": h, "c": c})
        return logits[0], h, c

    def check(self, prompt=None, max_length=None, temperature=1.0, top_k=0, top_p=1.0, seed=None, **limits
              ) -> SamplingParams:
        return check_sampling(prompt, max_length, temperature, top_k, top_p, seed, vocabulary=self.index,
                              default_prompt=self.default_prompt, **limits)

    def pieces(self, params: SamplingParams, stop=None) -> Iterator[str]:
        return pieces(params, self.read_prompt, self.step, self.chars, self.end_of_tune, stop)

    def generate(self, prompt: str | None = None, *, seed: int | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> dict:
        """A whole tune (InputError for bad parameters): tune, generated_chars, stop_reason, seed, params."""
        params = self.check(prompt, max_length, temperature, top_k, top_p, seed)
        return result(params, "".join(self.pieces(params)))
