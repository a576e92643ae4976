"""Malformed requests against a real server: each gets its 4xx in the one error shape, and the
server keeps serving.

The server serves digits-cnn and a tiny folk-lstm, so the image, tune and v2 paths are
reached past the model lookup. Every case asserts the status, `{"error": "..."}` as
application/json with the words that say what was wrong, and that /readyz still answers 200.
Caller mistakes that were 500s before (serving/inputs.py, edgestack/v2protocol.py): a
multipart body without a boundary, a text field for `images`, JSON nested 100,000 deep.
"""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from tests.integration.test_security import bomb_png

BODY_LIMIT = 1024 * 1024
ENDPOINTS = ["/classify", "/classify_image", "/classify_text", "/generate", "/generate_stream", "/render_midi",
             "/models"]
DEEP = "[" * 100_000 + "]" * 100_000
DIGIT = [[0] * 28] * 28
INFER = "/v2/models/digits-cnn/infer"
BOMB = bomb_png()  # 1-bit 10000x9999: 12 KB that decode to 100 megapixels
FOLK_INFER = "/v2/models/folk-lstm/infer"


@pytest.fixture(scope="module")
def url(digits_folk_server):
    """The session's digits-cnn + folk-lstm server (tests/conftest.py: LIMITS, a 1 MiB body limit)."""
    return digits_folk_server


def json_body(text: str | bytes) -> dict:
    return {"content": text, "headers": {"content-type": "application/json"}}


def v2_tensor(**overrides) -> dict:
    return {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.0] * 784,
                        **overrides}]}


# (case, method, path, httpx keyword arguments, status, words in `error`)
CORPUS = [
    # a multipart body without a boundary: was 500 on every endpoint
    *[(f"no multipart boundary {path}", "POST", path,
       {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "boundary")
      for path in ENDPOINTS],
    ("multipart boundary but no parts", "POST", "/classify",
     {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400,
     "cannot read the multipart/form-data body"),
    # `images` that is not a file: was 500 (BentoML took the text for a URL to download)
    ("images a text field", "POST", "/classify_image", {"files": {"images": (None, "abc")}}, 400,
     "must be a file upload"),
    ("images a URL", "POST", "/classify_image", {"files": {"images": (None, "http://127.0.0.1:1/x.png")}}, 400,
     "must be a file upload"),
    ("images form-urlencoded", "POST", "/classify_image", {"data": {"images": "abc"}}, 415,
     "takes multipart/form-data"),
    ("images as JSON paths", "POST", "/classify_image", {"json": {"images": ["/etc/hostname"]}}, 415,
     "takes multipart/form-data"),
    ("images missing", "POST", "/classify_image", {"files": {"model": (None, "digits-cnn")}}, 400, "images"),
    ("images not an image", "POST", "/classify_image", {"files": {"images": ("x.png", b"GIF89a?", "image/png")}}, 400,
     "not an image"),
    # nesting: JSON 100,000 deep (was 500 on v2), a form field as deep
    ("deep JSON body", "POST", "/classify", json_body('{"pixels": ' + DEEP + "}"), 400, "recursion"),
    ("deep JSON form field", "POST", "/classify", {"files": {"pixels": (None, DEEP)}}, 400, "nests too deeply"),
    ("pixels 70 deep", "POST", "/classify", {"json": {"pixels": json.loads("[" * 70 + "0" + "]" * 70)}}, 400,
     "rectangular nested list"),
    # wrong content types and encodings
    ("pickle refused", "POST", "/classify", {"content": b"\x80\x04N.", "headers": {
        "content-type": "application/vnd.bentoml+pickle"}}, 415, "not allowed"),
    ("form-urlencoded", "POST", "/classify", {"data": {"pixels": "1"}}, 400, "must have shape"),
    ("text/plain garbage", "POST", "/generate", {"content": b"seed=7", "headers": {"content-type": "text/plain"}}, 400,
     "Invalid JSON"),
    ("latin-1 JSON", "POST", "/generate", json_body('{"prompt": "X:1\nT:Caf\xe9"}'.encode("latin-1")), 400,
     "Invalid JSON"),
    ("UTF-16 JSON", "POST", "/generate", json_body('{"seed": 7}'.encode("utf-16")), 400, "Invalid JSON"),
    ("gzip body, not declared", "POST", "/classify", json_body(gzip.compress(b'{"pixels": 0}')), 400,
     "Invalid JSON"),
    ("gzip body, declared", "POST", "/classify", {"content": gzip.compress(b'{"pixels": 0}'), "headers": {
        "content-type": "application/json", "content-encoding": "gzip"}}, 400, "Invalid JSON"),
    ("lone surrogate in JSON", "POST", "/render_midi", json_body(r'{"abc": "X:1\nT:\ud800\nK:D\nDEF|"}'), 400,
     "Invalid JSON"),
    ("lone surrogate in a form field", "POST", "/render_midi",
     {"files": {"abc": (None, r'"X:1\nT:\ud800\nM:4/4\nL:1/8\nK:D\nDEF|"')}}, 400, "lone surrogate"),
    ("lone surrogate prompt", "POST", "/generate", {"files": {"prompt": (None, r'"X:1\nT:\ud800"')}}, 400,
     "lone surrogate"),
    # fields of the wrong type, absurd numbers
    ("top_k not a number", "POST", "/classify", {"json": {"pixels": DIGIT, "top_k": "three"}}, 400, "top_k"),
    ("top_k 10**40", "POST", "/classify", {"json": {"pixels": DIGIT, "top_k": 10**40}}, 400, "top_k"),
    ("top_k 1e400", "POST", "/classify", json_body('{"pixels": [[0]], "top_k": 1e400}'), 400, "top_k"),
    ("pixels 1e400", "POST", "/classify", json_body('{"pixels": [' + ",".join(["[" + ",".join(["1e400"] * 28) + "]"]
                                                                                * 28) + "]}"), 400, "infinity"),
    ("pixels -1e308", "POST", "/classify", {"json": {"pixels": [[-1e308] * 28] * 28}}, 400, "0..255"),
    ("seed 2**80", "POST", "/generate", {"json": {"seed": 2**80}}, 400, "seed"),
    ("seed negative", "POST", "/generate", {"json": {"seed": -1}}, 400, "seed"),
    ("max_length 10**12", "POST", "/generate", {"json": {"max_length": 10**12}}, 400, "max_length"),
    ("temperature 1e308", "POST", "/generate_stream", {"json": {"temperature": 1e308}}, 400, "temperature"),
    ("temperature NaN", "POST", "/generate", json_body('{"temperature": NaN}'), 400, "temperature"),
    ("top_p 0", "POST", "/render_midi", {"json": {"top_p": 0}}, 400, "top_p"),
    ("texts without a text model", "POST", "/classify_text", {"json": {"texts": ["a"]}}, 400, "say which model"),
    ("unknown model", "POST", "/generate", {"json": {"model": "nope"}}, 404, "unknown model 'nope'"),
    # routes and methods
    ("unknown route", "GET", "/nope", {}, 404, "GET /nope: Not Found"),
    ("unknown route POST", "POST", "/v2/nope", {"json": {}}, 404, "POST /v2/nope: Not Found"),
    ("GET on an endpoint", "GET", "/classify", {}, 405, "GET /classify: Method Not Allowed"),
    ("DELETE on readyz", "DELETE", "/readyz", {}, 405, "Method Not Allowed"),
    ("body over the limit", "POST", "/classify", json_body(b" " * (BODY_LIMIT + 1)), 413, "exceeds the limit"),
    # v2
    ("v2 deep JSON", "POST", INFER, json_body(DEEP), 400, "nests too deeply"),
    ("v2 deep JSON in inputs", "POST", INFER, json_body('{"inputs": ' + DEEP + "}"), 400, "nests too deeply"),
    ("v2 data 70 deep", "POST", INFER, {"json": v2_tensor(data=json.loads("[" * 70 + "0" + "]" * 70))}, 400, "data"),
    ("v2 absurd shape", "POST", INFER, {"json": v2_tensor(shape=[10**12, 10**12, 28, 28])}, 400, "shape"),
    ("v2 empty but absurd shape", "POST", INFER, {"json": v2_tensor(shape=[0, 10**30], data=[])}, 400, "shape"),
    ("v2 100 dimensions", "POST", INFER, {"json": v2_tensor(shape=[1] * 100, data=[0.0])}, 400, "shape"),
    ("v2 binary, absurd shape", "POST", INFER, {"content": json.dumps(v2_tensor(
        shape=[0, 10**30], data=None, parameters={"binary_data_size": 0})).replace(', "data": null', "").encode()},
     400, "shape"),
    ("v2 BYTES for FP32", "POST", INFER, json_body(json.dumps(v2_tensor(datatype="BYTES", shape=[1], data=["\ud800"]))),
     400, "lone surrogate"),
    ("v2 shape 1e400", "POST", INFER, json_body(json.dumps(v2_tensor()).replace("[1, 1, 28, 28]", "[1e400]")), 400,
     "shape"),
    ("v2 header length 10**30", "POST", INFER, {"content": b"{}", "headers": {
        "inference-header-content-length": str(10**30)}}, 400, "but the body has"),
    ("v2 header length negative", "POST", INFER, {"content": b"{}", "headers": {
        "inference-header-content-length": "-5"}}, 400, "but the body has"),
    ("v2 latin-1", "POST", INFER, {"content": '{"id": "\xe9"}'.encode("latin-1")}, 400, "malformed JSON"),
    ("v2 form data", "POST", INFER, {"data": {"inputs": "[]"}}, 400, "malformed JSON"),
    ("v2 multipart, no boundary", "POST", INFER, {"content": b"x", "headers": {
        "content-type": "multipart/form-data"}}, 400, "malformed JSON"),
    ("v2 NaN data", "POST", INFER, json_body(json.dumps(v2_tensor()).replace("0.0", "NaN", 1)), 400, "NaN"),
    ("v2 token out of range", "POST", FOLK_INFER, {"json": {"inputs": [
        {"name": "token", "datatype": "INT64", "shape": [1], "data": [2**62]},
        {"name": "h", "datatype": "FP32", "shape": [1, 1, 48], "data": [0.0] * 48},
        {"name": "c", "datatype": "FP32", "shape": [1, 1, 48], "data": [0.0] * 48}]}}, 400, "token ids must be"),
    ("v2 classification 10**30", "POST", INFER, {"json": {**v2_tensor(), "outputs": [
        {"name": "logits", "parameters": {"classification": 10**30}}]}}, 200, None),
    ("v2 bad gzip", "POST", INFER, {"content": b"\x1f\x8b junk", "headers": {"content-encoding": "gzip"}}, 400,
     "not valid gzip"),
    ("v2 unknown model", "GET", "/v2/models/nope", {}, 404, "unknown model 'nope'"),
    ("v2 GET infer", "GET", INFER, {}, 405, "Method Not Allowed"),
    # parameters, deadlines and the repository and statistics extensions (docs/operating.md)
    ("v2 parameters a list", "POST", INFER, {"json": {**v2_tensor(), "parameters": [1]}}, 400, "`parameters`"),
    ("v2 timeout a string", "POST", INFER, {"json": {**v2_tensor(), "parameters": {"timeout": "soon"}}}, 400,
     "parameters.timeout"),
    ("v2 timeout 1e300", "POST", INFER, {"json": {**v2_tensor(), "parameters": {"timeout": 1e300}}}, 400,
     "parameters.timeout"),
    ("deadline header NaN", "POST", "/classify", {"json": {"pixels": DIGIT}, "headers": {
        "x-request-timeout-ms": "nan"}}, 400, "X-Request-Timeout-Ms"),
    # model control is off unless EDGESTACK_MODEL_CONTROL=1 (with keys): load and unload are refused
    # (issue 20; their bodies are checked in test_hardening.py, on a server with model control on)
    ("load, model control off", "POST", "/v2/repository/models/digits-cnn/load", {"json": {}}, 403,
     "model control is off"),
    ("unload, model control off", "POST", "/v2/repository/models/digits-cnn/unload", {}, 403, "model control is off"),
    ("unload, text/plain", "POST", "/v2/repository/models/digits-cnn/unload", {
        "content": b"", "headers": {"content-type": "text/plain"}}, 403, "model control is off"),
    # issue 20: decompression bombs, BYTES tensors larger than the item limit
    ("image bomb", "POST", "/classify_image", {"files": {"images": ("bomb.png", BOMB, "image/png")},
                                               "data": {"model": "digits-cnn"}}, 413, "pixels than allowed; the limit is"),
    ("v2 BYTES shape over the item limit", "POST", INFER, {"json": {"inputs": [
        {"name": "images", "datatype": "BYTES", "shape": [10**6], "data": []}]}}, 413, "BYTES elements"),
    ("stats, unknown model", "GET", "/v2/models/nope/stats", {}, 404, "unknown model 'nope'"),
    ("stats, unknown version", "GET", "/v2/models/digits-cnn/versions/99/stats", {}, 404, "no version '99'"),
    ("index, GET", "GET", "/v2/repository/index", {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("case,method,path,kwargs,status,words", CORPUS, ids=[c[0] for c in CORPUS])
def test_a_malformed_request_gets_its_4xx_in_the_one_shape(url, case, method, path, kwargs, status, words):
    response = httpx.request(method, url + path, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    if words is not None:
        assert response.headers["content-type"] == "application/json", response.headers
        body = response.json()
        assert isinstance(body, dict) and isinstance(body["error"], str), body
        assert words in body["error"], body
    assert httpx.get(url + "/readyz").status_code == 200
