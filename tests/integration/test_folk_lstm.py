"""folk-lstm end to end on a slice of the real Irish tunes: train, export, quantize, generate, serve.

A tiny LSTM (hidden 48) trained for 2 epochs on 120 real tunes: what it writes is not music
yet, but every mechanism is the real one (ONNX LSTM op, DynamicQuantizeLSTM, ORT sessions,
abc2midi, a real `bentoml serve` process, real HTTP and Server-Sent Events).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest

from edgestack.errors import InputError
from edgestack.runtime import open_session
from export.tune import ROLLOUT_PROMPT, greedy_rollout_ort, greedy_rollout_torch
from serving import abc_tools
from serving.runner import RunnerOptions
from serving.tune import MusicGenerator
from tests.reference import graph_ops
from training import tune as tune_training
from training.data import abc as abc_data

TINY = {"hidden_size": 48, "embedding_dim": 32, "epochs": 2, "patience": 2, "train_limit": 120, "val_limit": 30,
        "batch_size": 16, "threads": 1}
LIMITS = {"EDGESTACK_MAX_PROMPT_CHARS": "600", "EDGESTACK_MAX_NEW_CHARS": "800"}


@pytest.fixture(scope="module")
def splits():
    return abc_data.load_splits("irish", seed=0)


@pytest.fixture(scope="module")
def runner(folk_artifact) -> MusicGenerator:
    """The server's generator with the server's limits (read when it is made; the environment is
    restored at once, so no other test sees them)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in LIMITS.items():
            mp.setenv(key, value)
        return MusicGenerator(folk_artifact, RunnerOptions(device="cpu", threads=1))


@pytest.fixture(scope="module")
def folk_server(digits_folk_server):
    """The session's server of digits-cnn and this tiny folk-lstm with LIMITS (tests/conftest.py);
    folk-lstm is its only tune generator, so requests may leave `model` out."""
    return digits_folk_server


def described(url: str, name: str = "folk-lstm") -> dict:
    return next(m for m in httpx.post(url + "/models", json={}).json()["models"] if m["name"] == name)


# -- data ---------------------------------------------------------------------------------







# -- training and export ------------------------------------------------------------------

def test_training_learns_and_writes_a_safe_run(folk_artifact):
    metrics = folk_artifact.manifest["training"]
    checkpoint = folk_artifact.path / "checkpoint"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "curves.png").is_file()
    assert not list(folk_artifact.path.rglob("*.pt")) and not list(folk_artifact.path.rglob("*.pkl"))
    vocab_size = folk_artifact.manifest["vocabulary"]["size"]
    # better than guessing uniformly among the characters, even after 2 tiny epochs
    assert metrics["val_bits_per_char"] < np.log2(vocab_size) - 1.0
    assert metrics["tunes"]["train"] == 120


def test_greedy_rollout_of_200_steps_matches_pytorch(folk_artifact):
    model, config, vocab = tune_training.load_checkpoint(folk_artifact.path / "checkpoint")
    fp32 = folk_artifact.variants["fp32"]
    step = open_session(folk_artifact.file(fp32["file"]), device="cpu", threads=1)
    prompt = open_session(folk_artifact.file(fp32["prompt_file"]), device="cpu", threads=1)
    ids = vocab.encode(ROLLOUT_PROMPT)
    expected = greedy_rollout_torch(model, ids, 200)
    assert greedy_rollout_ort(prompt, step, ids, 200, config["hidden_size"]) == expected
    assert folk_artifact.manifest["parity"]["greedy_rollout_identical"] is True


def test_int8_graphs_really_quantize_the_lstm(folk_artifact):
    for key in ("file", "prompt_file"):
        fp32 = graph_ops(folk_artifact.file(folk_artifact.variants["fp32"][key]))
        int8 = graph_ops(folk_artifact.file(folk_artifact.variants["int8"][key]))
        assert fp32.get("LSTM") == 1 and "DynamicQuantizeLSTM" not in fp32
        assert int8.get("DynamicQuantizeLSTM") == 1 and "LSTM" not in int8
        assert "MatMulInteger" in int8  # the output layer too
    variants = folk_artifact.variants
    assert variants["int8"]["val_bits_per_char"] <= variants["fp32"]["val_bits_per_char"] * 1.02
    assert folk_artifact.manifest["pytorch_val_bits_per_char"] == pytest.approx(
        variants["fp32"]["val_bits_per_char"], rel=1e-4)


# -- generation (numpy + ORT) -------------------------------------------------------------



def test_same_seed_same_tune_and_top_k_1_is_greedy(runner):
    a = runner.complete(runner.check("X:1\nT:", 300, 1.0, 0, 1.0, 7))
    b = runner.complete(runner.check("X:1\nT:", 300, 1.0, 0, 1.0, 7))
    c = runner.complete(runner.check("X:1\nT:", 300, 1.0, 0, 1.0, 8))
    assert a == b and a["tune"] != c["tune"] and a["tune"].startswith("X:1\nT:")
    greedy = [runner.complete(runner.check("X:1\n", 100, 1.0, 1, 1.0, seed))["tune"] for seed in (1, 2)]
    assert greedy[0] == greedy[1]
    assert a["stop_reason"] in ("end_of_tune", "max_length") and a["generated_chars"] <= 300
    assert "\n\n" not in a["tune"]


def test_v2_infer_runs_one_step_with_explicit_state(runner):
    h, c = runner.zero_state(2)
    out = asyncio.run(runner.infer({"token": np.array([3, 5]), "h": h, "c": c}))
    assert out["logits"].shape == (2, len(runner.chars)) and out["h_out"].shape == h.shape
    logits, h1, _ = runner.generator.step(5, h[:, 1:], c[:, 1:])
    one = asyncio.run(runner.infer({"token": np.array([5]), "h": h[:, 1:], "c": c[:, 1:]}))
    np.testing.assert_array_equal(one["logits"][0], logits)
    np.testing.assert_array_equal(one["h_out"], h1)
    # int8: activations are quantized with one scale per call, so a batch differs a little from batch 1
    np.testing.assert_allclose(out["logits"][1], logits, atol=0.05)
    with pytest.raises(InputError, match="must have shape"):
        asyncio.run(runner.infer({"token": np.array([3]), "h": h, "c": c}))
    with pytest.raises(InputError, match="token ids must be in"):
        asyncio.run(runner.infer({"token": np.array([999, 1]), "h": h, "c": c}))
    with pytest.raises(InputError, match="missing"):
        asyncio.run(runner.infer({"token": np.array([1, 1]), "h": h}))
    assert [i["name"] for i in runner.inputs] == ["token", "h", "c"]
    assert runner.inputs[1]["shape"] == [1, -1, runner.hidden]




def test_leaving_a_stream_early_stops_the_generation(runner, monkeypatch):
    """The server's stream (serving/tune.py MusicGenerator.stream, what /generate_stream sends):
    when its consumer leaves after the first piece, the worker thread stops stepping the LSTM."""
    # a seed whose whole tune runs long, so that stopping early differs from finishing
    params = next(p for p in (runner.check("X:1\nT:", 800, 1.0, 0, 1.0, seed) for seed in range(40))
                  if runner.complete(p)["generated_chars"] >= 300)
    steps = []
    real_step = runner.generator.step

    def slow_step(token, h, c):  # 5 ms a character: the whole tune would take seconds
        steps.append(token)
        time.sleep(0.005)
        return real_step(token, h, c)

    monkeypatch.setattr(runner.generator, "step", slow_step)

    async def leave_after_the_first_piece():
        stream = runner.stream(params)
        first = await anext(stream)
        await stream.aclose()  # what the server does when the client disconnects
        return first, len(steps)

    first, at_close = asyncio.run(leave_after_the_first_piece())
    time.sleep(0.2)
    assert first and len(steps) == at_close < 100, (at_close, len(steps))  # stopped, and nothing ran after


# -- over HTTP ----------------------------------------------------------------------------

def read_sse(response: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def test_generate_whole_and_streamed_are_the_same_tune(folk_server):
    body = {"prompt": "X:1\nT:", "seed": 11, "max_length": 400, "temperature": 0.9, "top_p": 0.95}
    whole = httpx.post(folk_server + "/generate", json=body, timeout=30)
    assert whole.status_code == 200, whole.text
    tune = whole.json()["tune"]
    with httpx.stream("POST", folk_server + "/generate_stream", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "end" and names.count("piece") >= 1
    assert events[0][1]["seed"] == 11
    streamed = body["prompt"] + "".join(data["text"] for name, data in events if name == "piece")
    assert streamed.rstrip("\n") == tune == events[-1][1]["tune"]
    again = httpx.post(folk_server + "/generate", json=body, timeout=30).json()
    assert again["tune"] == tune  # same seed and parameters, same tune


def test_render_midi_of_a_given_and_a_generated_tune(folk_server, splits):
    vocabulary = set(described(folk_server)["vocabulary"])
    real = next(t for t in splits.test if set(t) <= vocabulary and len(t) < 500)
    response = httpx.post(folk_server + "/render_midi", json={"abc": real}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/midi" and response.content.startswith(b"MThd")
    assert abc_tools.count_note_ons(response.content) > 20
    # no `abc`: generate first (a prompt that is most of a real tune), then render
    prompt = real.rsplit("\n", 1)[0] + "\n"
    response = httpx.post(folk_server + "/render_midi", json={"prompt": prompt, "seed": 3}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"MThd") and int(response.headers["x-abc-notes"]) > 10


BAD = [
    ("/generate", {"prompt": "X:1\nT:Caf\u00e9 \u266b"}, 400, "outside the model's vocabulary"),
    ("/generate", {"prompt": "X:1\n" + "a" * 700}, 413, "the limit is 600"),
    ("/generate", {"temperature": 0}, 400, "temperature must be a number in (0, 5]"),
    ("/generate", {"temperature": -1.5}, 400, "temperature"),
    ("/generate", {"temperature": 1e6}, 400, "temperature"),
    ("/generate", {"top_p": 0}, 400, "top_p must be in (0, 1]"),
    ("/generate", {"top_p": 1.5}, 400, "top_p must be in (0, 1]"),
    ("/generate", {"top_k": -1}, 400, "top_k must be a whole number"),
    ("/generate", {"max_length": 801}, 400, "max_length must be between 1 and 800"),
    ("/generate", {"max_length": 0}, 400, "max_length must be between 1 and 800"),
    ("/generate", {"seed": -4}, 400, "seed must be"),
    ("/generate", {"model": "no-such"}, 404, "unknown model 'no-such'"),
    ("/generate_stream", {"prompt": "\u00e9"}, 400, "outside the model's vocabulary"),
    ("/generate_stream", {"temperature": 0}, 400, "temperature"),
    ("/render_midi", {"abc": "hello, not a tune"}, 422, "invalid ABC: a tune must start with an X:"),
    ("/render_midi", {"abc": "X:1\nT:No key\nM:4/4\nabc|"}, 422, "missing K: header"),
    ("/render_midi", {"abc": "X:1\nT:Empty\nM:4/4\nK:D\n|]"}, 422, "no music after the K: header"),
    ("/render_midi", {"abc": "X:1\nT:t\nM:4/4\nK:D\n" + "a" * 30000}, 413, "the limit is 20000"),
    ("/render_midi", {"temperature": -1}, 400, "temperature"),
]


@pytest.mark.parametrize("path,body,status,message", BAD, ids=[f"{p}-{m[:30]}" for p, _, _, m in BAD])
def test_bad_input_is_a_4xx_naming_the_problem(folk_server, path, body, status, message):
    response = httpx.post(folk_server + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    payload = response.json()
    error = (payload[0] if isinstance(payload, list) else payload)["error"]
    assert message in error


def test_client_leaving_mid_stream_does_not_hurt_the_server(folk_server):
    with httpx.stream("POST", folk_server + "/generate_stream", json={"max_length": 800, "seed": 2},
                      timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("event: start")
    response = httpx.post(folk_server + "/generate", json={"max_length": 20, "seed": 2}, timeout=30)
    assert response.status_code == 200


def test_open_inference_protocol_v2_step_with_explicit_state(folk_server):
    meta = httpx.get(folk_server + "/v2/models/folk-lstm").json()
    assert [i["name"] for i in meta["inputs"]] == ["token", "h", "c"]
    hidden = meta["inputs"][1]["shape"][-1]
    body = {"inputs": [{"name": "token", "shape": [1], "datatype": "INT64", "data": [5]},
                       {"name": "h", "shape": [1, 1, hidden], "datatype": "FP32", "data": [0.0] * hidden},
                       {"name": "c", "shape": [1, 1, hidden], "datatype": "FP32", "data": [0.0] * hidden}]}
    response = httpx.post(folk_server + "/v2/models/folk-lstm/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["logits"]["shape"][0] == 1 and outputs["h_out"]["shape"] == [1, 1, hidden]
    body["inputs"][0]["data"] = [9999]
    response = httpx.post(folk_server + "/v2/models/folk-lstm/infer", json=body, timeout=30)
    assert response.status_code == 400 and "token ids must be in" in response.text


def test_models_endpoint_and_still_serving_after_bad_input(folk_server):
    folk = described(folk_server)
    assert folk["variant"] == "int8" and folk["limits"] == {"max_prompt_chars": 600, "max_length": 800}
    assert folk["inputs"][0] == {"name": "token", "dtype": "int64", "shape": [-1]}
    response = httpx.post(folk_server + "/generate", json={"max_length": 5, "seed": 1}, timeout=30)
    assert response.status_code == 200 and response.json()["generated_chars"] <= 5






# -- the Python client (clients/client.py) -------------------------------------------------

def test_client_streams_the_same_tune_it_generates_whole(folk_server):
    from clients import Client

    with Client(folk_server) as client:
        whole = client.generate("X:1\nT:", seed=5, max_length=300, temperature=0.9)
        events = list(client.generate_stream("X:1\nT:", seed=5, max_length=300, temperature=0.9))
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "end"
    streamed = "X:1\nT:" + "".join(e.text for e in events)
    assert streamed.rstrip("\n") == whole.tune == events[-1].data["tune"] and whole.seed == 5
    assert whole.stop_reason in ("end_of_tune", "max_length") and whole.generated_chars <= 300


def test_async_client_streams_the_tune_it_generates(folk_server):
    from clients import AsyncClient

    async def scenario():
        async with AsyncClient(folk_server) as client:
            pieces = []
            async for event in client.generate_stream(seed=9, max_length=200):
                pieces.append(event)
            tune = pieces[-1].data["tune"]
            return tune, await client.generate(seed=9, max_length=200)

    tune, whole = asyncio.run(scenario())
    assert tune == whole.tune


def test_client_leaving_a_stream_early_closes_it_and_bad_sampling_is_a_request_error(folk_server):
    from clients import Client, RequestError

    with Client(folk_server) as client:
        stream = client.generate_stream(seed=2, max_length=800)
        assert next(stream).kind == "start"
        stream.close()  # leaves mid-tune: the connection is closed, the server stops generating
        assert client.generate(seed=2, max_length=10).generated_chars <= 10
        with pytest.raises(RequestError, match="temperature") as caught:
            next(client.generate_stream(temperature=0))
        assert caught.value.status == 400
        with pytest.raises(RequestError, match="invalid ABC") as caught:
            client.render_midi("hello, not a tune")
        assert caught.value.status == 422
        with pytest.raises(TypeError, match="temprature"):
            client.generate(temprature=1.0)


def test_predict_command_streams_a_tune(folk_server, capsys):
    from cli import main

    assert main(["predict", "folk-lstm", "X:1\\nT:", "--url", folk_server, "--seed", "4", "--max-length", "150"]) == 0
    printed = capsys.readouterr().out
    assert main(["predict", "folk-lstm", "X:1\\nT:", "--url", folk_server, "--seed", "4", "--max-length", "150",
                 "--json"]) == 0
    tune = json.loads(capsys.readouterr().out)["tune"]
    assert printed.startswith("X:1\nT:") and printed.rstrip("\n") == tune  # the escape became a newline
    assert main(["predict", "folk-lstm", "--url", folk_server, "--temperature", "0"]) == 2
    assert "temperature" in capsys.readouterr().err
