"""Character-level music generators (folk-lstm) on the device: ABC tunes from a prompt.

Two graphs: `prompt` reads the whole prompt in one call, `step` writes one character per
call, (token, h, c) -> (logits, h', c'); the LSTM state lives here between calls.
Sampling is the tune family's processing (edgestack/families/tune.py, copied into the
bundle), as on the server: temperature, top-k, top-p, a seed (same seed and parameters, same
tune), a maximum length, and a stop at the blank line that ends a tune. Needs numpy and
onnxruntime only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:  # inside a bundle: `edgestack bundle` copied the family's processing here
    from .families import tune as processing
except ModuleNotFoundError as missing:  # in the source tree (any other missing module is a real error)
    if missing.name != f"{__package__}.families":
        raise
    from edgestack.families import tune as processing

MAX_TEMPERATURE = processing.MAX_TEMPERATURE

CLI_HELP = ("write ABC folk tunes: give prompts with --prompt (repeatable) or as files; same --seed and "
            "parameters, same tune")
LATENCY_UNIT = "1 character"
API_EXAMPLE = 'model.generate("X:1\\nT:", seed=7, max_length=400, temperature=0.9)["tune"]'


graphs = processing.graph_files


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


class Model(processing.Generator):
    """A folk-lstm bundle: `generate(prompt, seed=..., ...)` -> the tune."""

    def __init__(self, bundle_dir: Path, manifest: dict, sessions: dict):
        self.bundle_dir, self.manifest = Path(bundle_dir), manifest
        chars = json.loads((self.bundle_dir / manifest["vocabulary"]["file"]).read_text())
        super().__init__(sessions["step"], sessions["prompt"], chars, manifest["generation"])
        self._bench_state = None

    def generate(self, prompt: str | None = None, **sampling) -> dict:
        answer = super().generate(prompt, **sampling)
        answer.pop("params")
        return answer

    def predict_one(self, _sample=None) -> int:
        """One generated character from a fixed state (the batch-1 path the benchmark times)."""
        if self._bench_state is None:
            self._bench_state = self.read_prompt(self.default_prompt)
        logits, h, c = self._bench_state
        token = processing.sample_index(logits, np.random.default_rng(0), 1.0, 0, 1.0)
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


def answers(model: Model, inputs: dict) -> dict:
    """The golden check's answers (edge_runner/health.py): {"prompt": str [N], "max_length": int [1]} ->
    each prompt's next-character distribution [N, vocabulary] and greedy tune (top-k 1) [N]."""
    length = int(inputs["max_length"][0])
    rows, tunes = [], []
    for prompt in map(str, inputs["prompt"]):
        logits = model.read_prompt(prompt)[0].astype(np.float64)
        rows.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
        tunes.append(model.generate(prompt, seed=0, max_length=length, top_k=1)["tune"])
    return {"probabilities": np.stack(rows), "tune": np.asarray(tunes)}


def example_golden(manifest: dict) -> dict:
    return {"prompt": np.asarray([manifest["generation"]["default_prompt"]]), "max_length": np.asarray([200])}


def example_input(manifest: dict, directory: Path) -> tuple[list[str], None]:
    """Command-line arguments for benchmarks: one fixed-seed tune of at most 200 characters."""
    path = Path(directory) / "prompt.abc"
    path.write_text(manifest["generation"]["default_prompt"])
    return [str(path), "--seed", "0", "--max-length", "200"], None
