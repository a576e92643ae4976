"""`edgestack import`: ONNX files made by other tools, served as their own tensors.

The main file is made by another tool from real data: skl2onnx converts a scikit-learn pipeline
(StandardScaler + MLPClassifier) fitted on scikit-learn's Wisconsin breast-cancer set (569 real
cases, 30 measurements). The second, `sigmoid.onnx`, ships inside the onnxruntime wheel and fixes
its first dimension (shape [3, 4, 5]). Both are imported with the real command, served by a real
`edgestack serve` (REST and gRPC), and must pass the whole `edgestack v2-check` matrix with the
real tritonclient; answers are compared with a plain ONNX Runtime session on the very file.
With `--family image` (small grey and colour CNNs) and `--family text` (a graph of token ids plus
the packaged MiniLM tokenizer.json), all exported by torch's TorchScript exporter, the same server
answers /classify and /classify_text.
Then: the config completed from the graph, the int8 gate, a PyTorch module through `--torch`,
batch jobs, a bundle, and every bad input answered with one line and exit status 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
import tritonclient.http as tc

from cli import main
from cli.v2check import check_models, triton_grpc_inputs, triton_inputs
from edgestack import artifact, registry
from edgestack.serverproc import free_port
from tests.conftest import serve

CANCER, FIXED, INT8, TORCH = "cancer-mlp", "sigmoid-fixed", "cancer-int8", "two-heads"
IMAGE, COLOUR, TEXT = "grey-shapes", "colour-shapes", "bag-sentiment"
ORT_DATASETS = Path(ort.__file__).parent / "datasets"


@pytest.fixture(scope="module")
def files(tmp_path_factory, artifacts_root):
    """The ONNX file (skl2onnx, training/data/onnx_sample.py), its data, and a models folder of this module's own."""
    from training.data.onnx_sample import write_sample

    folder = tmp_path_factory.mktemp("import")
    paths = write_sample(folder / "cancer")
    with np.load(paths["eval"]) as held:
        x, y = held["X"], held["labels"]
    # for this module only (restored after it): its models folder, and the session's artifacts folder
    # for the in-process `edgestack import` calls (tests/conftest.py: no fixture sets it for the session)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESTACK_MODELS_DIR", str(folder / "models"))
        mp.setenv("EDGESTACK_ARTIFACTS", str(artifacts_root))
        yield {"folder": folder, "onnx": paths["onnx"], "calibration": paths["calibration"], "eval": paths["eval"],
               "x": x, "y": y}


def minilm_tokenizer() -> Path:
    from training.text import pretrained_dir

    return pretrained_dir() / "tokenizer.json"


@pytest.fixture(scope="module")
def imported(files):
    import torch

    from tests.integration import import_factory

    folder = files["folder"]
    assert main(["import", str(files["onnx"]), "--name", CANCER]) == 0
    assert main(["import", str(ORT_DATASETS / "sigmoid.onnx"), "--name", FIXED]) == 0
    # family imports of graphs exported by torch's TorchScript exporter (another tool than edgestack's):
    # a small grey CNN answers /classify, a graph of token ids with the MiniLM tokenizer.json /classify_text
    torch.manual_seed(1)
    torch.onnx.export(import_factory.grey_cnn().eval(), (torch.zeros(2, 1, 16, 16),), folder / "cnn.onnx",
                      dynamo=False, input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    assert main(["import", str(folder / "cnn.onnx"), "--name", IMAGE, "--family", "image",
                 "--labels", "ring,bar,dot"]) == 0
    torch.onnx.export(import_factory.colour_cnn().eval(), (torch.zeros(2, 3, 16, 16),), folder / "rgb.onnx",
                      dynamo=False, input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    assert main(["import", str(folder / "rgb.onnx"), "--name", COLOUR, "--family", "image",
                 "--labels", "ring,bar,dot", "--mean", "0.5", "--std", "0.25"]) == 0
    torch.manual_seed(2)
    ids = torch.ones(2, 5, dtype=torch.int64)
    torch.onnx.export(import_factory.BagOfTokens().eval(), (ids, ids), folder / "bag.onnx", dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                    "logits": {0: "batch"}})
    assert main(["import", str(folder / "bag.onnx"), "--name", TEXT, "--family", "text", "--labels", "rotten,fresh",
                 "--tokenizer", str(minilm_tokenizer()), "--max-length", "64"]) == 0
    return {name: artifact.load_latest(name) for name in (CANCER, FIXED, IMAGE, COLOUR, TEXT)}


@pytest.fixture(scope="module")
def urls(imported, files, artifacts_root):
    grpc_port = free_port()
    env = {"EDGESTACK_GRPC_PORT": str(grpc_port), "EDGESTACK_MODELS_DIR": os.environ["EDGESTACK_MODELS_DIR"]}
    with serve([CANCER, FIXED, IMAGE, COLOUR, TEXT], env, root=artifacts_root) as (url, _):
        yield url, f"127.0.0.1:{grpc_port}"


def plain_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_import_reads_the_graph_and_states_its_batching(imported, files, capsys):
    cancer, fixed = imported[CANCER].manifest, imported[FIXED].manifest
    assert cancer["family"] == "generic" and cancer["source"]["producer"].startswith("skl2onnx")
    assert cancer["inputs"] == [{"name": "X", "dtype": "float32", "shape": [-1, 30]}]
    assert cancer["outputs"] == [{"name": "label", "dtype": "int64", "shape": [-1]},
                                 {"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}]
    assert cancer["batching"]["dynamic"] is True
    assert fixed["batching"]["dynamic"] is False and "x [3, 4, 5]" in fixed["batching"]["why"]
    # the fp32 graph is the file, byte for byte; without --eval the int8 graph is kept but not served
    assert (imported[CANCER].path / "model.fp32.onnx").read_bytes() == files["onnx"].read_bytes()
    assert set(cancer["variants"]) == {"fp32", "int8-unvalidated"}
    assert cancer["quantization"]["status"] == "withheld" and "int8-unvalidated" in cancer["quantization"]["reason"]
    assert registry.get(CANCER).imported["sha256"] == artifact.sha256_file(files["onnx"])
    capsys.readouterr()
    assert main(["models"]) == 0  # listed as imported; a variant nothing measured shows no figure (no "nan")
    listed = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("i ")}
    assert listed[CANCER].split()[-2:] == ["fp32", "int8-unvalidated"] and "nan" not in listed[FIXED]


def test_imported_models_pass_v2_check_over_http_and_grpc(urls, imported):
    root = artifact.default_root()
    for url, protocol in ((urls[0], "http"), (urls[1], "grpc")):
        matrix = check_models(url, [CANCER, FIXED, IMAGE, COLOUR, TEXT], root, protocol)
        failed = {(m, cell): v for m, cells in matrix.items() for cell, v in cells.items() if v != "pass"}
        assert not failed, (protocol, failed)


def test_answers_equal_a_plain_onnx_runtime_session_on_the_file(urls, files):
    x = files["x"][:40]
    label, probabilities = plain_session(files["onnx"]).run(["label", "probabilities"], {"X": x})
    with tc.InferenceServerClient(urls[0].removeprefix("http://")) as client:
        rest = client.infer(CANCER, triton_inputs(tc, {"X": x}, binary=True))
    with tg.InferenceServerClient(urls[1]) as client:
        grpc = client.infer(CANCER, triton_grpc_inputs(tg, {"X": x}))
    for result in (rest, grpc):
        np.testing.assert_array_equal(result.as_numpy("label"), label)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=0, atol=1e-6)


def test_the_config_is_completed_from_the_graph_on_both_protocols(urls):
    with tc.InferenceServerClient(urls[0].removeprefix("http://")) as client:
        rest = {m: client.get_model_config(m) for m in (CANCER, FIXED)}
    with tg.InferenceServerClient(urls[1]) as client:
        grpc = {m: client.get_model_config(m, as_json=True)["config"] for m in (CANCER, FIXED)}
    cancer, fixed = rest[CANCER], rest[FIXED]
    assert cancer["max_batch_size"] == 64 and "dynamic_batching" in cancer
    assert cancer["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [30]}]
    assert cancer["output"][0] == {"name": "label", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}
    assert fixed["max_batch_size"] == 0 and "dynamic_batching" not in fixed
    assert [t["dims"] for t in fixed["input"] + fixed["output"]] == [[3, 4, 5], [3, 4, 5]]
    for model, config in grpc.items():  # protobuf JSON writes int64 as strings
        assert int(config.get("max_batch_size", 0)) == rest[model]["max_batch_size"]
        assert [[int(d) for d in t["dims"]] for t in config["input"]] == [t["dims"] for t in rest[model]["input"]]


def test_a_fixed_batch_dimension_is_required_exactly(urls):
    import httpx

    x = np.linspace(-3, 3, 60, dtype=np.float32).reshape(3, 4, 5)
    want = plain_session(ORT_DATASETS / "sigmoid.onnx").run(None, {"x": x})[0]
    with tc.InferenceServerClient(urls[0].removeprefix("http://")) as client:
        np.testing.assert_array_equal(client.infer(FIXED, triton_inputs(tc, {"x": x}, True)).as_numpy("y"), want)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4, 5], "data": [0.5] * 20}]}
    response = httpx.post(f"{urls[0]}/v2/models/{FIXED}/infer", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": "input 'x' of sigmoid-fixed must have shape [3, 4, 5] (-1 = any), got [1, 4, 5]"}


def test_a_family_import_gets_that_familys_rest_endpoints(urls, imported):
    import httpx

    from edgestack.families import image as image_processing
    from edgestack.families import text as text_processing

    grey = np.zeros((2, 16, 16), np.float32)
    grey[0, 4:12, 7:9], grey[1, 6:10, 6:10] = 255, 255
    colour = np.stack([grey, np.flip(grey, 1), 255 - grey], axis=-1)  # [N, H, W, 3]
    for model, pixels in ((IMAGE, grey), (COLOUR, colour)):
        art = imported[model]
        assert art.manifest["preprocessing"]["channels"] == (3 if model == COLOUR else 1)
        logits = plain_session(art.variant_path("fp32")).run(None, {"input": image_processing.to_model_input(
            pixels, art.manifest["preprocessing"])})[0]
        answer = httpx.post(f"{urls[0]}/classify", json={"model": model, "pixels": pixels.tolist(), "top_k": 3}).json()
        assert [p["label"] for p in answer["predictions"]] == [["ring", "bar", "dot"][i] for i in logits.argmax(1)]
        want = image_processing.probabilities(logits)
        got = [[{s["label"]: s["probability"] for s in p["top_k"]}[label] for label in ("ring", "bar", "dot")]
               for p in answer["predictions"]]
        np.testing.assert_allclose(got, want, atol=1e-5)

    texts = ["a warm and funny film", "dull, predictable and far too long to sit through"]
    art = imported[TEXT]
    encoder = text_processing.Encoder(art.file("tokenizer.json"), 64)
    ids, mask, _, _ = encoder(texts)
    logits = plain_session(art.variant_path("fp32")).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    answer = httpx.post(f"{urls[0]}/classify_text", json={"model": TEXT, "texts": texts}).json()
    got = [[p["probabilities"][label] for label in ("rotten", "fresh")] for p in answer["predictions"]]
    np.testing.assert_allclose(got, text_processing.softmax(logits.astype(np.float64)), atol=1e-5)


def test_int8_is_gated_by_the_evaluation_rows_and_the_artifact_is_signed(files, capsys, monkeypatch, tmp_path):
    assert main(["keys", "new", str(tmp_path / "keys")]) == 0
    monkeypatch.setenv("EDGESTACK_SIGNING_KEY", str(tmp_path / "keys" / "signing.key"))
    assert main(["import", str(files["onnx"]), "--name", INT8, "--calibration", str(files["calibration"]),
                 "--eval", str(files["eval"])]) == 0
    monkeypatch.setenv("EDGESTACK_TRUSTED_KEYS", str(tmp_path / "keys" / "signing.pub"))
    art = artifact.load_latest(INT8)  # refused unless model.sig verifies against the trusted key
    assert (art.path / "model.sig").is_file()
    q, variants = art.manifest["quantization"], art.manifest["variants"]
    assert q["status"] == "published" and q["format"] == "QDQ static" and q["chosen"]["within_budget"]
    assert variants["int8"]["test_size"] == 85 and "QuantizeLinear" in variants["int8"]["op_types"]
    assert variants["fp32"]["test_accuracy"] - variants["int8"]["test_accuracy"] <= 0.01
    assert "next: edgestack serve cancer-int8        (serves int8" in capsys.readouterr().out


def test_a_dynamic_int8_graph_answers_each_request_as_if_alone(files):
    """Dynamic int8 scales activations over the whole ORT call: merged requests would move each
    other's answers, so the runner keeps them apart (serving/generic.py)."""
    import asyncio

    from serving.generic import GenericModel
    from serving.runner import RunnerOptions

    assert main(["import", str(files["onnx"]), "--name", "cancer-dynamic", "--eval", str(files["eval"])]) == 0
    art = artifact.load_latest("cancer-dynamic")
    assert art.manifest["quantization"]["format"] == "dynamic" and "int8" in art.meta.variants
    runner = GenericModel(art, RunnerOptions(device="cpu", threads=1))
    assert runner.variant == "int8" and not runner.merged
    small, large = files["x"][:1] * 0.5, files["x"][1:9] * 3.0  # very different activation ranges

    async def together():
        return await asyncio.gather(runner.infer({"X": small}), runner.infer({"X": large}))

    merged = asyncio.run(together())[0]["probabilities"]
    alone = asyncio.run(runner.infer({"X": small}))["probabilities"]
    np.testing.assert_array_equal(merged, alone)


def refusal(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(["import", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("edgestack import: "), err
    return err


def test_bad_input_gets_one_line_and_exit_status_1(imported, files, tmp_path, capsys):
    onnx_file = str(files["onnx"])
    (tmp_path / "notes.onnx").write_text("these are my notes, not a model\n")
    assert "notes.onnx is not an ONNX model" in refusal(capsys, [str(tmp_path / "notes.onnx"), "--name", "x1"])
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    assert "noise.onnx is not an ONNX model" in refusal(capsys, [str(tmp_path / "noise.onnx"), "--name", "x1"])
    newer = onnx.load(onnx_file)
    for entry in newer.opset_import:
        if entry.domain == "":
            entry.version = 27
    onnx.save(newer, tmp_path / "opset27.onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((30, 2), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 30])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])], [weights])
    onnx.save_model(helper.make_model(graph), tmp_path / "split.onnx", save_as_external_data=True,
                    location="split.onnx.data", size_threshold=0)
    (tmp_path / "split.onnx.data").unlink()  # the weights file left behind when the graph was copied
    assert "split.onnx keeps its weights in external files that cannot be read" in refusal(
        capsys, [str(tmp_path / "split.onnx"), "--name", "x1"])
    err = refusal(capsys, [str(tmp_path / "opset27.onnx"), "--name", "x1"])
    assert "uses opset 27 of ai.onnx; onnxruntime" in err and "runs 7 to" in err
    # two files the onnxruntime wheel ships: one breaks the ONNX spec (IR 3 wants initializers listed as inputs),
    # one answers a sequence of maps (scikit-learn's ZipMap) instead of a tensor
    assert "mul_1.onnx fails the ONNX checker: W in initializer but not in graph input" in refusal(
        capsys, [str(ORT_DATASETS / "mul_1.onnx"), "--name", "x1"])
    err = refusal(capsys, [str(ORT_DATASETS / "logreg_iris.onnx"), "--name", "x1"])
    assert "output 'probabilities' is seq(map(int64,tensor(float)))" in err and "zipmap" in err
    # names: a model edgestack trains (a spec in models/), one imported before, artifacts of another
    assert "'fashion-cnn' is a model edgestack trains" in refusal(capsys, [onnx_file, "--name", "fashion-cnn"])
    assert "was imported before (v1); add --new-version" in refusal(capsys, [onnx_file, "--name", CANCER])
    (artifact.default_root() / "orphan-import" / "1").mkdir(parents=True)
    (artifact.default_root() / "orphan-import" / "1" / "manifest.json").write_text("{}")
    assert "already holds artifacts of another model" in refusal(capsys, [onnx_file, "--name", "orphan-import"])
    # --family image with a graph of two channels: neither grey nor colour, the image family cannot feed it
    import torch

    two = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    torch.onnx.export(two, (torch.zeros(2, 2, 8, 8),), tmp_path / "two.onnx", dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    assert "takes 2 channels, but images have 1 (grey) or 3 (RGB) channels; got 2" in refusal(
        capsys, [str(tmp_path / "two.onnx"), "--name", "x1", "--family", "image", "--labels", "a,b,c"])
    # calibration and evaluation data
    assert "--calibration" in refusal(capsys, [onnx_file, "--name", "x1", "--calibration", str(tmp_path / "no.npy")])
    np.save(tmp_path / "narrow.npy", files["x"][:, :29])
    err = refusal(capsys, [onnx_file, "--name", "x1", "--calibration", str(tmp_path / "narrow.npy")])
    assert "does not match the model" in err and "[-1, 30]" in err and "got [169, 29]" in err
    np.savez(tmp_path / "unlabelled.npz", X=files["x"])
    assert "has no 'labels' array" in refusal(capsys, [onnx_file, "--name", "x1", "--eval", str(tmp_path / "unlabelled.npz")])
    np.savez(tmp_path / "short.npz", X=files["x"], labels=files["y"][:10])
    assert "one label per row (169)" in refusal(capsys, [onnx_file, "--name", "x1", "--eval", str(tmp_path / "short.npz")])
    assert not artifact.version_dirs("x1")  # nothing half-written


def test_a_pytorch_module_is_exported_with_a_dynamic_batch_axis_and_the_parity_gate(files, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from serving.generic import GenericModel
    from serving.runner import RunnerOptions
    from tests.integration.import_factory import two_heads

    torch.manual_seed(0)
    module = two_heads().eval()
    save_file(module.state_dict(), tmp_path / "two.safetensors")
    factory = "tests.integration.import_factory:two_heads"
    argv = ["--torch", factory, "--weights", str(tmp_path / "two.safetensors"), "--input-shape", "8",
            "--input-shape", "3", "--name", TORCH]
    assert main(["import", *argv]) == 0
    art = artifact.load_latest(TORCH)
    assert art.manifest["parity"]["passed"] and art.manifest["source"]["factory"] == factory
    assert [t["shape"] for t in art.manifest["inputs"]] == [[-1, 8], [-1, 3]]
    assert [t["shape"] for t in art.manifest["outputs"]] == [[-1, 4], [-1, 1]]
    runner = GenericModel(art, RunnerOptions(device="cpu", threads=1))
    features, context = torch.randn(7, 8), torch.randn(7, 3)
    with torch.no_grad():
        logits, score = module(features, context)
    import asyncio

    got = asyncio.run(runner.infer({"input_0": features.numpy(), "input_1": context.numpy()}))
    np.testing.assert_allclose(got["output_0"], logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["output_1"], score.numpy(), atol=1e-5)
    # weights of another module: one line naming what does not fit
    save_file({"weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    err = refusal(capsys, ["--torch", factory, "--weights", str(tmp_path / "other.safetensors"), "--input-shape", "8",
                           "--input-shape", "3", "--name", "x2"])
    assert "other.safetensors does not fit the module" in err
    assert "cannot import 'no_such_package.m'" in refusal(capsys, ["--torch", "no_such_package.m:f", "--weights",
                                                                   str(tmp_path / "two.safetensors"), "--input-shape",
                                                                   "8", "--name", "x2"])


def test_batch_jobs_take_npy_and_parquet_tensors(imported, files, tmp_path):
    """(The bundle: the walk-through test below.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batch.job import JobOptions, run_job

    x = files["x"][:25]
    label, probabilities = plain_session(files["onnx"]).run(["label", "probabilities"], {"X": x})
    np.save(tmp_path / "rows.npy", x)
    run_job(CANCER, str(tmp_path / "rows.npy"), str(tmp_path / "out.parquet"),
            JobOptions(workers=1, shard_size=10, progress=False))
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["label"] for r in rows] == label.tolist()
    np.testing.assert_allclose([r["probabilities"] for r in rows], probabilities, atol=1e-6)
    # Parquet: one column per input; a cell of the wrong length is an error row, the others are answered
    cells = [list(map(float, row)) for row in x[:3]]
    cells[1] = cells[1][:5]
    pq.write_table(pa.table({"X": cells}), tmp_path / "rows.parquet")
    run_job(CANCER, str(tmp_path / "rows.parquet"), str(tmp_path / "out2.jsonl"), JobOptions(workers=1, progress=False))
    answered = [json.loads(line) for line in (tmp_path / "out2.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "out2.errors.jsonl").read_text().splitlines()]
    assert [r["index"] for r in answered] == [0, 2] and errors[0]["index"] == 1
    assert "'X' has shape [5]; an item is [30]" in errors[0]["error"]


def test_the_onnx_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/your-own-model.md, "From an ONNX file": every line as written, in a fresh folder with its
    own specs and artifacts. `edgestack` lines run through the CLI's main (in this process, the same
    entry point), the server as a real `edgestack serve` on free ports, curl as an HTTP GET."""
    import contextlib
    import importlib
    import shlex

    import httpx
    import pyarrow.parquet as pq

    from edgestack.serverproc import running_server
    from tests.integration.test_own_model import walkthrough

    root = Path(__file__).resolve().parents[2]
    env = {"EDGESTACK_MODELS_DIR": str(tmp_path / "models"), "EDGESTACK_ARTIFACTS": str(tmp_path / "artifacts"),
           "EDGESTACK_THREADS": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    ports, outputs = {}, {}
    with contextlib.ExitStack() as stack:
        for line in walkthrough("onnx"):
            words = shlex.split(line)
            for old, new in ports.items():
                words = [w.replace(old, new) for w in words]
            if words[:2] == ["edgestack", "serve"]:
                assert words[-1] == "&", line
                http, grpc = free_port(), free_port()
                ports = {f"localhost:{words[words.index('--port') + 1]}": f"127.0.0.1:{http}",
                         f"localhost:{words[words.index('--grpc-port') + 1]}": f"127.0.0.1:{grpc}"}
                models = [w for w in words[2:words.index("--port")] if not w.startswith("-")]
                stack.enter_context(running_server(models, port=http, env={
                    **env, "EDGESTACK_GRPC_PORT": str(grpc), "PYTHONPATH": str(root)},
                    log_path=tmp_path / "server.log"))
            elif words[0] == "curl":
                outputs[line] = httpx.get(words[-1], timeout=30).json()
            elif words[0] == "edgestack":
                capsys.readouterr()
                assert main(words[1:]) == 0, line
                outputs[line] = capsys.readouterr().out
            elif words[:2] == ["python", "-m"]:
                assert importlib.import_module(words[2]).main(words[3:]) == 0, line
            else:
                assert words[0] == "python", line
                done = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, timeout=120,
                                      check=False)
                assert done.returncode == 0, done.stderr
                outputs[line] = json.loads(done.stdout)
    by_start = {line.split()[0] + " " + line.split()[1]: out for line, out in outputs.items()}
    config = by_start["curl -s"]
    assert config["max_batch_size"] == 64 and config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [30]}]
    checks = [out for line, out in outputs.items() if "v2-check" in line]
    assert len(checks) == 2 and all("0 failed cell(s)" in out for out in checks), checks
    art = artifact.load_latest("cancer-mlp", tmp_path / "artifacts")
    assert "int8" in art.meta.variants and art.manifest["quantization"]["status"] == "published"
    rows = np.load(tmp_path / "cancer-rows.npy")
    label, probabilities = plain_session(art.variant_path("int8")).run(["label", "probabilities"], {"X": rows})
    batch = pq.read_table(tmp_path / "cancer-preds.parquet").to_pylist()  # the job ran the served variant, int8
    assert [r["label"] for r in batch] == label.tolist()
    np.testing.assert_allclose([r["probabilities"] for r in batch], probabilities, atol=1e-6)
    device = by_start["python bundles/cancer-mlp-v1/edge_runner"]["outputs"]  # the bundle's int8 ORT-format graph
    assert device["label"] == label.tolist()
    np.testing.assert_allclose(device["probabilities"], probabilities, atol=1e-5)

