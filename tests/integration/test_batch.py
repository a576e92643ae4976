"""Batch jobs on real digits through real ORT sessions: local processes and Ray, a real SIGKILL.

The digits-cnn artifact is the session's small real model (tests/conftest.py); inputs are
real handwritten digits written as IDX files, PNG folders and .npy arrays.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from batch.job import JobError, JobOptions, output_paths, run_job
from tests.conftest import prerequisite
from training.data import images


def write_idx(path: Path, array: np.ndarray) -> Path:
    """uint8 [N, H, W] -> an IDX file (MNIST layout)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def digits():
    data = images.digits()
    return np.concatenate([data.test.images, data.val.images, data.train.images]), data.test.labels


def run_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_idx_job_matches_the_server(digits_artifact, artifacts_env, server, digits, tmp_path):
    pixels, labels = digits
    idx = write_idx(tmp_path / "t10k-images-idx3-ubyte", pixels[:300])
    summary = run_job("digits-cnn", str(idx), str(tmp_path / "preds.parquet"),
                      JobOptions(workers=1, shard_size=128, batch_size=64, progress=False))
    assert (summary["items"], summary["rows"], summary["errors"], summary["shards"]) == (300, 300, 0, 3)
    table = pq.read_table(tmp_path / "preds.parquet")
    assert json.loads(table.schema.metadata[b"labels"]) == digits_artifact.manifest["labels"]
    rows = table.to_pylist()
    assert [r["index"] for r in rows] == list(range(300))
    assert rows[7]["key"] == "t10k-images-idx3-ubyte[7]"
    accuracy = np.mean([int(r["label"]) == y for r, y in zip(rows, labels[:300])])
    assert accuracy > 0.85
    # the same images through the real server: same labels, same probabilities
    reply = httpx.post(server + "/classify", json={"model": "digits-cnn", "pixels": pixels[:40].tolist(),
                                                    "top_k": 10}, timeout=30).json()
    for row, prediction in zip(rows, reply["predictions"]):
        assert row["label"] == prediction["label"]
        served = np.zeros(10)
        for score in prediction["top_k"]:
            served[score["index"]] = score["probability"]
        np.testing.assert_allclose(row["probabilities"], served, atol=1e-5)
    assert not output_paths(tmp_path / "preds.parquet")["parts"].exists()  # cleaned up after the merge


def png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_image_folder_with_bad_files_two_workers_jsonl(digits_artifact, artifacts_env, server, digits, tmp_path):
    pixels, _ = digits
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    for i in range(12):
        (folder / f"{i:02d}.png").write_bytes(png(pixels[i]))
    (folder / "sub" / "inverted-rgb.png").write_bytes(png(255 - pixels[0], "RGB"))
    (folder / "sub" / "photo.jpg").write_bytes(png(pixels[1])[:70])  # cut short
    (folder / "broken.png").write_bytes(b"this is not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image extension: skipped, not an input")
    out = tmp_path / "scans.jsonl"
    result = run_cli("batch", "digits-cnn", folder, out, "--workers", "2", "--shard-size", "4", "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    assert "1 other files skipped" in result.stdout
    rows, errors = read_rows(out), read_rows(output_paths(out)["errors"])
    assert len(rows) == 13 and len(errors) == 3
    assert sorted(r["index"] for r in rows + errors) == list(range(16))
    reasons = {e["key"]: e["error"] for e in errors}
    assert set(reasons) == {"broken.png", "empty.png", "sub/photo.jpg"}
    assert "not an image" in reasons["broken.png"] and "empty" in reasons["empty.png"]
    assert "damaged" in reasons["sub/photo.jpg"] or "truncated" in reasons["sub/photo.jpg"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["sub/inverted-rgb.png"]["label"] == by_key["00.png"]["label"]  # dark-on-light inverted
    # PNG decoding and preprocessing agree with the server's upload endpoint
    files = [("images", (f"{i:02d}.png", (folder / f"{i:02d}.png").read_bytes(), "image/png")) for i in range(4)]
    reply = httpx.post(server + "/classify_image", files=files, data={"model": "digits-cnn", "top_k": "1"}).json()
    for i, prediction in enumerate(reply["predictions"]):
        row = by_key[f"{i:02d}.png"]
        assert row["label"] == prediction["label"]
        assert row["probability"] == pytest.approx(prediction["top_k"][0]["probability"], abs=1e-5)
    summary = json.loads(output_paths(out)["summary"].read_text())
    assert summary["workers"] == 2 and summary["errors"] == 3 and summary["items_per_s"] > 0


def test_sigkill_mid_job_then_same_command_resumes_exactly_once(digits_artifact, artifacts_env, digits, tmp_path):
    pixels, _ = digits
    idx = write_idx(tmp_path / "all-images-idx3-ubyte", pixels)  # 5,000 real digits
    out = tmp_path / "preds.parquet"
    command = [sys.executable, "-m", "cli", "batch", "digits-cnn", str(idx), str(out),
               "--workers", "2", "--shard-size", "40", "--batch-size", "8"]
    parts = output_paths(out)["parts"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while len(list(parts.glob("part-*.parquet"))) < 3:
        assert job.poll() is None, f"job ended before it could be killed: {job.stdout.read().decode()}"
        assert time.time() < deadline, "job wrote no shards in 120 s"
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)  # the job and its worker processes, mid-way
    job.wait()
    assert job.returncode == -signal.SIGKILL
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    assert 3 <= len(before) < 125 and not out.exists()

    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming:" in result.stdout
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["index"] for r in rows) == list(range(5000))  # exactly one row per input
    assert [r["index"] for r in rows] == list(range(5000))        # in input order
    summary = json.loads(output_paths(out)["summary"].read_text())
    assert summary["resumed_shards"] >= len(before) and summary["computed_items"] == 5000 - 40 * summary["resumed_shards"]
    assert read_rows(output_paths(out)["errors"]) == []
    # the resumed output equals an uninterrupted run
    fresh = run_job("digits-cnn", str(idx), str(tmp_path / "fresh.parquet"),
                    JobOptions(workers=1, shard_size=1000, progress=False))
    assert fresh["rows"] == 5000
    reference = pq.read_table(tmp_path / "fresh.parquet").to_pylist()
    assert [r["label"] for r in rows] == [r["label"] for r in reference]
    np.testing.assert_allclose([r["probabilities"] for r in rows], [r["probabilities"] for r in reference], atol=1e-6)
    # the same command once more: already complete, nothing recomputed
    again = run_cli(*command[3:])
    assert again.returncode == 0 and "already complete" in again.stdout


def test_a_changed_input_or_an_existing_output_is_refused(digits_artifact, artifacts_env, digits, tmp_path):
    pixels, _ = digits
    idx = write_idx(tmp_path / "a-idx3-ubyte", pixels[:50])
    out = tmp_path / "out.jsonl"
    opts = JobOptions(workers=1, shard_size=10, progress=False)
    parts = output_paths(out)["parts"]
    run_job("digits-cnn", str(idx), str(out), opts)
    # an unfinished job folder of another input is not silently mixed with this one
    parts.mkdir()
    (parts / "job.json").write_text(json.dumps({"fingerprint": "another job", "items": 7}))
    out.unlink()
    output_paths(out)["summary"].unlink()
    with pytest.raises(JobError, match="holds a different job"):
        run_job("digits-cnn", str(idx), str(out), opts)
    assert run_job("digits-cnn", str(idx), str(out), JobOptions(workers=1, shard_size=10, progress=False,
                                                                overwrite=True))["rows"] == 50
    other = tmp_path / "other.jsonl"
    other.write_text("someone's file\n")
    with pytest.raises(JobError, match="exists"):
        run_job("digits-cnn", str(idx), str(other), opts)
    with pytest.raises(JobError, match="output format"):
        run_job("digits-cnn", str(idx), str(tmp_path / "out.csv"), opts)


def test_array_inputs_with_bad_rows_and_wrong_shapes(digits_artifact, artifacts_env, digits, tmp_path):
    pixels, _ = digits
    array = pixels[:20].astype(np.float32)
    array[3, 0, 0] = np.nan
    array[5, 1, 1] = 300
    np.save(tmp_path / "frames.npy", array)
    summary = run_job("digits-cnn", str(tmp_path / "frames.npy"), str(tmp_path / "frames.parquet"),
                      JobOptions(workers=1, progress=False))
    errors = read_rows(output_paths(tmp_path / "frames.parquet")["errors"])
    assert summary["rows"] == 18 and [e["index"] for e in errors] == [3, 5]
    assert all("0..255" in e["error"] for e in errors)
    np.save(tmp_path / "wrong.npy", np.zeros((4, 32, 32), np.uint8))
    result = run_cli("batch", "digits-cnn", tmp_path / "wrong.npy", tmp_path / "wrong.parquet")
    assert result.returncode == 2 and "this model takes [N, 28, 28]" in result.stderr


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray (2 CPUs) for the module; jobs connect to it by its address."""
    from tests.integration.test_ray_serve import RAY_MISSING

    prerequisite(RAY_MISSING)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_engine_against_a_cluster_address_matches_local(digits_artifact, artifacts_env, digits, ray_cluster, tmp_path):
    pixels, _ = digits
    idx = write_idx(tmp_path / "r-idx3-ubyte", pixels[:600])
    local = run_job("digits-cnn", str(idx), str(tmp_path / "local.parquet"),
                    JobOptions(workers=1, shard_size=100, progress=False))
    result = run_cli("batch", "digits-cnn", idx, tmp_path / "ray.parquet", "--engine", "ray", "--address",
                     ray_cluster, "--workers", "2", "--shard-size", "100", "--report", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["engine"] == "ray" and summary["ray_address"] == ray_cluster and summary["rows"] == 600
    ray_rows = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    local_rows = pq.read_table(tmp_path / "local.parquet").to_pylist()
    assert local["rows"] == 600 and [r["index"] for r in ray_rows] == list(range(600))
    assert [r["label"] for r in ray_rows] == [r["label"] for r in local_rows]
    np.testing.assert_allclose([r["probabilities"] for r in ray_rows], [r["probabilities"] for r in local_rows],
                               atol=1e-6)




def test_music_batch_from_jsonl_matches_the_servers_generator(folk_artifact, artifacts_env, tmp_path):
    from serving.runner import RunnerOptions
    from serving.tune import MusicGenerator, SamplingParams

    lines = [json.dumps({"id": "reel", "prompt": "X:1\nT:"}), json.dumps({"id": "number", "prompt": 7}),
             json.dumps({"id": "accent", "prompt": "X:1\nT:caf\u00e9"}), "{broken json",
             json.dumps({"id": "jig", "prompt": "X:2\nM:6/8\n"}), json.dumps({"id": "none"}),
             json.dumps({"id": "plain", "prompt": "X:3\n"})]
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "tunes.parquet"
    result = run_cli("batch", "folk-lstm", tmp_path / "prompts.jsonl", out, "--key-column", "id", "--seed", "100",
                     "--max-length", "150", "--temperature", "0.9", "--top-p", "0.95", "--workers", "2",
                     "--shard-size", "2")
    assert result.returncode == 0, result.stderr
    rows, errors = read_rows(out), read_rows(output_paths(out)["errors"])
    assert [r["key"] for r in rows] == ["reel", "jig", "plain"]
    reasons = {e["index"]: e["error"] for e in errors}
    assert sorted(reasons) == [1, 2, 3, 5]
    assert "must be a string" in reasons[1] and "outside the model's vocabulary" in reasons[2]
    assert "not a JSON object" in reasons[3] and "no 'prompt' value" in reasons[5]
    generator = MusicGenerator(folk_artifact, RunnerOptions(device="cpu", threads=1))
    for row in rows:
        assert row["seed"] == 100 + row["index"]
        served = generator.complete(SamplingParams(prompt=row["prompt"], max_length=150, temperature=0.9,
                                                   top_p=0.95, seed=row["seed"]))
        assert row["tune"] == served["tune"] and row["stop_reason"] == served["stop_reason"]
        assert row["tune"].startswith(row["prompt"].rstrip("\n"))
