"""Mutation testing of the modules whose unit tests are fast: how many planted bugs the unit lane catches.

    .venv/bin/python scripts/mutation.py              # mutmut run, then the table (minutes to an hour on 2 cores)
    .venv/bin/python scripts/mutation.py --report     # the table of the last run only
    .venv/bin/python scripts/mutation.py --markdown   # the last run's table as docs/testing.md shows it

mutmut (the dev extra; its settings are pyproject.toml's [tool.mutmut]) copies the tree to
mutants/, plants one bug at a time in the functions of MODULES (an operator, a constant, a
comparison, a dropped argument, ...) and runs the unit tests that reach it; a mutant is killed
when a test fails. This prints, per module, the mutants planted, killed (or timed out: an
infinite loop the tests stopped), survived, and the kill rate (killed / planted, the
equivalent mutants of EQUIVALENT set aside: a change no caller can observe). Goal: 80% killed
in each module; every survivor is killed by a test, listed in EQUIVALENT with why no caller can
tell, or listed in SURVIVING with why it is left. After adding a test, re-run only the mutants
it should kill: `.venv/bin/python -m mutmut run NAME ...`, then --report.
Not part of `make test`: it runs the unit tests once per mutant.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {  # the module a mutant's name starts with -> the file it was planted in
    "edgestack.families": "edgestack/families/",
    "edgestack.v2protocol": "edgestack/v2protocol.py",
    "edgestack.manifest": "edgestack/manifest.py",
    "serving.admission": "serving/admission.py",
}
GOAL = 0.80
F, V, M, A = "edgestack.families.", "edgestack.v2protocol.", "edgestack.manifest.", "serving.admission."


def _names(prefix: str, function: str, *numbers: int) -> list[str]:
    return [f"{prefix}{function}__mutmut_{n}" for n in numbers]


# Each survivor of the last full run, read with `mutmut show NAME`, is killed by a test, or listed
# here: EQUIVALENT when no caller can tell it from the original (why), SURVIVING when a caller
# could but it is left (why). Grouped by reason; every name is spelled out.
_EQUIVALENT_GROUPS: list[tuple[str, list[str]]] = [
    ("the read's chunk size: the digest of the whole file is the same for any size",
     _names(F, "common.x_sha256_file", 13, 15, 16)),
    ("numpy reads a sort kind by its first letter, either case ('STABLE' is 'stable')",
     _names(F, "common.x_top_k", 9) + _names(F, "tune.x_sample_index", 38)),
    ("codec names are case-insensitive ('UTF-8' is 'utf-8', 'LATIN-1' is 'latin-1'); bytes.decode's default is UTF-8",
     _names(F, "generic.x_as_lists", 21) + _names(V, "x_as_text", 12) + _names(V, "x_from_json", 24)
     + _names(V, "x_serialize_bytes", 15) + _names(V, "x_to_json", 13, 16) + _names(A, "x_timeout_ms", 21)),
    ("float() parses 'NAN' and 'INF' in either case",
     _names(A, "x_timeout_ms", 11) + _names(A, "xǁAdmissionǁ__init__", 10)),
    ("`kind in \"XX..XX\"`: a numpy dtype kind (or the wanted kind) is one character, and 'X' is none of them",
     _names(F, "generic.x_as_lists", 5) + _names(F, "generic.x_check_feeds", 40, 48)
     + _names(F, "generic.x_example_feeds", 39) + _names(V, "x_of_numpy", 4) + _names(V, "x_from_json", 45, 50, 55, 87)),
    ("np.load's allow_pickle defaults to False (and None is as false)",
     _names(F, "generic.x_read_tensor_file", 12, 14, 26, 28) + _names(F, "image.x_read_inputs", 23, 25)),
    ("numpy infers a dimension given as any negative number (-2 as -1)",
     _names(F, "image.x_decode_png", 58, 182) + _names(V, "x_serialize_bytes", 8) + _names(V, "x_to_json", 5)),
    ("int.from_bytes is big-endian by default since Python 3.11, the project's floor",
     _names(F, "image.x_decode_png", 17, 82, 90) + _names(F, "image.x_read_idx", 38)),
    ("float64 instead of int32 (or the default float64 spelled out): every value is an integer far below 2**53, "
     "exact in both, and the pixels are cast to uint8 at the end",
     _names(F, "image.x_decode_png", 151, 153, 156, 158, 162, 195, 197, 200, 202, 205, 207)
     + _names(F, "image.x_decode_pnm", 106)),
    ("the grey image left uint8: the ink threshold and the crop compare the same values, and resample() "
     "computes in float64 from them",
     _names(F, "image.x_mnist_style", 6, 8)),
    ("maxval 255 rescaled by 255 / 255 is the identity",
     _names(F, "image.x_decode_pnm", 101)),
    ("a bad layout skipped here is refused by lay_out() at the end, with the same message",
     _names(F, "image.x_decode_image", 5)),
    ("Average filter with / instead of //: the sum lands in an int32 row, which truncates x.5 to the same floor",
     _names(F, "image.x_decode_png", 222)),
    ("Paeth tie pa == pb <= pc with a != b cannot happen (it needs a - c == c - b, so pc == 0 < pa)",
     _names(F, "image.x__paeth", 18)),
    ("the decompression bound only caps memory: any bound above the expected size meets the same size check",
     _names(F, "image.x_decode_png", 127, 128)),
    ("luma() reads channels 0-2 only; a fourth is never read",
     _names(F, "image.x_colour", 23)),
    ("Pillow's picture is converted to mode L or RGB first, which numpy reads as uint8 anyway",
     _names(F, "image.x_decode_image", 55, 57)),
    ("the triangle filter's weights are not negative, so the laid-out values never go below 0 to clip",
     _names(F, "image.x_mnist_style", 116)),
    ("every caller passes float32 pixels (check_pixels, read_inputs): the cast is a no-op on them",
     _names(F, "image.x_to_model_input", 6, 8)),
    ("astype(None) and zeros(.., None) are float64, the type spelled out",
     _names(F, "text.xǁClassifierǁrun", 17) + _names(F, "tune.x_sample_index", 3)
     + _names(F, "image.x_mnist_style", 20, 22)),
    ("Python ints become int64, numpy 2's default integer on every platform (and a text batch is never empty)",
     _names(F, "text.xǁEncoderǁ__call__", 6, 8, 11, 13) + _names(F, "tune.x_prompt_ids", 2, 4)
     + _names(F, "tune.xǁGeneratorǁstep", 8, 10)),
    ("the padding token's text is never read, only its id (pad_id); tokenizers' default pad_token is '[PAD]' too",
     _names(F, "text.xǁEncoderǁ__init__", 30, 32, 33)),
    ("with_index None is as false as False",
     _names(F, "text.x_answers", 35)),
    ("top_k 0, or top_k the vocabulary size: the k-th largest logit is the smallest, so nothing is cut either way",
     _names(F, "tune.x_sample_index", 5, 6)),
    ("a relative path that is empty or starts with '/' has an empty part, which the next clause refuses "
     "with the same message",
     _names(M, "x_check_relative", 8, 11)),
    ("one_line() reads only each error's loc and msg, not its url",
     _names(M, "x_one_line", 3)),
    ("the same values compared as float64: a wrapped integer differs from the one sent by 2**32 or more, or in sign",
     _names(V, "x_from_json", 94)),
    ("the copy flag: a copy or a read-only view of the body holds the same values, and no caller writes to it",
     _names(V, "x_from_raw", 28, 30, 37)),
    ("'<i' and '<I' pack the same 4 bytes below 2**31; no BYTES element reaches 2 GiB (the body limits)",
     _names(V, "x_serialize_bytes", 22)),
    ("send_error() gives every 503 without one `retry-after: 1` (serving/error_shape.start_message)",
     _names(A, "xǁAdmissionǁ__call__", 122, 126) + _names(A, "xǁAdmissionǁoverloaded", 7, 11)),
    ("an ASGI http scope always has `path`",
     _names(A, "xǁAdmissionǁ__call__", 66, 68, 71)),
    ("< or <= against a float monotonic clock: the same instant is never met twice",
     _names(A, "xǁDrainStateǁfinish", 15)),
    ("the hand-over's return value is never read",
     _names(A, "xǁDrainStateǁinstall", 21)),
    ("the first done() replaces sojourn, and queueing() reads 0 while floor is None",
     _names(A, "xǁRouteLoadǁ__init__", 3)),
]
_SURVIVING_GROUPS: list[tuple[str, list[str]]] = [
    ("the same draw up to float rounding (about 1e-16 of probability): top_p 1 cutting only tokens below "
     "rounding, an unnormalised nucleus, or r * c reaching c; no test can tell",
     _names(F, "tune.x_sample_index", 29, 30, 48, 62, 67)),
    ("a default no caller reaches (each passes its own value): example_feeds' seed, read_inputs' "
     "dark_background (the edge runner passes the manifest's)",
     _names(F, "generic.x_example_feeds", 2) + _names(F, "image.x_read_inputs", 1)),
    ("JPEG draft mode None: Pillow decodes colour at the reduced scale, then converts to grey; "
     "a pixel may differ by one level from decoding grey directly, which only a reference JPEG decode would tell",
     _names(F, "image.x_decode_image", 30)),
    ("serialize_bytes without the object cast: str, bytes and object arrays read the same either way; only a "
     "numeric array sent as BYTES would differ (a float32's text), and no caller sends one",
     _names(V, "x_serialize_bytes", 4, 6)),
    ("timing only: the drain's poll interval (1.05 s instead of 0.05 s) and its linger after the grace "
     "period; a unit test with a bound that tight would be flaky on a loaded box",
     _names(A, "xǁDrainStateǁfinish", 17, 27, 28)),
    ("SIGTERM with no Python handler before it (SIG_DFL, SIG_IGN): the hand-over would call an int; "
     "uvicorn always installs a handler first, and a test would have to signal the test process",
     _names(A, "xǁDrainStateǁinstall", 14)),
]
EQUIVALENT: dict[str, str] = {name: why for why, names in _EQUIVALENT_GROUPS for name in names}
SURVIVING: dict[str, str] = {name: why for why, names in _SURVIVING_GROUPS for name in names}
KILLED = {"killed", "timeout", "caught by type check"}


def mutmut(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, text=True, check=False,
                          capture_output=capture)


def statuses() -> dict[str, str]:
    """mutant name -> status, from the last run's results (`mutmut results --all true`)."""
    done = mutmut("results", "--all", "true", capture=True)
    if done.returncode != 0:
        raise SystemExit(f"mutmut results failed: {done.stderr.strip()[-2000:]}")
    found = {}
    for line in done.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def module_of(mutant: str) -> str | None:
    return next((m for m in sorted(MODULES, key=len, reverse=True) if mutant.startswith(m + ".")), None)


def table(found: dict[str, str]) -> tuple[list[dict], dict[str, list[str]]]:
    counts: dict[str, dict] = {m: defaultdict(int) for m in MODULES}
    survivors: dict[str, list[str]] = defaultdict(list)  # module -> names neither killed nor equivalent
    for name, status in sorted(found.items()):
        module = module_of(name)
        if module is None:
            continue
        c = counts[module]
        c["planted"] += 1
        if status in KILLED:
            c["killed"] += 1
        elif name in EQUIVALENT:
            c["equivalent"] += 1
        else:
            c["survived"] += 1
            survivors[module].append(name)
    rows = []
    for module, c in counts.items():
        judged = c["planted"] - c["equivalent"]
        rows.append({"module": MODULES[module], "planted": c["planted"], "killed": c["killed"],
                     "survived": c["survived"], "equivalent": c["equivalent"],
                     "rate": c["killed"] / judged if judged else None})
    return rows, survivors


def by_function(names: list[str]) -> str:
    """`module.function` 1, 2, 3; ... for a compact list of mutant names."""
    numbers: dict[str, list[int]] = defaultdict(list)
    for name in names:
        function, _, number = name.rpartition("__mutmut_")
        module, _, func = function.rpartition(".")
        short = f"{module.split('.')[-1]}.{func.removeprefix('x_').replace('xǁ', '').replace('ǁ', '.')}"
        numbers[short].append(int(number))
    return "; ".join(f"`{f}` {', '.join(map(str, sorted(n)))}" for f, n in sorted(numbers.items()))


def grouped(names: list[str], reasons: dict[str, str]) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[reasons.get(name, "NOT LOOKED AT YET")].append(name)
    return sorted(groups.items(), key=lambda item: -len(item[1]))


def show(rows: list[dict], survivors: dict[str, list[str]], found: dict[str, str], markdown: bool) -> None:
    left = [name for names in survivors.values() for name in names]
    equivalent = [name for name in sorted(found) if name in EQUIVALENT and found[name] not in KILLED]
    if markdown:
        print("| module | mutants | killed | survived | equivalent | killed % (of non-equivalent) |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            rate = "-" if r["rate"] is None else f"{r['rate']:.1%}"
            print(f"| `{r['module']}` | {r['planted']} | {r['killed']} | {r['survived']} | {r['equivalent']} | {rate} |")
        print(f"\nSurviving mutants ({len(left)}), each with why it is left:\n")
        for why, names in grouped(left, SURVIVING):
            print(f"- {why} ({len(names)}): {by_function(names)}")
        print(f"\nEquivalent mutants ({len(equivalent)}), each with why no caller can tell:\n")
        for why, names in grouped(equivalent, EQUIVALENT):
            print(f"- {why} ({len(names)}): {by_function(names)}")
        return
    print(f"{'module':32s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'equivalent':>11s} {'killed %':>9s}")
    for r in rows:
        rate = "-" if r["rate"] is None else f"{r['rate']:.1%}"
        print(f"{r['module']:32s} {r['planted']:8d} {r['killed']:7d} {r['survived']:9d} {r['equivalent']:11d} "
              f"{rate:>9s}")
    for module, names in survivors.items():
        print(f"\nsurvivors in {MODULES[module]} ({len(names)}):")
        for name in names:
            print(f"  {name} ({found[name]}): {SURVIVING.get(name, 'NOT LOOKED AT YET')}")
    killed_anyway = sorted(n for n in EQUIVALENT if found.get(n) in KILLED)
    if killed_anyway:
        print(f"\nlisted as equivalent but killed (drop them from EQUIVALENT): {', '.join(killed_anyway)}")
    print(f"\n{len(equivalent)} equivalent mutants (EQUIVALENT in {Path(__file__).name}, --markdown lists them)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="only print the table of the last run")
    parser.add_argument("--markdown", action="store_true", help="only print the last run's table in Markdown, with the survivors and equivalents "
                        "grouped by reason (docs/testing.md)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    args = parser.parse_args(argv)
    if not (args.report or args.markdown):
        done = mutmut("run", "--max-children", str(args.max_children))
        if done.returncode != 0:
            print(f"mutmut run exited with {done.returncode}", file=sys.stderr)
            return done.returncode
    found = statuses()
    rows, survivors = table(found)
    if not any(r["planted"] for r in rows):
        print("no mutants found: run without --report first", file=sys.stderr)
        return 1
    show(rows, survivors, found, args.markdown)
    below = [r["module"] for r in rows if r["rate"] is not None and r["rate"] < GOAL]
    if below:
        print(f"\nbelow the {GOAL:.0%} goal: {', '.join(below)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
