"""Commands run as a user runs them (a child process, real models of the session): `edgestack
abc-check`, `bench-batch`, `bench-bundle`, and `python -m benchmarks.overload`. Short runs:
each checks what such a run can show (every case measured, the counts add up, the JSON says what
the table says), never how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.data import images


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False)


def result_json(out: Path, pattern: str) -> dict:
    (path,) = out.glob(pattern)
    return json.loads(path.read_text())


def test_abc_check_samples_the_models_tunes_and_gates_on_the_midi_share(folk_artifact, artifacts_env, tmp_path):
    from cli.abc_check import check_tune
    from serving.runner import RunnerOptions
    from serving.tune import MusicGenerator
    from tests.conftest import prerequisite

    from serving import abc_tools

    prerequisite(None if abc_tools.abc2midi_available() else
                 "abc2midi is missing: `make data` installs it (as root: apt-get install abcmidi)")
    done = run("-m", "cli", "abc-check", "folk-lstm", "--n", "3", "--max-length", "200", "--seed", "5",
               "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = result_json(tmp_path, "abc-check-folk-lstm-*.json")
    assert result["n"] == 3 and [row["seed"] for row in result["tunes"]] == [5, 6, 7]
    # the tunes are the model's: the served runner writes the same for each seed
    runner = MusicGenerator(folk_artifact, RunnerOptions(device="cpu", threads=1))
    for row in result["tunes"]:
        assert row["tune"] == runner.complete(runner.check(None, 200, 1.0, 0, 1.0, row["seed"]))["tune"]
        assert {k: row[k] for k in ("headers", "midi", "no_errors")} == \
            {k: v for k, v in check_tune(row["tune"]).items() if k in ("headers", "midi", "no_errors")}
    # the shares are counted from those rows, and printed as the table says
    for check, share in result["shares"].items():
        assert share == pytest.approx(np.mean([bool(row[check]) for row in result["tunes"]]))
        assert f"{check:10s} {share:10.1%}" in done.stdout
    # the ceiling: real held-out tunes of the corpus, through the same checks, mostly render
    assert result["reference_real_tunes"]["n"] == 3 and result["reference_real_tunes"]["midi"] >= 2 / 3
    # the gate: a share nobody can reach fails the command with exit 1
    failed = run("-m", "cli", "abc-check", "folk-lstm", "--n", "1", "--max-length", "50", "--no-reference",
                 "--min-share", "1.01", "--out", str(tmp_path / "gate"))
    assert failed.returncode == 1 and "FAILED:" in failed.stdout and "required 101%" in failed.stdout


def test_abc_check_refuses_a_model_that_is_not_a_tune_generator(digits_artifact, artifacts_env, tmp_path):
    done = run("-m", "cli", "abc-check", "digits-cnn", "--n", "1", "--out", str(tmp_path))
    assert done.returncode == 2 and "digits-cnn is not a tune generator" in done.stderr
    assert "Traceback" not in done.stderr


def test_bench_batch_runs_each_engine_setting_over_every_input(digits_artifact, artifacts_env, tmp_path):
    from tests.integration.test_batch import write_idx

    pixels = images.digits().test.images[:150]
    idx = write_idx(tmp_path / "t10k-images-idx3-ubyte", pixels)
    done = run("-m", "cli", "bench-batch", "digits-cnn", str(idx), "--settings", "local:1,local:2",
               "--batch-size", "32", "--shard-size", "64", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = result_json(tmp_path / "out", "batch-digits-cnn-*.json")
    assert report["model"] == "digits-cnn" and report["input"] == str(idx)
    assert [(r["engine"], r["workers"]) for r in report["runs"]] == [("local", 1), ("local", 2)]
    for r in report["runs"]:
        assert r["items"] == r["rows"] == 150 and r["errors"] == 0 and r["shards"] == 3
        assert r["items_per_s"] > 0 and r["output_bytes"] > 0
    assert "local x1 run 1:" in done.stdout and "local x2 run 1:" in done.stdout


def test_bench_bundle_measures_a_bundle_in_a_clean_venv(digits_artifact, artifacts_env, clean_venv, tmp_path):
    python = clean_venv("onnxruntime", "numpy")
    done = run("-m", "cli", "bench-bundle", "digits-cnn", "--bundles", str(tmp_path / "bundles"), "--python",
               str(python), "--runs", "2", "--iterations", "20", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (row,) = result_json(tmp_path / "out", "bundle-*.json")["bundles"]
    bundle = next((tmp_path / "bundles").glob("digits-cnn-v*/"))
    assert row["model"] == "digits-cnn" and row["variant"] == "int8" and row["python"] == str(python)
    assert row["pillow_in_runner_env"] is False  # the clean venv: the runner's own PNG decoder
    assert row["bundle_bytes"] == sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) \
        or row["bundle_bytes"] > row["ort_bytes"]
    assert row["ort_bytes"] == (bundle / "model.ort").stat().st_size
    assert row["onnx_bytes"] == (bundle / "model.onnx").stat().st_size
    assert 0 < row["archive_bytes"] < row["bundle_bytes"]
    assert row["cold_start_ms_median"] > 0 and row["peak_rss_mib_median"] > 0
    for fmt in ("ort", "onnx"):
        assert 0 < row["batch1"][fmt]["p50_ms"] <= row["batch1"][fmt]["p99_ms"]


def test_overload_benchmark_counts_every_request_and_shedding_off_never_sheds(digits_artifact, artifacts_env, tmp_path):
    """`python -m benchmarks.overload` (h2load against three servers: shedding on, on with a 100 ms
    deadline, off), one second per run: every request sent is counted as answered or refused, nothing
    else happens (no 500, no timeout), and with shedding off nothing is refused."""
    import shutil

    from tests.conftest import prerequisite

    prerequisite(None if shutil.which("h2load") else "h2load is missing: `make data` installs it "
                 "(as root: apt-get install nghttp2-client)")
    done = run("-m", "benchmarks.overload", "digits-cnn", "--seconds", "1", "--factor", "2", "--connections", "8",
               "--threads", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = result_json(tmp_path, "digits-cnn-overload-*.json")
    rows = {row["run"]: row for row in result["rows"]}
    assert list(rows) == ["closed loop c16 (sustainable)", "2x: shedding on (500 ms queue)",
                          "2x: shedding on + 100 ms deadline", "2x: shedding off (unbounded)"]
    assert result["sustainable_rps"] > 0 and rows["closed loop c16 (sustainable)"]["accepted_200"] > 0
    for row in rows.values():
        assert row["sent"] == row["accepted_200"] + row["shed_503"] + row["other"] and row["other"] == 0, row
    assert rows["2x: shedding off (unbounded)"]["shed_503"] == 0
    for label in list(rows)[1:]:
        assert rows[label]["offered_rps"] == pytest.approx(2 * result["sustainable_rps"], rel=0.01)
        assert f"{label}: {rows[label]['accepted_200']} accepted, {rows[label]['shed_503']} shed" in done.stdout
