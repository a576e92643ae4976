"""Device checks of the edge bundles (issue 21), on emulated CPUs of this x86 machine.

`scripts/arm64-check.sh` -> `python -m benchmarks.device_check arm64`: each model's bundle
(int8 .ort graphs + edge_runner) runs under an emulated arm64 CPU (qemu-aarch64, a Debian
arm64 root, the aarch64 onnxruntime/numpy/tokenizers wheels) on real test inputs, and its
answers are compared with the same bundle's answers on this x86 machine, by the bundle's own
golden comparison (bundle/edge_runner/health.py), judged by the model's gate (`arm64_gate`,
the one place for it): statically quantized models (the CNNs) and folk-lstm: every label the
same, every probability within PROBABILITY_TOLERANCE, greedy tunes character for character;
dynamically quantized classifiers (the MiniLM transformers), whose int8 answers move with the
float rounding of the CPU (and with the batch), by what matters: labels that differ bounded by
the model's int8 gate, probabilities within the int8 graph's own distance from the fp32 graph on
the same inputs (measured on x86 each run; never below PROBABILITY_TOLERANCE).

`scripts/avx2-check.sh` -> `python -m benchmarks.device_check avx2`: each model's int8
variant scored on its whole test split on an emulated AVX2-only x86 (qemu-x86_64 -cpu
Haswell-noTSX: no AVX-512, no VNNI) and natively, by the same ORT session worker in both
places (bundle/emulate.py RemoteSession), so only the CPU differs. It passes when the
emulated score is within the model's int8 gate (the manifest's quantization budget) of the
native one; `--record` writes the result into the artifact manifest's quantization entry
(`isa_checks`). A 255 x 127 MatMulInteger probe shows that the emulated CPU really takes the
AVX2 int8 path (its u8 x s8 kernel saturates: 1,048,544 instead of 2,072,640).

Both print a table and write JSON (bench-results/). Emulated timings mean nothing; answers do.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bundle import emulate
from bundle.make import PROBABILITY_TOLERANCE, golden_answers, make_bundle, write_golden
from bundle.runtimes import CANDIDATES
from edgestack import artifact, registry
from edgestack.cpu import cpu_info
from edgestack.errors import UsageError

DEFAULT_MODELS = registry.DEFAULT_MODELS
GOLDEN_CANDIDATES = 64   # test inputs the bundle's golden set is picked from (the 8 answered most confidently)
ARM64_INPUTS = {"image-classification": 200, "text-classification": 100, "text-generation": 3}
TUNE_LENGTH = 200        # greedy characters per prompt, compared character for character
TEXT_LIMIT = 128         # avx2: test texts per transformer (emulated AVX2 runs a MiniLM ~500x slower than native)
TEST_SPLIT_TASKS = ("image-classification", "text-classification", "text-generation")  # tasks with a test split here


# ------------------------------------------------------------------ real test inputs

def _config(art: artifact.Artifact) -> dict:
    return art.meta.training.config if art.meta.training else {}


def test_split(art: artifact.Artifact) -> tuple[dict, np.ndarray | None]:
    """The artifact's whole test split, as the family's golden inputs ({"pixels": ...} or
    {"texts": ...}) and labels; folk-lstm: {"tunes": test tunes}, no labels."""
    config = _config(art)
    if art.task == "image-classification":
        from training.data import images

        loaders = {"fashion": images.fashion_mnist, "digits": images.digits}
        if config.get("dataset", "fashion") not in loaders:
            raise UsageError(f"{art.name}: trained on {config.get('dataset')!r} data, which has no packaged test split")
        data = loaders[config.get("dataset", "fashion")](config.get("data_dir"), seed=config.get("seed", 0))
        return {"pixels": data.test.images}, data.test.labels
    if art.task == "text-classification":
        from training.data import text

        data = text.load(config["dataset"], config.get("data_dir"), config.get("seed", 0))
        return {"texts": np.asarray(data.test.texts)}, np.asarray(data.test.labels)
    if art.task == "text-generation":
        from training.data import abc

        splits = abc.load_splits(config.get("corpus", "irish"), config.get("data_dir"), seed=config.get("seed", 0))
        limit = config.get("val_limit")
        return {"tunes": np.asarray(splits.test[:limit] if limit else splits.test)}, None
    raise UsageError(f"{art.name}: no device check for task {art.task!r}")


def test_inputs(art: artifact.Artifact, n: int) -> dict:
    """n real test inputs in the family's golden format (edge_runner <family>.answers); folk-lstm:
    the header of n test tunes (up to the K: line) as prompts, TUNE_LENGTH greedy characters each."""
    split, _ = test_split(art)
    if "tunes" in split:
        prompts = [tune[:tune.index("K:")] if "K:" in tune else tune.split("\n", 1)[0] + "\n" for tune in split["tunes"][:n]]
        return {"prompt": np.asarray(prompts), "max_length": np.asarray([TUNE_LENGTH])}
    return {k: v[:n] for k, v in split.items()}


def bundle_with_golden(name: str, out: Path, root: Path | None, **options):
    """The model's bundle, its health check's golden inputs taken from the real test split."""
    art = artifact.load_latest(name, root)
    return make_bundle(name, out, root=root, golden=test_inputs(art, GOLDEN_CANDIDATES), progress=False, **options)


# ------------------------------------------------------------------ arm64

def held_to_fp32(task: str, quantization: dict | None) -> bool:
    """A dynamically quantized classifier (the MiniLM transformers): see arm64_gate."""
    return (quantization or {}).get("format") == "dynamic" and task in ("image-classification", "text-classification")


def arm64_gate(task: str, quantization: dict | None, rows: int, int8_error: float | None = None) -> dict:
    """How arm64's answers are judged against x86's: the one place for it (printed with the table).

    - "same int8": statically quantized graphs (QDQ, calibrated scales), generators and imported
      graphs: both CPUs do the same integer arithmetic (measured: CNN probabilities equal to 1e-17,
      the int8 LSTM to 1e-8), so every label equal and every probability within
      PROBABILITY_TOLERANCE.
    - "int8 vs fp32": dynamically quantized classifiers (activations quantized at run time: the
      MiniLM transformers). A float difference of one unit in the last place (layer norm, GELU,
      softmax are rounded differently by each CPU's kernels) moves an activation across a rounding
      step of the next DynamicQuantizeLinear, and the changed integer spreads through the
      following layers; the integer MatMuls themselves are exact on both CPUs (docs/bundles.md).
      Both answers are equally valid roundings of the fp32 model, so they are held to it: labels
      that differ at most the int8 gate's share of the inputs (the accuracy on the slice moves by
      at most that), probabilities within `int8_error`, the x86 int8 graph's own largest distance
      from the fp32 graph on the same inputs and batches, never below PROBABILITY_TOLERANCE."""
    q = quantization or {}
    if held_to_fp32(task, q):
        if int8_error is None:
            raise ValueError("a dynamically quantized classifier's gate needs its int8 error against fp32")
        budget = float(q.get("budget") or 0.0)
        return {"rule": "int8 vs fp32", "labels_may_differ": int(budget * rows + 1e-9),
                "probability_tolerance": max(PROBABILITY_TOLERANCE, float(int8_error)),
                "int8_vs_fp32": float(int8_error), "int8_budget": budget}
    return {"rule": "same int8", "labels_may_differ": 0, "probability_tolerance": PROBABILITY_TOLERANCE}


def judge(report: dict, gate: dict) -> list[str]:
    """The problems of an emulated run's health report (bundle/edge_runner/health.py compare, which
    holds every label and PROBABILITY_TOLERANCE) under the model's gate: its own label and
    probability findings are replaced by the gate's; every other problem (a missing output, a
    shape, a tune that differs) stays."""
    problems = [p for p in report["problems"] if not p.startswith("probabilities: ")]
    differ = report["rows"] - report["labels_agree"]
    if differ > gate["labels_may_differ"]:
        problems.append(f"{differ} of {report['rows']} labels differ (at most {gate['labels_may_differ']})")
    if report["max_probability_difference"] > gate["probability_tolerance"]:
        problems.append(f"a probability differs by {report['max_probability_difference']:.4f} "
                        f"(tolerance {gate['probability_tolerance']:.4f}, {gate['rule']})")
    return problems


def int8_error(name: str, root: Path | None, inputs: dict, int8_answers: dict) -> float:
    """The largest distance of the int8 bundle's probabilities from the fp32 graph's on the same inputs
    and batches, on this machine (the fp32 graph bundled by the same code, answered by the same runner)."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = make_bundle(name, Path(tmp), variant="fp32", root=root, archive=False, progress=False)
        reference = golden_answers(fp32.path, inputs)
    return float(np.max(np.abs(int8_answers["probabilities"].astype(np.float64) - reference["probabilities"])))


def arm64_row(name: str, root: Path | None, out: Path, onnxruntime: str | None, cpu: str | None = None,
              runtimes: tuple[str, ...] | None = None) -> dict:
    """runtimes: also measure the oldest onnxruntime (x86-64 wheels) that answers the bundle right."""
    art = artifact.load_latest(name, root)
    built = bundle_with_golden(name, out, root, runtimes=list(runtimes) if runtimes else None)
    inputs = test_inputs(art, ARM64_INPUTS[art.task])
    check = out / f"{built.path.name}.arm64-check.npz"
    expected = golden_answers(built.path, inputs)  # this x86 machine's answers
    write_golden(check, inputs, expected)
    quantization = art.manifest.get("quantization")
    gate = arm64_gate(art.task, quantization, len(next(iter(inputs.values()))),
                      int8_error(name, root, inputs, expected) if held_to_fp32(art.task, quantization) else None)
    prefix, env = emulate.arm64_python(onnxruntime, tokenizers=art.task == "text-classification", cpu=cpu)
    if onnxruntime:  # asked for a version on purpose: whether it answers right, whatever the manifest's minimum
        env["EDGE_RUNNER_ANY_RUNTIME"] = "1"
    started = time.time()
    run = subprocess.run([*prefix, "-m", "edge_runner", "--health", str(check), "--json", "--threads", "2"],
                         check=False, cwd=built.path, env=env, capture_output=True, text=True, timeout=1800)
    row = {"model": name, "version": built.manifest["version"], "inputs": len(next(iter(inputs.values()))),
           "bundle": str(built.path), "emulated_seconds": round(time.time() - started, 1),
           "cpu": prefix[prefix.index("-cpu") + 1], "bundle_bytes": sum(
               p.stat().st_size for p in built.path.rglob("*") if p.is_file()),
           "archive_bytes": built.archive.stat().st_size if built.archive else None,
           "min_onnxruntime": built.manifest["runtime"]["min_onnxruntime"] if runtimes else None, "gate": gate}
    if run.returncode not in (0, 1) or not run.stdout.startswith("{"):
        return {**row, "ok": False, "error": (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]}
    report = json.loads(run.stdout)
    problems = judge(report, gate)
    return {**row, **{k: report[k] for k in ("rows", "labels_agree", "max_probability_difference", "strings",
                                             "strings_equal", "onnxruntime", "machine")},
            "ok": not problems, "problems": problems, "health_problems": report["problems"]}


def gate_text(gate: dict) -> str:
    if gate["rule"] == "same int8":
        return f"{gate['probability_tolerance']:g}, every label (same int8)"
    return (f"{gate['probability_tolerance']:.3f} (x86 int8 vs fp32), {gate['labels_may_differ']} label(s) may differ "
            f"(int8 gate {100 * gate['int8_budget']:g} pts)")


def arm64_table(rows: list[dict]) -> str:
    lines = [("| model | inputs | labels agree | max probability difference | gate: probability tolerance, labels | "
              "greedy tunes equal | onnxruntime (arm64) | oldest onnxruntime (measured) | result |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gate = gate_text(r["gate"]) if "gate" in r else "-"
        if "error" in r:
            lines.append(f"| {r['model']} | {r['inputs']} | - | - | {gate} | - | - | - | FAILED: {r['error']} |")
            continue
        tunes = f"{r['strings_equal']}/{r['strings']}" if r["strings"] else "-"
        lines.append(f"| {r['model']} v{r['version']} | {r['inputs']} | {r['labels_agree']}/{r['rows']} | "
                     f"{r['max_probability_difference']:.2e} | {gate} | {tunes} | {r['onnxruntime']} ({r['machine']}, "
                     f"{r['cpu']}) | {r.get('min_onnxruntime') or '-'} | "
                     f"{'pass' if r['ok'] else 'FAIL: ' + '; '.join(r['problems'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ AVX2-only x86

def int8_graph(art: artifact.Artifact) -> Path:
    """The int8 graph the test score is measured on (folk-lstm: its prompt graph, as the build does)."""
    meta = art.variants["int8"]
    return art.file(meta.get("prompt_file") or meta["file"])


def score(art: artifact.Artifact, session: emulate.RemoteSession, split: dict, labels) -> tuple[float, np.ndarray]:
    """The build's test metric with `session` (accuracy, or bits per character for folk-lstm), and
    every output the graph gave (logits), to compare the two CPUs number by number."""
    outputs: list[np.ndarray] = []

    def run(feeds: dict) -> list[np.ndarray]:
        answer = session.run(feeds)
        outputs.append(answer[0].reshape(-1))
        return answer

    if art.task == "image-classification":
        from edgestack.families.image import to_model_input

        pre, name = art.manifest["preprocessing"], session.input_names[0]
        predicted = np.concatenate([run({name: to_model_input(split["pixels"][i:i + 500], pre)})[0].argmax(1)
                                    for i in range(0, len(split["pixels"]), 500)])
        return float((predicted == labels).mean()), np.concatenate(outputs)
    if art.task == "text-classification":
        from edgestack.families.text import Encoder

        pre = art.manifest["preprocessing"]
        encoder, texts, predicted = Encoder(art.file(pre["tokenizer"]), pre["max_length"]), list(split["texts"]), []
        for i in range(0, len(texts), 32):
            ids, mask, _, _ = encoder(texts[i:i + 32])
            known = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            predicted.append(run({k: known[k] for k in session.input_names})[0].argmax(1))
        return float((np.concatenate(predicted) == labels).mean()), np.concatenate(outputs)
    from training.data.abc import join_tunes
    from training.tune import bits_per_char

    chars = json.loads(art.file(art.manifest["vocabulary"]["file"]).read_text())
    index = {ch: i for i, ch in enumerate(chars)}
    ids = np.asarray([index[ch] for ch in join_tunes(list(split["tunes"])) if ch in index], np.int64)
    hidden = next(i["shape"][2] for i in session.specs["inputs"] if i["name"] == "h")

    def step(tokens, state):
        if state is None:
            state = (np.zeros((1, len(tokens), hidden), np.float32),) * 2
        logits, h, c = run({"tokens": tokens.astype(np.int64), "h": state[0], "c": state[1]})
        return logits, (h, c)
    return bits_per_char(step, ids), np.concatenate(outputs)


def spread_slice(split: dict, labels: np.ndarray, limit: int | None) -> tuple[dict, np.ndarray]:
    """`limit` items of a test split, evenly spread over it (first and last included, in order), each
    input array and the labels picked by the same indices, so both CPUs score the same items and
    each keeps its label; limit None/0 or not below the split's size: the whole split."""
    whole = len(labels)
    if not limit or limit >= whole:
        return split, labels
    if limit < 0:
        raise UsageError(f"--text-limit must be 0 (all) or positive, not {limit}")
    picks = np.linspace(0, whole - 1, limit).astype(int)  # distinct: the step is at least 1
    return {k: v[picks] for k, v in split.items()}, labels[picks]


def avx2_row(name: str, root: Path | None, record: bool, threads: int, text_limit: int | None = TEXT_LIMIT) -> dict:
    """text_limit: transformer text classifiers are scored on that many test texts, evenly spread over
    the split (emulated AVX2 runs a MiniLM some 500 times slower than native); None: all."""
    art = artifact.load_latest(name, root)
    q = art.meta.quantization
    if "int8" not in art.variants or q is None or q.budget is None:
        return {"model": name, "ok": False, "error": "no int8 variant (or no int8 gate) in the artifact"}
    split, labels = test_split(art)
    whole = len(next(iter(split.values())))
    if art.task == "text-classification":
        split, labels = spread_slice(split, labels, text_limit)
    graph = int8_graph(art)
    scores, outputs, seconds, probes = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "int8-probe.onnx"
        probe.write_bytes(emulate.int8_probe_model())
        for cpu, prefix in (("native", [sys.executable]), ("avx2", emulate.haswell_python())):
            started = time.time()
            with emulate.RemoteSession(prefix, graph, threads, probe=probe) as session:
                scores[cpu], outputs[cpu] = score(art, session, split, labels)
                probes[cpu] = session.specs["int8_probe"]
            seconds[cpu] = round(time.time() - started, 1)
    if q.metric == "-bits/char":  # lower is better; the gate is a relative increase
        drop, unit = scores["avx2"] / scores["native"] - 1, "bits/char"
    else:
        drop, unit = scores["native"] - scores["avx2"], "accuracy"
    probe = probes["avx2"]
    recorded = art.variants["int8"].get("test_bits_per_char" if unit == "bits/char" else "test_accuracy")
    row = {"model": name, "version": art.version, "metric": unit, "test_size": len(next(iter(split.values()))),
           "split_size": whole, "native": scores["native"], "avx2": scores["avx2"], "manifest": recorded, "drop": drop,
           "max_output_difference": float(np.max(np.abs(outputs["native"] - outputs["avx2"]))),
           "budget": q.budget, "ok": bool(drop <= q.budget), "int8_probe": probe, "native_int8_probe": probes["native"],
           "probe_saturates": probe != emulate.EXACT_PRODUCT, "emulated_seconds": seconds["avx2"],
           "native_cpu": cpu_info(), "emulator": f"qemu-x86_64 -cpu {emulate.HASWELL}",
           "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not row["probe_saturates"]:
        row.update(ok=False, error="the emulated CPU did not take the AVX2 int8 path (probe did not saturate)")
    if record:
        record_in_manifest(art, row)
    return row


def record_in_manifest(art: artifact.Artifact, row: dict) -> None:
    """The result into the artifact manifest's quantization entry, as `isa_checks.avx2-only`
    (an extra key the schema keeps); the files' checksums are unchanged and not hashed again.
    A signed artifact is signed again (its signature covers the manifest), which needs the key."""
    from edgestack import signing
    from edgestack.settings import get_settings

    signed = (art.path / signing.SIGNATURE).is_file()
    if signed and get_settings().signing_key is None:
        raise UsageError(f"{art.name} v{art.version} is signed and recording changes its manifest: set "
                         "EDGESTACK_SIGNING_KEY to sign it again, or run without --record")
    manifest = json.loads((art.path / artifact.MANIFEST).read_text())
    entry = {k: row[k] for k in ("native", "avx2", "drop", "budget", "ok", "metric", "test_size", "split_size",
                                 "max_output_difference", "int8_probe", "emulator", "checked_at")}
    manifest["quantization"].setdefault("isa_checks", {})["avx2-only"] = entry
    files = manifest.pop("files")
    manifest.pop("schema_version", None)
    artifact.write_manifest(art.path, manifest, files)
    if signed:
        signing.sign_artifact(art.path)


def avx2_table(rows: list[dict]) -> str:
    lines = [("| model | test inputs | native int8 | AVX2-only int8 (emulated) | drop | gate | max output difference | "
              "int8 probe | result |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "native" not in r:
            lines.append(f"| {r['model']} | - | - | - | - | - | - | - | FAILED: {r['error']} |")
            continue
        fmt = (lambda v: f"{v:.4f} bits/char") if r["metric"] == "bits/char" else (lambda v: f"{100 * v:.2f}%")
        drop = f"{100 * r['drop']:+.2f}%" if r["metric"] == "bits/char" else f"{100 * r['drop']:+.2f} pts"
        gate = f"{100 * r['budget']:.0f}% bits/char" if r["metric"] == "bits/char" else f"{100 * r['budget']:.1f} pts"
        size = f"{r['test_size']} tunes" if r["metric"] == "bits/char" else str(r["test_size"])
        if r["test_size"] < r["split_size"]:
            size += f" of {r['split_size']}"
        lines.append(f"| {r['model']} v{r['version']} | {size} | {fmt(r['native'])} | {fmt(r['avx2'])} | "
                     f"{drop} | {gate} | {r['max_output_difference']:.2e} | {r['int8_probe']:,} | "
                     f"{'pass' if r['ok'] else 'FAIL'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_check",
                                     description="Edge bundles on emulated CPUs: arm64 (answers vs x86, judged "
                                                 "by each model's gate: static int8 every label and probabilities "
                                                 f"within {PROBABILITY_TOLERANCE}; dynamic int8 classifiers labels "
                                                 "within the int8 gate, probabilities within the int8 graph's own "
                                                 "distance from fp32) and AVX2-only x86 (int8 test score vs native, "
                                                 "within its gate).")
    parser.add_argument("check", choices=["arm64", "avx2"])
    parser.add_argument("models", nargs="*", help=f"served names (default: {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--artifacts", type=Path, help="artifact root (default: $EDGESTACK_ARTIFACTS or ./artifacts)")
    parser.add_argument("--bundles", type=Path, default=Path("bundles/device-check"),
                        help="arm64: where the bundles are written (default bundles/device-check)")
    parser.add_argument("--onnxruntime", help="arm64: onnxruntime version on the emulated board (default: this venv's)")
    parser.add_argument("--cpu", help=f"arm64: QEMU CPU model (default {emulate.ARM64_CPU}, a Raspberry Pi 4's core; "
                                      "cortex-a76: a Pi 5's; max: every feature QEMU has, SVE and SME included)")
    parser.add_argument("--no-runtimes", action="store_true",
                        help="arm64: skip measuring the oldest onnxruntime that answers each bundle right")
    parser.add_argument("--record", action="store_true",
                        help="avx2: write the result into each artifact manifest's quantization entry")
    parser.add_argument("--threads", type=int, default=2, help="avx2: ORT threads of both sessions (default 2)")
    parser.add_argument("--text-limit", type=int, default=TEXT_LIMIT,
                        help=f"avx2: test texts per text classifier, evenly spread (default {TEXT_LIMIT}; 0: all)")
    parser.add_argument("--json", type=Path, help="JSON result file (default bench-results/<check>-check.json)")
    args = parser.parse_args(argv)
    models = args.models or [m for m in DEFAULT_MODELS if artifact.latest_version_dir(m, args.artifacts)]
    try:
        for name in models:
            registry.get(name)
        if not models:
            raise UsageError("no built model to check (build them with `edgestack build`)")
        rows = []
        for name in models:
            print(f"[{args.check}-check] {name} ...", flush=True)
            try:
                if args.check == "arm64":
                    args.bundles.mkdir(parents=True, exist_ok=True)
                    rows.append(arm64_row(name, args.artifacts, args.bundles.resolve(), args.onnxruntime, args.cpu,
                                          None if args.no_runtimes else CANDIDATES))
                else:
                    rows.append(avx2_row(name, args.artifacts, args.record, args.threads, args.text_limit or None))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # this model failed; the others still run
                rows.append({"model": name, "inputs": "-", "ok": False, "error": str(exc).splitlines()[0][:300]})
    except UsageError as exc:
        print(f"{args.check}-check: {exc}", file=sys.stderr)
        return 2
    table = arm64_table(rows) if args.check == "arm64" else avx2_table(rows)
    print(table)
    out = args.json or Path("bench-results") / f"{args.check}-check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"check": args.check, "host": platform.machine(), "cpu": cpu_info(),
                               "probability_tolerance": PROBABILITY_TOLERANCE, "rows": rows}, indent=2) + "\n")
    print(f"JSON: {out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
