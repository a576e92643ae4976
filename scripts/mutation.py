"""Mutation testing of the modules whose unit tests are fast: how many planted bugs the unit lane catches.

    .venv/bin/python scripts/mutation.py              # mutmut run, then the table (minutes to an hour on 2 cores)
    .venv/bin/python scripts/mutation.py --report     # the table of the last run only
    .venv/bin/python scripts/mutation.py --markdown   # the table as docs/testing.md shows it

mutmut (the dev extra; its settings are pyproject.toml's [tool.mutmut]) copies the tree to
mutants/, plants one bug at a time in the functions of MODULES (an operator, a constant, a
comparison, a dropped argument, ...) and runs the unit tests that reach it; a mutant is killed
when a test fails. This prints, per module, the mutants planted, killed (or timed out: an
infinite loop the tests stopped), survived, and the kill rate (killed / planted, the
equivalent mutants of EQUIVALENT set aside: a change no caller can observe). Goal: 80% killed
in each module; every survivor is killed by a test or listed in EQUIVALENT with its reason.
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
# mutant name -> why no caller can tell it from the original (checked by reading `mutmut show NAME`)
EQUIVALENT: dict[str, str] = {}
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
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, status in sorted(found.items()):
        module = module_of(name)
        if module is None:
            continue
        c = counts[module]
        c["planted"] += 1
        if name in EQUIVALENT:
            c["equivalent"] += 1
        elif status in KILLED:
            c["killed"] += 1
        else:
            c["survived"] += 1
            survivors[module].append(f"{name} ({status})")
    rows = []
    for module, c in counts.items():
        judged = c["planted"] - c["equivalent"]
        rows.append({"module": MODULES[module], "planted": c["planted"], "killed": c["killed"],
                     "survived": c["survived"], "equivalent": c["equivalent"],
                     "rate": c["killed"] / judged if judged else None})
    return rows, survivors


def show(rows: list[dict], survivors: dict[str, list[str]], markdown: bool) -> None:
    if markdown:
        print("| module | mutants | killed | survived | equivalent | killed % |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            rate = "-" if r["rate"] is None else f"{r['rate']:.1%}"
            print(f"| `{r['module']}` | {r['planted']} | {r['killed']} | {r['survived']} | {r['equivalent']} | {rate} |")
    else:
        print(f"{'module':32s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'equivalent':>11s} {'killed %':>9s}")
        for r in rows:
            rate = "-" if r["rate"] is None else f"{r['rate']:.1%}"
            print(f"{r['module']:32s} {r['planted']:8d} {r['killed']:7d} {r['survived']:9d} {r['equivalent']:11d} "
                  f"{rate:>9s}")
    for module, names in survivors.items():
        print(f"\nsurvivors in {MODULES[module]} ({len(names)}):")
        for name in names:
            print(f"  {name}")
    for name, why in sorted(EQUIVALENT.items()):
        print(f"equivalent: {name}: {why}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="only print the table of the last run")
    parser.add_argument("--markdown", action="store_true", help="the table in Markdown (docs/testing.md)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    args = parser.parse_args(argv)
    if not args.report:
        done = mutmut("run", "--max-children", str(args.max_children))
        if done.returncode != 0:
            print(f"mutmut run exited with {done.returncode}", file=sys.stderr)
            return done.returncode
    rows, survivors = table(statuses())
    if not any(r["planted"] for r in rows):
        print("no mutants found: run without --report first", file=sys.stderr)
        return 1
    show(rows, survivors, args.markdown)
    below = [r["module"] for r in rows if r["rate"] is not None and r["rate"] < GOAL]
    if below:
        print(f"\nbelow the {GOAL:.0%} goal: {', '.join(below)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
