"""A batch job: plan shards, run them on an engine, write them atomically, resume, merge.

    edgestack batch MODEL INPUT OUTPUT [--engine local|ray] ...

Files beside OUTPUT (say `preds.parquet`):
    preds.parts/           while the job runs: job.json (the plan) + one file per finished shard
    preds.parquet          the rows of every input, in input order (written at the end)
    preds.errors.jsonl     one line per input that could not be used: index, key, error
    preds.job.json         the finished job: counts, timings, items/s, engine settings

Nothing lost, nothing doubled: the input is cut into fixed shards (shard i = items
[i*S, (i+1)*S)); only this process writes files; a shard is written to a temporary name
and renamed (`os.replace`), its errors before its rows, so a shard file either exists
whole or not at all. A job killed at any point and started again with the same command
reads the plan, skips the shards already on disk and computes only the rest; the merge
is a pure function of the shard files. A changed input or model refuses to resume
(--overwrite starts over).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from batch.adapter import BatchAdapter, Shard, ShardResult
from edgestack import artifact, registry
from edgestack.errors import UsageError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
PLAN_VERSION = 1


@dataclass
class JobOptions:
    engine: str = "local"            # local | ray
    workers: int | None = None       # local: processes; ray: actors (default: cores // threads)
    threads: int = 1                 # ONNX Runtime intra-op threads per worker
    batch_size: int = 256            # rows per ONNX Runtime call
    shard_size: int = 1000           # items per output shard (the unit of resume)
    variant: str | None = None       # default: int8 on CPU
    device: str = "cpu"
    output_format: str | None = None  # parquet | jsonl (default: from the output's extension)
    overwrite: bool = False
    address: str | None = None       # ray: an existing cluster ("host:6379", "ray://host:10001", "auto")
    progress: bool = True
    source_options: dict = field(default_factory=dict)  # family input options (text column, ...)


class JobError(UsageError):
    """The job cannot start or resume as asked; the message says why and what to do (one line from the CLI)."""


def output_paths(output: Path) -> dict[str, Path]:
    output = Path(output).resolve()
    stem = output.with_suffix("") if output.suffix else output
    return {"output": output, "parts": Path(f"{stem}.parts"), "errors": Path(f"{stem}.errors.jsonl"),
            "summary": Path(f"{stem}.job.json")}


def check_not_input(paths: dict[str, Path], input_path: str | Path) -> None:
    """Refuse a job whose output, errors, summary or parts path is its input (or holds it): the job
    would overwrite or delete what it reads (`--overwrite` deleted its input file)."""
    source = Path(input_path).resolve()
    for key, path in paths.items():
        inside = key == "parts" and path in source.parents
        if path == source or inside or (path.exists() and source.exists() and path.samefile(source)):
            flag = {"output": "OUTPUT", "parts": "the parts folder"}.get(key, f"the {key} file")
            raise JobError(f"{flag} {path} is the input {input_path}{' (or holds it)' if inside else ''}: "
                           "the job would overwrite what it reads; write the output somewhere else")


def output_format(output: Path, requested: str | None) -> str:
    if requested:
        if requested not in ("parquet", "jsonl"):
            raise JobError(f"--format must be parquet or jsonl, got {requested!r}")
        return requested
    fmt = FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise JobError(f"cannot tell the output format from {Path(output).name!r}: name it *.parquet or *.jsonl, "
                       "or pass --format")
    return fmt


def plan_shards(count: int, size: int) -> list[Shard]:
    return [Shard(i, start, min(start + size, count)) for i, start in enumerate(range(0, count, size))]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


class ShardStore:
    """The parts folder: one rows file + one errors file per finished shard."""

    def __init__(self, folder: Path, fmt: str, schema):
        self.folder, self.fmt, self.schema = Path(folder), fmt, schema
        self.ext = ".parquet" if fmt == "parquet" else ".jsonl"

    def rows_path(self, shard_id: int) -> Path:
        return self.folder / f"part-{shard_id:06d}{self.ext}"

    def errors_path(self, shard_id: int) -> Path:
        return self.folder / f"part-{shard_id:06d}.errors.jsonl"

    def done(self) -> set[int]:
        return {int(p.name[5:11]) for p in self.folder.glob(f"part-*{self.ext}")
                if not p.name.endswith(".errors.jsonl")}

    def write(self, result: ShardResult) -> None:
        # errors first: a shard whose rows file exists always has its errors file too
        atomic_write_bytes(self.errors_path(result.shard_id), jsonl(result.errors))
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(result.rows, schema=self.schema)
            path = self.rows_path(result.shard_id)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            pq.write_table(table, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            atomic_write_bytes(self.rows_path(result.shard_id), jsonl(result.rows))

    def merge(self, shard_ids: list[int], output: Path, errors: Path) -> tuple[int, int]:
        """Concatenate the shards in order into OUTPUT and ERRORS (each via a temporary + rename)."""
        rows = 0
        tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, self.schema) as writer:
                for shard_id in shard_ids:
                    table = pq.read_table(self.rows_path(shard_id), schema=self.schema)
                    rows += table.num_rows
                    writer.write_table(table)
        else:
            with open(tmp, "wb") as out:
                for shard_id in shard_ids:
                    with open(self.rows_path(shard_id), "rb") as part:
                        data = part.read()
                    rows += data.count(b"\n")
                    out.write(data)
        os.replace(tmp, output)
        n_errors, etmp = 0, errors.with_name(f".{errors.name}.tmp-{os.getpid()}")
        with open(etmp, "wb") as out:
            for shard_id in shard_ids:
                data = self.errors_path(shard_id).read_bytes()
                n_errors += data.count(b"\n")
                out.write(data)
        os.replace(etmp, errors)
        return rows, n_errors


def choose_workers(opts: JobOptions) -> int:
    cores = os.cpu_count() or 1
    workers = opts.workers or max(1, cores // max(1, opts.threads))
    if workers * opts.threads > cores:
        print(f"warning: {workers} workers x {opts.threads} threads = {workers * opts.threads} threads on "
              f"{cores} cores: they will compete (workers x threads <= cores is fastest)", file=sys.stderr)
    return workers


def _fingerprint(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def prepare(model: str, input_path: str, output: str, opts: JobOptions):
    """Everything but running: the artifact, the adapter, the source, the plan."""
    adapter_path = registry.stage(model, "batch")
    art = artifact.load_latest(model)
    from edgestack.runtime import choose_providers, choose_variant

    variant = choose_variant(list(art.meta.variants), choose_providers(device=opts.device), opts.variant)
    adapter_cls = registry.load_object(adapter_path)
    source = adapter_cls.open_source(input_path, art.meta, opts.source_options)
    model_files = adapter_cls.model_files(art, variant)
    adapter: BatchAdapter = adapter_cls(art.meta, model_files, threads=opts.threads, device=opts.device,
                                        batch_size=opts.batch_size, options=opts.source_options)
    files = model_files.values() if isinstance(model_files, dict) else [model_files]
    fmt = output_format(Path(output), opts.output_format)
    plan = {"plan_version": PLAN_VERSION, "model": model, "version": art.version, "variant": variant,
            "model_sha256": [art.meta.files[Path(f).name].sha256 for f in files],
            "input": source.fingerprint(),
            "items": len(source), "shard_size": opts.shard_size, "format": fmt,
            "options": adapter.options_fingerprint()}
    plan["fingerprint"] = _fingerprint(plan)
    return art, adapter, source, plan


def run_job(model: str, input_path: str, output: str, opts: JobOptions | None = None) -> dict:
    """Run (or resume, or confirm) a batch job; returns the job summary (also written as *.job.json)."""
    opts = opts or JobOptions()
    if opts.shard_size < 1 or opts.batch_size < 1 or opts.threads < 1:
        raise JobError("--shard-size, --batch-size and --threads must be at least 1")
    say = print if opts.progress else (lambda *a, **k: None)
    started = time.perf_counter()
    art, adapter, source, plan = prepare(model, input_path, output, opts)
    paths = output_paths(Path(output))
    check_not_input(paths, input_path)
    paths["output"].parent.mkdir(parents=True, exist_ok=True)
    say(f"[{model}] v{art.version} {plan['variant']}: {source.describe()} -> {paths['output']} ({plan['format']})")

    # 1. finished before with the same plan: nothing to do.
    if paths["summary"].is_file() and not opts.overwrite:
        summary = json.loads(paths["summary"].read_text())
        if summary.get("fingerprint") == plan["fingerprint"] and paths["output"].is_file():
            shutil.rmtree(paths["parts"], ignore_errors=True)
            say(f"[{model}] already complete: {summary['rows']} rows, {summary['errors']} errors "
                f"({paths['output']}); --overwrite to run again")
            return {**summary, "already_complete": True}
    # 2. a job folder: resume it if it is this job.
    job_file = paths["parts"] / "job.json"
    if opts.overwrite:
        shutil.rmtree(paths["parts"], ignore_errors=True)
        for key in ("output", "errors", "summary"):
            paths[key].unlink(missing_ok=True)
    elif job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous.get("fingerprint") != plan["fingerprint"]:
            changed = sorted(k for k in plan if k != "fingerprint" and previous.get(k) != plan[k])
            raise JobError(f"{paths['parts']} holds a different job (changed: {', '.join(changed)}); "
                           "resume it with its own input and options, or pass --overwrite to start over")
    elif paths["output"].exists():
        raise JobError(f"{paths['output']} exists and is not this job's finished output; pass --overwrite to replace it")
    paths["parts"].mkdir(parents=True, exist_ok=True)
    if not job_file.is_file():
        atomic_write_bytes(job_file, json.dumps(plan, indent=2).encode())

    store = ShardStore(paths["parts"], plan["format"], adapter.schema())
    shards = plan_shards(len(source), opts.shard_size)
    done = store.done() & {s.shard_id for s in shards}
    pending = [s for s in shards if s.shard_id not in done]
    if done:
        say(f"[{model}] resuming: {len(done)} of {len(shards)} shards already written, {len(pending)} to go")
    workers = choose_workers(opts)

    from tqdm import tqdm

    bar = tqdm(total=len(source), initial=sum(len(s) for s in shards if s.shard_id in done), unit="item",
               unit_scale=True, desc=f"{model} [{opts.engine} x{workers}]", smoothing=0.1,
               disable=not opts.progress or not sys.stderr.isatty())
    computed = {"items": 0, "rows": 0, "errors": 0}
    engine_info: dict = {}
    run_started = time.perf_counter()
    if pending:
        if opts.engine == "local":
            from batch.local import run_local as engine
        elif opts.engine == "ray":
            from batch.ray_engine import run_ray as engine
        else:
            raise JobError(f"unknown engine {opts.engine!r}; use local or ray")
        sizes = {s.shard_id: len(s) for s in shards}
        for result in engine(adapter, source, pending, workers=workers, opts=opts, info=engine_info):
            store.write(result)
            computed["items"] += sizes[result.shard_id]
            computed["rows"] += len(result.rows)
            computed["errors"] += len(result.errors)
            bar.update(sizes[result.shard_id])
    bar.close()
    run_seconds = time.perf_counter() - run_started

    missing = [s.shard_id for s in shards if s.shard_id not in store.done()]
    if missing:
        raise RuntimeError(f"shards {missing[:10]} were not written; run the same command again to finish them")
    rows, n_errors = store.merge([s.shard_id for s in shards], paths["output"], paths["errors"])
    if rows + n_errors != len(source):
        raise RuntimeError(f"{rows} rows + {n_errors} errors != {len(source)} inputs: the parts folder was changed")
    total_seconds = time.perf_counter() - started
    summary = {
        "model": model, "version": art.version, "variant": plan["variant"], "input": str(input_path),
        "output": str(paths["output"]), "errors_file": str(paths["errors"]), "format": plan["format"],
        "items": len(source), "rows": rows, "errors": n_errors, "shards": len(shards),
        "resumed_shards": len(done), "computed_items": computed["items"],
        "engine": opts.engine, "workers": workers, "threads_per_worker": opts.threads,
        "batch_size": opts.batch_size, "shard_size": opts.shard_size, **engine_info,
        "run_seconds": round(run_seconds, 3), "total_seconds": round(total_seconds, 3),
        "items_per_s": round(computed["items"] / run_seconds, 1) if computed["items"] and run_seconds > 0 else None,
        # the same without the engine's start-up (worker spawn, session load, ray.init, actor pool)
        "steady_items_per_s": (round(computed["items"] / (run_seconds - engine_info["startup_seconds"]), 1)
                               if computed["items"] and run_seconds > engine_info.get("startup_seconds", run_seconds)
                               else None),
        "fingerprint": plan["fingerprint"],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_bytes(paths["summary"], json.dumps(summary, indent=2).encode())
    shutil.rmtree(paths["parts"], ignore_errors=True)
    rate = f", {summary['items_per_s']:,.0f} items/s" if summary["items_per_s"] else ""
    say(f"[{model}] done: {rows} rows, {n_errors} errors -> {paths['output']}"
        + (f" (errors: {paths['errors']})" if n_errors else "")
        + f"; {computed['items']} items computed in {run_seconds:.2f}s{rate}")
    return summary


def summary_table(rows: list[dict]) -> str:
    header = (f"{'engine':8s} {'workers':>7s} {'threads':>7s} {'items':>7s} {'errors':>6s} {'run s':>7s} "
              f"{'startup s':>9s} {'items/s':>9s} {'steady items/s':>14s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['engine']:8s} {r['workers']:7d} {r['threads_per_worker']:7d} {r['items']:7d} "
                     f"{r['errors']:6d} {r['run_seconds']:7.2f} {r.get('startup_seconds', float('nan')):9.2f} "
                     f"{r['items_per_s'] or 0:9.1f} {r.get('steady_items_per_s') or 0:14.1f}")
    return "\n".join(lines)

