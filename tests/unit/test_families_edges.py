"""Edges of the families' processing that mutation testing (scripts/mutation.py) found unchecked:
IDX headers, PNG trailing bytes, the MNIST layout's crop, RGB shapes, error messages naming
their input, example feeds, text encoders with their own [PAD] id, the tune sampler's cuts and
a Generator driven by stand-in sessions (plain Python, no model)."""

from __future__ import annotations

import json
import struct
import threading
import zlib

import numpy as np
import pytest

from edgestack.errors import InputError
from edgestack.families import generic, image, text, tune


# --- image -----------------------------------------------------------------------------------

def idx_file(tmp_path, raw: bytes, name: str = "x.idx"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("raw", [b"\x00\x00\x08",                          # shorter than its magic number
                                 b"\x01\x00\x08\x01\x00\x00\x00\x01\x05",  # first byte not 0
                                 b"\x00\x01\x08\x01\x00\x00\x00\x01\x05",  # second byte not 0
                                 b"\x00\x00\x07\x01\x00\x00\x00\x01\x05"])  # no such element type
def test_read_idx_refuses_each_bad_magic_byte_on_its_own(tmp_path, raw):
    with pytest.raises(ValueError, match=r"is not an IDX file \(bad magic number\)"):
        image.read_idx(idx_file(tmp_path, raw))


def test_read_idx_sizes_dimensions_and_element_types(tmp_path):
    # a bare magic number (0 dimensions) is an IDX header that needs one more byte
    with pytest.raises(ValueError) as caught:
        image.read_idx(idx_file(tmp_path, b"\x00\x00\x08\x00"))
    assert str(caught.value).endswith(": IDX header says () (1 bytes), file has 0")
    # every dimension is a 4-byte big-endian number, its high byte included
    dims = (1, 2**24, 0)
    header = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in dims)
    assert image.read_idx(idx_file(tmp_path, header)).shape == dims
    # 4-byte elements: the size is elements x itemsize
    floats = b"\x00\x00\x0d\x01" + (2).to_bytes(4, "big") + struct.pack(">2f", 1.5, -2.0)
    assert image.read_idx(idx_file(tmp_path, floats)).tolist() == [1.5, -2.0]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def grey_png(rows: np.ndarray) -> bytes:
    height, width = rows.shape
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    raw = b"".join(b"\x00" + bytes(row) for row in rows.astype(np.uint8))
    return (image.PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def test_png_bytes_after_iend_are_ignored_as_pillow_does():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    decoded = image.decode_png(grey_png(pixels) + b"trailing bytes that are no chunk")
    assert np.array_equal(decoded, pixels)


def test_a_png_too_large_is_refused_by_its_header_with_the_default_name():
    header = (100_000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    data = image.PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"x") + png_chunk(b"IEND", b"")
    with pytest.raises(InputError) as caught:
        image.decode_png(data)
    assert str(caught.value).startswith("the image is 100000x100000 = 10,000,000,000 pixels; the limit is")


def test_mnist_style_crops_to_the_ink_alone():
    blob = np.zeros((12, 14), np.uint8)
    blob[3:7, 4:9] = 200
    assert np.array_equal(image.mnist_style(blob), image.mnist_style(blob[3:7, 4:9].copy()))
    empty = image.mnist_style(np.zeros((5, 5), np.uint8))
    assert empty.dtype == np.uint8 and not empty.any()


def test_mnist_style_keeps_a_one_pixel_line_one_pixel_thick():
    line = np.zeros((5, 40), np.uint8)
    line[2] = 255  # 40 x 1 -> 20 x 0.5: rounds to nothing, kept as one row
    frame = image.mnist_style(line)
    assert frame.any(axis=1).sum() == 1 and frame.any(axis=0).sum() == 20


def test_rgb_channels_first_is_told_by_the_last_axis():
    nchw = np.arange(45, dtype=np.float64).reshape(1, 3, 3, 5)  # height 3, width 5
    checked = image.check_pixels(nchw, 3, 5, channels=3)
    assert checked.shape == (1, 3, 5, 3) and np.array_equal(checked[0, :, :, 1], nchw[0, 1])


def test_rgb_model_input_is_float32_with_a_mean_per_channel():
    pre = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    x = image.to_model_input(np.full((1, 2, 2, 3), 255, np.float32), pre)
    assert x.dtype == np.float32 and x.shape == (1, 3, 2, 2)


def test_check_drawings_names_pixels_by_default():
    with pytest.raises(InputError, match=r"^no input: send `pixels` \(0\.\.255 intensities\) or upload images$"):
        image.check_drawings(None, 8, 8, None)


def test_a_bad_layout_is_refused_before_the_image_is_read():
    with pytest.raises(InputError, match="`layout` must be one of"):
        image.decode_image(grey_png(np.zeros((8, 8))), 8, 8, layout="squash")


def test_read_inputs_errors_name_their_file_and_idx_keeps_the_channel_count(tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 5), np.float32))
    (tmp_path / "broken.png").write_bytes(image.PNG_SIGNATURE + b"nothing more")
    idx = idx_file(tmp_path, b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (1, 8, 8)) + bytes(64),
                   "grey.idx")
    paths = [str(tmp_path / "wrong.npy"), str(tmp_path / "broken.png")]
    _, _, errors = image.read_inputs(paths, 8, 8)
    for path in paths:
        assert errors[path].startswith(path), errors[path]
    _, images, errors = image.read_inputs([str(idx)], 8, 8, channels=3)  # grey IDX for an RGB model
    assert images == [None] and "(RGB)" in errors[str(idx)]


# --- generic ---------------------------------------------------------------------------------

def test_an_unsigned_integer_feed_is_cast_to_a_float_input():
    checked = generic.check_feeds([{"name": "X", "dtype": "float32", "shape": [-1, 2]}],
                                  {"X": np.array([[1, 2]], np.uint8)}, batched=True)
    assert checked["X"].dtype == np.float32 and checked["X"].tolist() == [[1.0, 2.0]]


def test_example_integer_feeds_are_0_to_9():
    feeds = generic.example_feeds([{"name": "ids", "dtype": "int64", "shape": [-1, 500]}])
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].min() == 0 and feeds["ids"].max() == 9


def test_an_empty_text_output_row_becomes_an_empty_list():
    assert generic.as_lists({"labels": np.empty((1, 0), object)}, 0) == {"labels": []}


# --- text ------------------------------------------------------------------------------------

def word_tokenizer() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "a": 1, "b": 2, "[PAD]": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


def test_an_encoder_pads_with_its_own_pad_id_and_reads_json_text_with_leading_space():
    encoder = text.Encoder("\n  " + word_tokenizer(), max_length=5)
    assert encoder.max_length == 5 and encoder.pad_id == 3
    ids, mask, lengths, truncated = encoder(["a", "a b a"])
    assert ids.tolist() == [[1, 3, 3], [1, 2, 1]] and mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert lengths.tolist() == [1, 3] and truncated.tolist() == [False, False]


def test_text_answers_report_float32_probabilities():
    (answer,) = text.answers(np.array([[0.1, 0.9]]), [2], [False], ["neg", "pos"], k=1)
    assert answer["probabilities"] == {"neg": float(np.float32(0.1)), "pos": float(np.float32(0.9))}
    assert answer["score"] == float(np.float32(0.9)) and answer["top_k"][0]["probability"] == answer["score"]


# --- tune ------------------------------------------------------------------------------------

VOCAB = {ch: i for i, ch in enumerate("\nX:1abc")}


def sampling(prompt="X:1\n", **kw):
    return tune.check_sampling(prompt, vocabulary=VOCAB, default_prompt="X:1\n", **kw)


def test_check_sampling_messages_and_seeds():
    with pytest.raises(InputError) as caught:
        sampling("X:1\nabc", max_prompt_chars=3)
    assert str(caught.value) == "prompt has 7 characters; the limit is 3 (EDGESTACK_MAX_PROMPT_CHARS)"
    with pytest.raises(InputError) as caught:
        sampling("ABCDEFGHIJK")  # 11 unknown characters: the first 10 are shown
    assert "'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J' (it knows" in str(caught.value)
    with pytest.raises(InputError, match=r"^top_p must be in \(0, 1\], got '0\.5'$"):
        sampling(top_p="0.5")
    assert max(sampling().seed for _ in range(200)) >= 62  # drawn from 0..2**31-1


class Draws:
    """An rng stand-in whose random() returns the given values in turn."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_sample_index_never_draws_what_top_k_or_top_p_cut():
    assert tune.sample_index(np.array([0.0, 5.0]), Draws(0.0), 1.0, 1, 1.0) == 1  # the cut token has p = 0
    rng = np.random.default_rng(0)
    logits = np.random.default_rng(0).normal(size=300)  # (a size where partitioning at +k picks another k-th)
    best = set(np.argsort(-logits)[:5].tolist())
    assert {tune.sample_index(logits, rng, 1.0, 5, 1.0) for _ in range(300)} == best
    # two tokens of 0.5: the first alone reaches top_p 0.5
    assert {tune.sample_index(np.zeros(2), rng, 1.0, 0, 0.5) for _ in range(50)} == {0}
    # 40 equal tokens of 0.025, top_p 0.26: the first eleven (ties keep their order)
    assert {tune.sample_index(np.zeros(40), rng, 1.0, 0, 0.26) for _ in range(300)} <= set(range(11))
    # four levels of many tied tokens: the nucleus takes the first of the top level, in index order
    tied = np.random.default_rng(0).integers(0, 4, 150).astype(float)
    first = set(np.flatnonzero(tied == 3)[:7].tolist())
    assert {tune.sample_index(tied, rng, 1.0, 0, 0.1) for _ in range(300)} == first


def test_sample_index_takes_large_logits():
    assert tune.sample_index(np.array([0.0, 800.0]), Draws(0.3), 1.0, 0, 1.0) == 1
    assert tune.sample_index(np.array([800.0, 0.0]), Draws(0.3), 1.0, 0, 1.0) == 0


def test_a_finished_tune_loses_only_its_trailing_newlines():
    params = tune.SamplingParams("X:1\n", 100, 1.0, 0, 1.0, 7)
    assert tune.result(params, "a \n\n")["tune"] == "X:1\na "
    assert tune.result(params, "aX\n")["tune"] == "X:1\naX"


class Session:
    """An ONNX Runtime session stand-in: next-character logits that favour `favour`, and the
    state shapes and token dtype checked as the real graphs would."""

    def __init__(self, hidden: int, favour: int | None = None):
        self.hidden, self.favour, self.calls = hidden, favour, []

    def run(self, _outputs, feeds):
        self.calls.append(feeds)
        assert feeds["h"].shape == (1, 1, self.hidden) and feeds["c"].shape == (1, 1, self.hidden)
        tokens = feeds.get("tokens", feeds.get("token"))
        assert tokens.dtype == np.int64
        logits = np.zeros(len(VOCAB), np.float32)
        if self.favour is not None:
            logits[self.favour] = 50.0
        return (logits[None, None] if "tokens" in feeds else logits[None]), feeds["h"], feeds["c"]


def generator(favour=None):
    chars = list(VOCAB)
    return tune.Generator(Session(4, favour), Session(4, favour), chars,
                          {"hidden_size": 4, "end_of_tune": "\n\n", "default_prompt": "X:1\n"})


def test_a_generator_repeats_a_tune_from_its_seed_and_uses_plain_sampling_by_default():
    gen = generator()
    first, again = gen.generate(seed=11, max_length=40), gen.generate(seed=11, max_length=40)
    assert first == again and first["seed"] == 11
    assert first["params"]["temperature"] == 1.0 and first["params"]["top_k"] == 0
    params = gen.check()
    assert (params.prompt, params.temperature, params.top_k, params.top_p) == ("X:1\n", 1.0, 0, 1.0)
    with pytest.raises(InputError, match="EDGESTACK_MAX_PROMPT_CHARS"):
        gen.check("X:1\nabc", max_prompt_chars=3)


def test_a_generator_stops_when_asked():
    gen, stop = generator(favour=VOCAB["a"]), threading.Event()
    pieces = gen.pieces(gen.check(max_length=10, seed=1), stop)
    assert next(pieces) == "a"
    stop.set()
    assert list(pieces) == []



@pytest.mark.parametrize("data", [b"P2 2 1 255\n12 300", b"P2 2 1 255\n12 -5", b"P5 2 1 100\n\x0c\xc8"])
def test_pgm_values_above_their_maxval_are_refused_not_wrapped(data):
    with pytest.raises(ValueError, match=r"^PGM/PPM values must be 0\.\.(255|100) \(its maxval\)$"):
        image.decode_pnm(data)


def test_a_pgm_comment_may_follow_the_magic_number():
    assert image.decode_pnm(b"P2#made by hand\n2 1 255\n7 9").tolist() == [[7, 9]]
