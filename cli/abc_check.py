"""`edgestack abc-check folk-lstm`: the quality gate of the tune generator, measured.

Samples N tunes (seeds 0..N-1, temperature 1.0 by default) with the served runner
(numpy + ONNX Runtime, no server needed) and counts:

  headers     parses as one tune: X:, T:, M:, K: headers, then a body of music after K:
  midi        headers, and abc2midi writes a MIDI file with notes (what /render_midi accepts)
  no_errors   headers, and abc2midi (a strict ABC parser) reports no error at all; even
              real tunes fail this (repeat endings abc2midi dislikes), see the reference column
  ended       the model ended the tune itself (a blank line) before the length limit

The same checks on the held-out test tunes of the training corpus give the ceiling: even
real tunes are not all error-free for abc2midi. A table on screen, JSON (with every tune)
on disk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgestack import artifact, registry
from edgestack.errors import UsageError
from serving import abc_tools

CHECKS = ("headers", "midi", "no_errors", "ended")


def check_tune(tune: str) -> dict:
    problems = abc_tools.header_problems(tune)
    result = abc_tools.abc2midi(tune)
    headers = not problems
    return {"headers": headers, "no_errors": headers and not result.errors, "midi": headers and result.notes > 0,
            "problems": problems, "abc2midi_errors": result.errors[:5], "notes": result.notes}


def summarize(rows: list[dict]) -> dict:
    return {k: sum(bool(r.get(k)) for r in rows) / len(rows) for k in CHECKS if all(k in r for r in rows)}


def reference_tunes(art: artifact.Artifact, n: int) -> list[str]:
    """The first n test tunes of the corpus the model was trained on (needs the training data)."""
    from training.data import abc as abc_data

    config = art.meta.training.config
    splits = abc_data.load_splits(config["corpus"], config.get("data_dir"), seed=config["seed"])
    return splits.test[:n]


def run(args) -> dict:
    from serving.runner import RunnerOptions
    from serving.tune import MusicGenerator

    if not abc_tools.abc2midi_available():
        raise FileNotFoundError("abc-check needs abc2midi (Debian: apt-get install abcmidi; `make data` does it)")
    art = artifact.load_latest(args.model)
    if registry.family(art.meta.family).name != "tune":
        raise UsageError(f"{args.model} is not a tune generator (family {art.meta.family!r})")
    runner = MusicGenerator(art, RunnerOptions(device="cpu", variant=args.variant, threads=args.threads))
    print(f"abc-check {args.model} v{art.version} ({runner.variant}): {args.n} tunes at temperature "
          f"{args.temperature}, top_k {args.top_k}, top_p {args.top_p}, seeds {args.seed}..{args.seed + args.n - 1}",
          flush=True)
    from tqdm import tqdm

    rows, started = [], time.time()
    for i in tqdm(range(args.n), desc="sampling", unit="tune", disable=not sys.stderr.isatty()):
        params = runner.check(args.prompt, args.max_length, args.temperature, args.top_k, args.top_p, args.seed + i)
        out = runner.complete(params)
        rows.append({"seed": params.seed, "tune": out["tune"], "ended": out["stop_reason"] == "end_of_tune",
                     **check_tune(out["tune"])})
    seconds = time.time() - started
    shares = summarize(rows)
    reference = {}
    if not args.no_reference:
        try:
            real = [check_tune(t) for t in reference_tunes(art, args.n)]
            reference = {**summarize(real), "n": len(real)}
        except (FileNotFoundError, KeyError, ValueError) as exc:
            print(f"(no reference on real tunes: {exc})")
    print(f"\n{'check':10s} {'generated':>10s} {'real test tunes':>16s}")
    for key in CHECKS:
        ref = f"{reference[key]:16.1%}" if key in reference else f"{'-':>16s}"
        print(f"{key:10s} {shares[key]:10.1%} {ref}")
    chars = sum(len(r["tune"]) for r in rows)
    print(f"\n{args.n} tunes, {chars:,} characters in {seconds:.1f}s; "
          f"sample (seed {rows[0]['seed']}):\n\n{rows[0]['tune']}\n")
    result = {"model": args.model, "version": art.version, "variant": runner.variant, "n": args.n,
              "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
              "shares": shares, "reference_real_tunes": reference, "seconds": seconds,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tunes": rows}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"abc-check-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"JSON: {path}")
    if args.min_share is not None and shares["midi"] < args.min_share:
        print(f"FAILED: {shares['midi']:.1%} of tunes render to MIDI; required {args.min_share:.0%}")
        result["failed"] = True
    return result


def add_parsers(sub) -> None:
    p = sub.add_parser("abc-check", help="quality gate: how many sampled tunes are valid ABC and render to MIDI",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="folk-lstm", help="a tune generator (default folk-lstm)")
    p.add_argument("--n", type=int, default=100, help="how many tunes to sample (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="top-k cut (default 0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus cut (default 1.0: off)")
    p.add_argument("--seed", type=int, default=0, help="first seed; tune i uses seed+i (default 0)")
    p.add_argument("--prompt", default=None, help='how every tune begins (default "X:1\\n")')
    p.add_argument("--max-length", type=int, default=1000, help="most new characters per tune (default 1000)")
    p.add_argument("--variant", default=None, help="fp32 or int8 (default: int8 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--no-reference", action="store_true", help="skip the same checks on real test tunes")
    p.add_argument("--min-share", type=float, default=None,
                   help="exit 1 if fewer than this share (0..1) of the tunes render to MIDI")
    p.add_argument("--out", default="bench-results", help="folder for the JSON result (default bench-results)")

    def cmd(args) -> int:
        return 1 if run(args).get("failed") else 0

    p.set_defaults(func=cmd)
