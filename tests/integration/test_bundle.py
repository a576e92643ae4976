"""Edge bundles: built from the session's real digits model, run in a clean virtualenv that has
only onnxruntime and numpy, answers compared with the real server's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from bundle.make import make_bundle
from tests.clean_venv import clean_env
from tests.unit.test_image_processing import digit_pixels, png  # noqa: F401 (digit_pixels: a fixture)


@pytest.fixture(scope="module")
def digits_bundle(digits_artifact, artifacts_root, tmp_path_factory):
    return make_bundle("digits-cnn", tmp_path_factory.mktemp("bundles"), root=artifacts_root, progress=False)


@pytest.fixture(scope="module")
def edge_python(clean_venv) -> Path:
    """A fresh virtualenv with onnxruntime and numpy (from the local wheelhouse) and nothing else."""
    return clean_venv("onnxruntime", "numpy")


def test_bundle_has_every_file_with_checksums_and_a_matching_archive(digits_bundle):
    folder, manifest = digits_bundle.path, digits_bundle.manifest
    for name in ("model.onnx", "model.ort", "required_operators.config", "required_operators_and_types.config",
                 "manifest.json", "labels.txt", "README.txt", "edge_runner/__init__.py", "edge_runner/__main__.py",
                 "edge_runner/image.py", "edge_runner/families/image.py", "edge_runner/families/common.py"):
        assert (folder / name).is_file(), name
    assert manifest["variant"] == "int8" and manifest["runner"]["requires"] == ["onnxruntime", "numpy"]
    assert (folder / "labels.txt").read_text().split() == manifest["labels"]
    on_disk = json.loads((folder / "manifest.json").read_text())
    for relative, meta in on_disk["files"].items():
        assert meta["bytes"] == (folder / relative).stat().st_size
    # the operator list names what the converted model really runs (int8 QDQ fused kernels)
    config = (folder / "required_operators.config").read_text()
    assert "ai.onnx;" in config and "QLinearConv" in config and "{" not in config
    typed = (folder / "required_operators_and_types.config").read_text()
    assert "QLinearConv{" in typed and "/tmp" not in typed
    ort.InferenceSession(str(folder / "model.ort"), providers=["CPUExecutionProvider"])
    with tarfile.open(digits_bundle.archive) as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
        assert all(m.uid == 0 and m.mtime == 0 for m in tar.getmembers())
    expected = {f"{folder.name}/{p.relative_to(folder)}" for p in folder.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert members == expected


def test_clean_venv_runner_matches_the_server(digits_bundle, edge_python, server, digit_pixels, tmp_path):
    pixels, labels = digit_pixels
    # the virtualenv really has nothing but onnxruntime, numpy and their own dependencies
    probe = subprocess.run([str(edge_python), "-c", "import importlib.util as u; print([m for m in "
                            "('PIL', 'torch', 'bentoml', 'edgestack', 'serving', 'pyarrow') if u.find_spec(m)])"],
                           capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    files = []
    for i in range(6):
        files.append(tmp_path / f"digit{i}.png")
        files[-1].write_bytes(png(pixels[i]))
    (tmp_path / "scan-rgb.png").write_bytes(png(255 - pixels[0], "RGB"))  # dark ink on white, colour
    (tmp_path / "frame.pgm").write_bytes(b"P5\n# a camera frame\n28 28\n255\n" + pixels[1].tobytes())
    idx = tmp_path / "batch-idx3-ubyte"
    idx.write_bytes(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in (8, 28, 28))
                    + pixels[6:14].tobytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    inputs = [*files, tmp_path / "scan-rgb.png", tmp_path / "frame.pgm", idx, tmp_path / "broken.png"]
    run = subprocess.run([str(edge_python), "-m", "edge_runner", *map(str, inputs), "--json", "--top-k", "10"],
                         cwd=digits_bundle.path, capture_output=True, text=True, env=clean_env(), timeout=120)
    assert run.returncode == 1, run.stderr  # 1: one input failed, the others were answered
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(answers) == 6 + 1 + 1 + 8 + 1
    assert "error" in answers[-1] and "damaged" in answers[-1]["error"]

    def probabilities(prediction):
        out = np.zeros(10)
        for score in prediction["top_k"]:
            out[score["index"]] = score["probability"]
        return out

    # image files (the PGM frame too) through the upload endpoint: digits-cnn lays them out as MNIST
    # was made there and in the runner alike; the IDX rows are pixel arrays, as /classify takes them
    upload = [("images", (p.name, p.read_bytes(), "image/png")) for p in files + [tmp_path / "scan-rgb.png"]]
    upload.append(("images", ("frame.pgm", (tmp_path / "frame.pgm").read_bytes(), "image/x-portable-graymap")))
    served = httpx.post(server + "/classify_image", files=upload, data={"model": "digits-cnn", "top_k": "10"},
                        timeout=30).json()["predictions"]
    served += httpx.post(server + "/classify", json={"model": "digits-cnn", "pixels": pixels[6:14].tolist(),
                                                      "top_k": 10}, timeout=30).json()["predictions"]
    assert len(served) == 16
    for mine, theirs in zip(answers[:16], served):
        assert mine["label"] == theirs["label"]
        np.testing.assert_allclose(probabilities(mine), probabilities(theirs), atol=1e-5)
    assert np.mean([int(a["label"]) == y for a, y in zip(answers[8:16], labels[6:14])]) >= 0.75

    # the Python API, with the ONNX file instead of the ORT one, gives the same answers
    np.save(tmp_path / "pixels.npy", pixels[:6])
    script = ("import sys, json, numpy as np; sys.path.insert(0, sys.argv[1]); import edge_runner; "
              "m = edge_runner.load(threads=1, model_format='onnx', check=True); "
              "print(json.dumps(m.probabilities(np.load(sys.argv[2])).tolist()))")
    api = subprocess.run([str(edge_python), "-c", script, str(digits_bundle.path), str(tmp_path / "pixels.npy")],
                         capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert api.returncode == 0, api.stderr
    # pixel arrays are taken as they are (no layout), as the server's /classify takes them
    as_pixels = httpx.post(server + "/classify", json={"model": "digits-cnn", "pixels": pixels[:6].tolist(), "top_k": 10},
                           timeout=30).json()["predictions"]
    np.testing.assert_allclose(json.loads(api.stdout), [probabilities(a) for a in as_pixels], atol=1e-5)

    # run as a path from anywhere, as the README says
    by_path = subprocess.run([str(edge_python), str(digits_bundle.path / "edge_runner"), str(files[0]), "--top-k", "1"],
                             capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert by_path.returncode == 0 and by_path.stdout.startswith(f"{files[0]}: {answers[0]['label']}")


def test_a_changed_bundle_file_is_refused_with_check(digits_bundle, digit_pixels, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, copy)
    model = copy / "model.ort"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    np.save(tmp_path / "one.npy", digit_pixels[0][0])
    run = subprocess.run([sys.executable, "-m", "edge_runner", str(tmp_path / "one.npy"), "--check"], cwd=copy,
                         capture_output=True, text=True, env=clean_env())
    assert run.returncode == 2 and "model.ort does not match its sha256" in run.stderr


def test_music_bundle_in_the_clean_venv_writes_the_servers_tune(folk_artifact, artifacts_root, edge_python,
                                                                digits_folk_server, tmp_path):
    built = make_bundle("folk-lstm", tmp_path / "bundles", root=artifacts_root, progress=False)
    folder = built.path
    for name in ("step.onnx", "step.ort", "prompt.onnx", "prompt.ort", "vocab.json", "edge_runner/tune.py", "edge_runner/families/tune.py", "edge_runner/families/common.py"):
        assert (folder / name).is_file(), name
    assert "DynamicQuantizeLSTM" in (folder / "required_operators.config").read_text()
    (tmp_path / "jig.abc").write_text("X:2\nM:6/8\n")
    run = subprocess.run([str(edge_python), "-m", "edge_runner", "--prompt", "X:1\nT:", str(tmp_path / "jig.abc"),
                          "--prompt", "X:1\nT:caf\u00e9", "--seed", "11", "--max-length", "300",
                          "--temperature", "0.9", "--top-p", "0.95", "--json"],
                         cwd=folder, capture_output=True, text=True, env=clean_env(), timeout=120)
    assert run.returncode == 1, run.stderr  # the third prompt has a character outside the vocabulary
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    # --prompt values first, then prompt files; prompt i gets seed SEED + i
    assert [a.get("seed") for a in answers] == [11, None, 13] and "vocabulary" in answers[1]["error"]
    for answer, prompt in zip([answers[0], answers[2]], ["X:1\nT:", "X:2\nM:6/8\n"]):
        body = {"prompt": prompt, "seed": answer["seed"], "max_length": 300, "temperature": 0.9, "top_p": 0.95}
        served = httpx.post(digits_folk_server + "/generate", json=body, timeout=60).json()
        assert answer["tune"] == served["tune"] and answer["stop_reason"] == served["stop_reason"]


def test_bundles_of_two_families_import_their_own_runner_in_one_process(digits_bundle, folk_artifact, artifacts_root,
                                                                        tmp_path):
    """bench-bundle imports each bundle's edge_runner in turn: the second must not get the first's copy."""
    from benchmarks.bundle import import_from_bundle

    music = make_bundle("folk-lstm", tmp_path / "bundles", root=artifacts_root, progress=False)
    image_module = import_from_bundle(digits_bundle.path, "edge_runner.image")
    music_module = import_from_bundle(music.path, "edge_runner.tune")
    assert Path(image_module.__file__).is_relative_to(digits_bundle.path)
    assert Path(music_module.__file__).is_relative_to(music.path)
    model = import_from_bundle(music.path).load(music.path, threads=1)
    assert isinstance(model.predict_one(), int)  # one generation step: the music runner, not the image one
