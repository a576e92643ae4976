"""Build the CNNs with several seeds and show that every build publishes an int8 within budget.

    .venv/bin/python scripts/int8_seed_study.py [--models digits-cnn fashion-cnn] [--seeds 0 1 2 3 4]

Each (model, seed) is a full default-profile build (training, export, int8 search) into its
own artifacts folder under --work. Prints a table and writes JSON (with the CPU it ran on);
exit 1 if any build published no int8 within budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgestack.cpu import cpu_info  # noqa: E402
from export.build import build  # noqa: E402


def row(name: str, seed: int, art) -> dict:
    quant = art.manifest.get("quantization", {})
    chosen = quant.get("chosen") or {}
    variants = art.variants
    fp32, int8 = variants["fp32"]["test_accuracy"], variants.get("int8", {}).get("test_accuracy")
    return {"model": name, "seed": seed, "fp32": fp32, "int8": int8,
            "drop": None if int8 is None else fp32 - int8, "status": quant.get("status"),
            "chosen": chosen.get("label"), "excluded": (chosen.get("settings") or {}).get("exclude") or [],
            "step": quant.get("step"), "val_drop": chosen.get("val_drop"), "trials": len(quant.get("trials", []))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits-cnn", "fashion-cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--work", default="runs/seed-study", help="artifacts and runs, one folder per seed")
    parser.add_argument("--out", default="bench-results/int8-seed-study.json")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        for seed in args.seeds:
            started = time.time()
            art = build(name, {"seed": seed}, root=Path(args.work).resolve() / f"seed-{seed}" / "artifacts")
            rows.append({**row(name, seed, art), "seconds": round(time.time() - started)})
            print(json.dumps(rows[-1]), flush=True)
    header = "| model | seed | fp32 | int8 | drop (points) | calibration chosen (on validation) | excluded nodes |"
    print("\n" + header + "\n|---|---|---|---|---|---|---|")
    for r in rows:
        int8 = "withheld" if r["int8"] is None else f"{r['int8']:.2%}"
        drop = "" if r["drop"] is None else f"{100 * r['drop']:+.2f}"
        print(f"| {r['model']} | {r['seed']} | {r['fp32']:.2%} | {int8} | {drop} | {r['chosen']} | "
              f"{', '.join(r['excluded']) or 'none'} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_info(), "rows": rows}, indent=2))
    print(f"\nJSON: {out}  (CPU: {cpu_info()['model']}, {', '.join(cpu_info()['flags'])})")
    return 0 if all(r["status"] == "published" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
