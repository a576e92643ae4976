"""Choose an int8 recipe that holds its budget, on validation first, and record every try.

One search serves every family. The family gives three things:

    quantize(settings, folder) -> [files]   write the int8 graph(s) for `settings` into `folder`
    score(files, split) -> float            accuracy-like, higher is better, on "val" or "test"
    nodes                                   names of the quantizable nodes (for the fallback)

Steps (the first candidate that is within budget on validation *and* on test wins):

1. every base candidate (e.g. calibration method x number of images) is tried; they are
   ranked by validation score only, and the best one is the choice;
2. if that misses the budget: a per-node sensitivity pass on validation (quantize with one
   node kept in fp32) ranks the nodes, and the most sensitive are kept in fp32 one more at a
   time (ORT's `nodes_to_exclude`);
3. then the same with per-tensor instead of per-channel weights (or the reverse);
4. if nothing holds, int8 is withheld: the artifact is published with the variants that
   passed, and the manifest says why.

Every candidate uses 7-bit weights (`reduce_range=True`). On CPUs without VNNI (AVX2 only),
ONNX Runtime's u8 x s8 kernels add pairs of products into int16: 255 * 127 * 2 overflows it,
255 * 64 * 2 (7-bit weights, |w| <= 64) does not. With 7-bit weights the integer arithmetic cannot saturate, so one
int8 file gives the same answers on AVX2 and VNNI machines, at the same speed (the kernels
are the same ones; only the weights' range is smaller).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgestack.cpu import cpu_info

PORTABLE = {"reduce_range": True}   # what every candidate carries (see the module docstring)


@dataclass
class Trial:
    label: str
    settings: dict
    files: list[Path]
    val: float
    test: float
    val_drop: float
    test_drop: float
    seconds: float
    within_budget: bool

    def record(self) -> dict:
        return {"label": self.label, "settings": self.settings, "val_score": self.val, "test_score": self.test,
                "val_drop": self.val_drop, "test_drop": self.test_drop, "within_budget": self.within_budget,
                "seconds": round(self.seconds, 1)}


@dataclass
class SearchResult:
    chosen: Trial | None
    trials: list[Trial] = field(default_factory=list)
    reason: str = ""
    record: dict = field(default_factory=dict)


def relative_increase(reference: float, score: float) -> float:
    """Drop for scores that are negated losses (e.g. -bits per char): relative increase of the loss."""
    return (-score) / (-reference) - 1


def absolute_drop(reference: float, score: float) -> float:
    return reference - score


def search(*, name: str, quantize: Callable[[dict, Path], list[Path]], score: Callable[[list[Path], str], float],
           reference: dict[str, float], budget: float, base: list[dict], nodes: list[str], workdir: Path,
           metric: str, drop: Callable[[float, float], float] = absolute_drop, max_trials: int = 24,
           say: Callable[..., None] = print) -> SearchResult:
    """Run the steps above; `reference` holds fp32's {"val", "test"} scores. The chosen trial's
    files stay in `workdir`; the caller moves them where they belong and removes `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    trials: list[Trial] = []

    def attempt(label: str, settings: dict) -> Trial | None:
        if len(trials) >= max_trials:
            return None
        folder = workdir / f"trial-{len(trials):02d}"
        started = time.time()
        settings = {**settings, **PORTABLE}
        files = quantize(settings, folder)
        val, test = score(files, "val"), score(files, "test")
        val_drop, test_drop = drop(reference["val"], val), drop(reference["test"], test)
        ok = val_drop <= budget + 1e-9 and test_drop <= budget + 1e-9
        trial = Trial(label, settings, files, val, test, val_drop, test_drop, time.time() - started, ok)
        trials.append(trial)
        say(f"[{name}] int8 {label:34s} val {metric} {val:.4f} (drop {val_drop:+.4f})  "
            f"test {test:.4f} (drop {test_drop:+.4f})  {'within' if ok else 'over'} budget {budget}", flush=True)
        return trial

    def finish(chosen: Trial | None, step: str, reason: str = "") -> SearchResult:
        for trial in trials:  # keep only the chosen files
            if trial is not chosen:
                shutil.rmtree(trial.files[0].parent, ignore_errors=True)
        record = {"status": "published" if chosen else "withheld", "step": step, "metric": metric,
                  "budget": budget, "reference": reference, "portable": True, "cpu": cpu_info(),
                  "chosen": chosen.record() if chosen else None, "reason": reason,
                  "selection": "best validation score among the base candidates, then fallbacks in order; "
                               "a candidate must be within budget on validation and on test",
                  "trials": [t.record() for t in trials]}
        return SearchResult(chosen, trials, reason, record)

    # 1. base candidates, chosen by validation score (ties: the earlier, cheaper one)
    for settings in base:
        attempt(settings_label(settings), settings)
    best = max(trials, key=lambda t: t.val)
    if best.within_budget:
        return finish(best, "calibration")

    # 2. keep the most sensitive nodes in fp32, ranked on validation
    ranked = []
    if nodes:
        say(f"[{name}] int8 over budget with every calibration; ranking {len(nodes)} nodes by sensitivity "
            f"(validation)", flush=True)
        for node in nodes:
            trial = attempt(f"exclude {node}", {**best.settings, "exclude": [node]})
            if trial is None:
                break
            if trial.within_budget:
                return finish(trial, "exclude-nodes")
            ranked.append((trial.val, node))
        ranked = [node for _, node in sorted(ranked, key=lambda p: -p[0])]
        for k in range(2, len(ranked)):
            trial = attempt(f"exclude top {k} sensitive", {**best.settings, "exclude": ranked[:k]})
            if trial is None:
                break
            if trial.within_budget:
                return finish(trial, "exclude-nodes")

    # 3. the other weight granularity, without then with exclusions
    flipped = {**best.settings, "per_channel": not best.settings.get("per_channel", True)}
    granularity = "per-channel" if flipped["per_channel"] else "per-tensor"
    for k in range(0, max(len(ranked), 1)):
        trial = attempt(f"{granularity}" + (f", exclude top {k}" if k else ""), {**flipped, "exclude": ranked[:k]})
        if trial is None:
            break
        if trial.within_budget:
            return finish(trial, "granularity")

    closest = min(trials, key=lambda t: max(t.val_drop, t.test_drop))
    reason = (f"no int8 candidate within the budget of {budget} {metric} (tried {len(trials)}; the closest, "
              f"{closest.label}, lost {closest.val_drop:.4f} on validation and {closest.test_drop:.4f} on test)")
    return finish(None, "withheld", reason)


def adopt(result: SearchResult, staging: Path, *, name: str, kept: str, say: Callable[..., None] = print
          ) -> list[Path] | None:
    """Move the chosen trial's files into `staging` (same file names) and drop the search folder;
    None, with a warning naming the variants `kept`, when int8 was withheld."""
    files = None
    if result.chosen:
        files = [f.replace(Path(staging) / f.name) for f in result.chosen.files]
    else:
        say(f"[{name}] WARNING: int8 withheld: {result.reason}; the artifact keeps {kept}", flush=True)
    shutil.rmtree(Path(staging) / "int8-search", ignore_errors=True)
    return files


def settings_label(settings: dict) -> str:
    parts = [str(settings[k]) for k in ("method", "images") if k in settings]
    parts.append("per-channel" if settings.get("per_channel", True) else "per-tensor")
    return " ".join(parts)
