"""Text transformers: loaders and splits, a short fine-tune, ONNX parity, fusions, int8, the server.

Real data throughout: the packaged Rotten Tomatoes snippets and BBC articles, the packaged
MiniLM-L6 (fine-tuned for one epoch on 480 real snippets at max length 32), real ONNX
Runtime sessions and a real `bentoml serve` process answering real HTTP.
"""

from __future__ import annotations

import asyncio
import csv
import json

import httpx
import numpy as np
import pytest

from edgestack import artifact
from tests.conftest import batches, serve
from tests.reference import graph_ops
from training.data import text as text_data

NAME = "sentiment-transformer"


# --- data ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sentiment():
    return text_data.sentiment(seed=0)














# --- a short fine-tune, exported -----------------------------------------------------------

@pytest.fixture(scope="module")
def slice_csv(tmp_path_factory, sentiment):
    """600 real snippets (stratified) as a user's CSV: 480 train / 60 validation / 60 test."""
    path = tmp_path_factory.mktemp("text-data") / "snippets.csv"
    part = sentiment.train.stratified_head(600, seed=1)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((t, sentiment.labels[y]) for t, y in zip(part.texts, part.labels))
    return path


def _build(root, name, cfg, **export_kwargs):
    from export.text import export
    from training.text import train

    run_dir = root.parent / f"runs-{name}"
    metrics = train(cfg, run_dir, progress=False)
    staging = artifact.fresh_version_dir(name, root)
    export(run_dir, staging, name=name, progress=False, **export_kwargs)
    return artifact.load(artifact.publish(staging)), metrics, run_dir


@pytest.fixture(scope="module")
def text_root(tmp_path_factory, artifacts_root):
    return tmp_path_factory.mktemp("text-root") / "artifacts"


@pytest.fixture(scope="module")
def minilm(text_root, slice_csv):
    """MiniLM-L6 fine-tuned for 1 epoch on 480 real snippets, max length 32, every variant exported."""
    from training.text import Config

    text_root.mkdir(exist_ok=True)
    cfg = Config(data_dir=str(slice_csv), arch="minilm", epochs=1, batch_size=16, lr=1e-4, head_lr=1e-3,
                 max_length=32, seed=0, threads=2)
    # 60 test texts: one flipped prediction is 1.7 points, so the 1-point budget is checked below on 256
    return _build(text_root, NAME, cfg, max_int8_drop=1.0)  # any int8: the checks below are on 256 texts


def test_fine_tune_writes_safetensors_plots_and_a_baseline(minilm):
    art, metrics, run_dir = minilm
    assert len(metrics["history"]) == 1 and np.isfinite(metrics["history"][0]["train_loss"])
    assert metrics["train_size"] == 480 and metrics["baseline"]["test_acc"] > 0
    for name in ("model/model.safetensors", "model/encoder.json", "tokenizer.json", "curves.png", "confusion.png"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.bin")) and not list(run_dir.rglob("*.pt"))


def test_fine_tune_moved_the_pretrained_weights(minilm):
    from safetensors.numpy import load_file

    from training.text import pretrained_dir

    _, _, run_dir = minilm
    tuned = load_file(str(run_dir / "model" / "model.safetensors"))
    original = load_file(str(pretrained_dir() / "model.safetensors"))
    key = "encoder.layer.5.output.dense.weight"
    assert not np.allclose(tuned["bert." + key], original[key])
    np.testing.assert_array_equal(tuned["bert.embeddings.word_embeddings.weight"].shape,
                                  original["embeddings.word_embeddings.weight"].shape)


def test_manifest_declares_text_in_probabilities_out(minilm):
    art, _, _ = minilm
    m = art.manifest
    assert m["inputs"] == [{"name": "text", "dtype": "bytes", "shape": [-1]}]
    assert m["outputs"] == [{"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}]
    assert set(m["variants"]) == {"fp32", "fp32-opt", "int8", "fp16"}
    assert all(0 <= v["test_accuracy"] <= 1 for v in m["variants"].values())
    assert (art.path / "tokenizer.json").is_file() and m["preprocessing"]["max_length"] == 32


def test_parity_with_pytorch_on_real_texts_and_padding(minilm, sentiment):
    """ORT (plain and fused) equals PyTorch on real texts; a text's logits do not depend on its batch's padding."""
    import torch

    from edgestack.families.text import Encoder
    from edgestack.runtime import open_session
    from export.text import PARITY_ATOL, PARITY_RTOL
    from training.text import load_checkpoint

    art, _, run_dir = minilm
    assert art.manifest["parity"]["fp32"]["passed"] and art.manifest["parity"]["fp32-opt"]["passed"]
    model, _, _ = load_checkpoint(run_dir)
    encoder = Encoder(art.file("tokenizer.json"), 32)
    texts = sentiment.test.texts[:24]
    ids, mask, lengths, _ = encoder(texts)
    assert ids.shape[1] == lengths.max() <= 32  # padded to the longest text, not to max length
    with torch.no_grad():
        expected = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    for variant in ("fp32", "fp32-opt"):
        session = open_session(art.variant_path(variant), device="cpu", threads=2)
        got = session.run({"input_ids": ids, "attention_mask": mask})[0]
        np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=PARITY_RTOL)
        alone = session.run(dict(zip(("input_ids", "attention_mask"), encoder(texts[:1])[:2])))[0]
        np.testing.assert_allclose(alone[0], got[0], atol=PARITY_ATOL, rtol=PARITY_RTOL)


def test_transformer_optimizer_fused_every_layer(minilm):
    """Counted in the graph files (tests/reference.py graph_ops), not read from the exporter's manifest."""
    art, _, _ = minilm
    fused = graph_ops(art.variant_path("fp32-opt"))
    assert fused["Attention"] + fused["MultiHeadAttention"] == 6  # one per layer of MiniLM-L6
    assert fused["SkipLayerNormalization"] == 12
    assert fused["EmbedLayerNormalization"] == 1
    assert fused["BiasGelu"] + fused["FastGelu"] + fused["Gelu"] == 6
    assert "Softmax" not in fused  # the unfused attention is gone
    plain = graph_ops(art.variant_path("fp32"))
    assert "Attention" not in plain and plain["Softmax"] == 6  # what the optimizer started from
    int8 = graph_ops(art.variant_path("int8"))
    assert int8["QAttention"] + int8["DynamicQuantizeMatMul"] + int8["MatMulInteger"] >= 6
    assert art.manifest["fusions"]["fused"]["Attention"] == fused["Attention"]  # the manifest tells the truth


def test_int8_keeps_accuracy_on_a_slice(minilm, sentiment):
    from edgestack.families.text import Encoder
    from export.text import MAX_INT8_DROP, ort_logits

    art, _, _ = minilm
    encoder = Encoder(art.file("tokenizer.json"), 32)
    texts = sentiment.test.texts[:256]
    # the CSV's labels were sorted by name: map the packaged label ids onto the model's
    labels = np.asarray([art.manifest["labels"].index(sentiment.labels[y]) for y in sentiment.test.labels[:256]])
    fp32 = ort_logits(art.variant_path("fp32"), encoder, texts).argmax(1)
    int8 = ort_logits(art.variant_path("int8"), encoder, texts).argmax(1)
    assert len(np.unique(fp32)) == 2 and (fp32 == labels).mean() > 0.6  # a model worth quantizing
    # a one-epoch model on 480 texts has many near-ties, so a few flips either way are expected
    assert (int8 == fp32).mean() >= 0.9
    assert (fp32 == labels).mean() - (int8 == labels).mean() <= MAX_INT8_DROP + 1 / 256


def test_tiny_transformer_from_scratch_with_its_own_tokenizer(text_root, slice_csv):
    from tokenizers import Tokenizer

    from training.text import Config

    cfg = Config(data_dir=str(slice_csv), arch="tiny", epochs=2, lr=1e-3, max_length=32, vocab_size=2000,
                 hidden_size=64, layers=2, heads=2, baseline=False, threads=2)
    art, metrics, _ = _build(text_root, "sentiment-tiny", cfg, max_int8_drop=1.0)  # any int8: the checks below are on 256 texts
    vocab = Tokenizer.from_file(str(art.file("tokenizer.json"))).get_vocab_size()
    assert 500 < vocab <= 2000  # learnt from the 480 training texts, not MiniLM's 30,522
    assert graph_ops(art.variant_path("fp32-opt"))["Attention"] == 2  # both layers fused, in the file
    assert art.manifest["parity"]["fp32-opt"]["passed"]
    assert len(metrics["history"]) >= 1


# --- the server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_server(minilm, text_root):
    env = {"EDGESTACK_ARTIFACTS": str(text_root), "EDGESTACK_MAX_ITEMS": "8", "EDGESTACK_MAX_TEXT_CHARS": "2000"}
    with serve([NAME], env) as (url, _):
        yield url


def error_of(response: httpx.Response) -> str:
    body = response.json()
    return (body[0] if isinstance(body, list) else body)["error"]


def test_classify_one_text_and_a_list(text_server, minilm, sentiment):
    art, _, _ = minilm
    short = min(sentiment.test.texts[:50], key=len)
    one = httpx.post(text_server + "/classify_text", json={"text": short}, timeout=30)
    assert one.status_code == 200, one.text
    pred = one.json()["predictions"][0]
    assert pred["label"] in ("rotten", "fresh") and abs(sum(pred["probabilities"].values()) - 1) < 1e-4
    assert one.json()["variant"] == "int8" and not pred["truncated"]
    texts = sentiment.test.texts[:8]
    many = httpx.post(text_server + "/classify_text", json={"model": NAME, "texts": texts}, timeout=30).json()
    assert len(many["predictions"]) == 8
    # the server's answers are the int8 graph's, tokenized the same way
    from edgestack.families.text import Encoder
    from export.text import ort_logits

    logits = ort_logits(art.variant_path("int8"), Encoder(art.file("tokenizer.json"), 32), texts)
    assert [p["label"] for p in many["predictions"]] == [art.manifest["labels"][i] for i in logits.argmax(1)]


def test_long_text_is_truncated_and_says_so(text_server):
    long = "a slow, overlong and tedious film " * 30   # about 200 tokens, max length is 32
    pred = httpx.post(text_server + "/classify_text", json={"text": long}, timeout=30).json()["predictions"][0]
    assert pred["truncated"] is True and pred["tokens"] == 32


def test_concurrent_texts_share_batches(text_server, sentiment):
    async def burst():
        async with httpx.AsyncClient(base_url=text_server, timeout=60) as client:
            return await asyncio.gather(*(client.post("/classify_text", json={"text": t})
                                          for t in sentiment.test.texts[:32]))

    before = batches(text_server, NAME)
    assert all(r.status_code == 200 for r in asyncio.run(burst()))
    calls, rows = (after - first for after, first in zip(batches(text_server, NAME), before))
    # the burst's 32 one-text requests went through in fewer ORT calls: they shared batches
    assert rows == 32 and calls < 32, (calls, rows)


BAD = [
    ("empty text", {"text": ""}, 400, "text is empty"),
    ("blank item", {"texts": ["fine", "   "]}, 400, "texts[1] is empty"),
    ("number in list", {"texts": ["fine", 7]}, 400, "texts[1] is int, not a string"),
    ("text not a string", {"text": 42}, 400, "`text` must be a string"),
    ("texts not a list", {"texts": "one"}, 400, "must be a list of strings"),
    ("empty list", {"texts": []}, 400, "empty list"),
    ("neither", {}, 400, "send either `text`"),
    ("both", {"text": "a", "texts": ["b"]}, 400, "send either `text`"),
    ("too many", {"texts": ["a"] * 9}, 413, "the limit is 8"),
    ("too long", {"text": "x" * 2001}, 413, "the limit is 2000"),
    ("unknown model", {"model": "nope", "text": "a"}, 404, "unknown model 'nope'"),
]


@pytest.mark.parametrize("case,body,status,message", BAD, ids=[c[0] for c in BAD])
def test_bad_text_input_is_4xx_with_a_message(text_server, case, body, status, message):
    response = httpx.post(text_server + "/classify_text", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert message in error_of(response)


def test_v2_infer_takes_bytes_and_answers_probabilities(text_server, sentiment):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": sentiment.test.texts[:2]}]}
    response = httpx.post(text_server + f"/v2/models/{NAME}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    assert out["name"] == "probabilities" and out["shape"] == [2, 2]
    bad = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [""]}]}
    response = httpx.post(text_server + f"/v2/models/{NAME}/infer", json=bad, timeout=30)
    assert response.status_code == 400 and "empty" in response.text


def test_server_still_ready_after_bad_input(text_server):
    for body in ({"texts": [None]}, {"text": ""}):
        httpx.post(text_server + "/classify_text", json=body, timeout=30)
    assert httpx.get(text_server + "/readyz").status_code == 200




def test_client_classify_text_typed_results_and_errors(text_server, sentiment):
    from clients import AsyncClient, Client, RequestError

    texts = sentiment.test.texts[:4]
    with Client(text_server) as client:
        many = client.classify_text(texts=texts, model=NAME)
        one = client.classify_text(texts[0])  # one text classifier served: model may be left out
        with pytest.raises(RequestError, match="empty") as caught:
            client.classify_text("")
        assert caught.value.status == 400
        with pytest.raises(ValueError, match="either text"):
            client.classify_text("a", texts=["b"])
    assert [p.label for p in many.predictions][0] == one.predictions[0].label
    assert one.predictions[0].probabilities[one.predictions[0].label] == pytest.approx(one.predictions[0].score)
    assert many.model == NAME and len(many.predictions) == 4

    async def concurrently():
        async with AsyncClient(text_server) as client:
            return await asyncio.gather(*(client.classify_text(t) for t in texts))

    # Concurrent requests may be batched differently from the one 4-text request, and dynamic int8
    # scales activations per ORT call: probabilities move a little, so labels must agree wherever
    # the batched answer is not a near-tie (this 1-epoch model has some), probabilities everywhere.
    alone = [r.predictions[0] for r in asyncio.run(concurrently())]
    for single, batched in zip(alone, many.predictions):
        for label, probability in batched.probabilities.items():
            assert single.probabilities[label] == pytest.approx(probability, abs=0.05)
        if batched.score > 0.55:
            assert single.label == batched.label


def test_predict_command_on_texts_and_stdin(text_server, capsys, monkeypatch):
    import io

    from cli import main

    assert main(["predict", NAME, "a wonderful, moving film", "dull and lifeless", "--url", text_server]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split()[0] in ("rotten", "fresh") and "dull and lifeless" in lines[1]
    monkeypatch.setattr("sys.stdin", io.StringIO("a wonderful, moving film\n\ndull and lifeless\n"))
    assert main(["predict", NAME, "-", "--url", text_server, "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["text"] for a in answers] == ["a wonderful, moving film", "dull and lifeless"]
    assert [a["label"] for a in answers] == [line.split()[0] for line in lines]
