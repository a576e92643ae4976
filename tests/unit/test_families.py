"""The numpy-only family processing every consumer shares (edgestack/families/common.py, tune.py,
text.py): softmax and top-k, the tune sampler and its character loop, the text checks, the
tokenizer feeds and the answers. Real ONNX Runtime sessions on tiny graphs written here (a
next-character table for the tune generator, a bag-of-tokens scorer for the classifier) and a
real `tokenizers` tokenizer stand in for trained models, so every rule is checked in the unit
lane, where a planted bug is caught in seconds (scripts/mutation.py)."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgestack.families import common, text, tune
from edgestack.families.common import InputError


def session(graph: onnx.GraphProto) -> ort.InferenceSession:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------ common

def test_softmax_rows_sum_to_one_stay_finite_and_keep_their_order():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0], [0.0, 0.0, 0.0]])
    p = common.softmax(logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    np.testing.assert_allclose(p[1], [0.5, 0.5, 0.0], atol=1e-12)  # no overflow at 1000
    np.testing.assert_allclose(p[2], [1 / 3] * 3)
    assert common.softmax(np.array([[5.0, 1.0]]))[0].argmax() == 0


@pytest.mark.parametrize("value, ok", [(1, True), (3, True), (np.int64(2), True), (0, False), (4, False),
                                       (-1, False), (True, False), (2.0, False), ("2", False), (None, False)])
def test_top_k_must_be_a_whole_number_within_the_labels(value, ok):
    labels = ["a", "b", "c"]
    if ok:
        assert common.check_top_k(value, labels) == int(value) and type(common.check_top_k(value, labels)) is int
    else:
        with pytest.raises(InputError, match=r"top_k must be between 1 and 3, got") as caught:
            common.check_top_k(value, labels)
        assert caught.value.status == 400


def test_top_k_lists_the_likeliest_first_and_ties_in_label_order():
    row = np.array([0.1, 0.4, 0.1, 0.4])
    labels = ["w", "x", "y", "z"]
    assert common.top_k(row, labels, 3) == [{"label": "x", "index": 1, "probability": pytest.approx(0.4)},
                                            {"label": "z", "index": 3, "probability": pytest.approx(0.4)},
                                            {"label": "w", "index": 0, "probability": pytest.approx(0.1)}]
    assert common.top_k(row, labels, 1, with_index=False) == [{"label": "x", "probability": pytest.approx(0.4)}]
    assert all(isinstance(e["probability"], float) and isinstance(e["index"], int) for e in common.top_k(row, labels, 4))


def test_input_errors_carry_their_status_and_the_file_checksum_is_sha256(tmp_path):
    assert InputError("x").status == 400 and InputError("y", 413).status == 413 and str(InputError("z")) == "z"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several read chunks and a remainder
    (tmp_path / "f").write_bytes(data)
    assert common.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ tune: the sampling parameters

VOCAB = {ch: i for i, ch in enumerate("X:1\nab|")}


def check(**kw):
    limits = {k: kw.pop(k) for k in ("max_prompt_chars", "max_new_chars") if k in kw}
    return tune.check_sampling(**kw, vocabulary=VOCAB, default_prompt="X:1\n", **limits)


def test_sampling_defaults_and_a_chosen_seed_are_kept():
    params = check(seed=7)
    assert params == tune.SamplingParams("X:1\n", tune.DEFAULT_MAX_LENGTH, 1.0, 0, 1.0, 7)
    assert check(max_new_chars=300).max_length == 300 and check(max_new_chars=5000).max_length == 1000
    assert check(prompt="ab", max_length=1, temperature=5, top_k=7, top_p=1, seed=0) == \
        tune.SamplingParams("ab", 1, 5.0, 7, 1.0, 0)
    assert isinstance(check(temperature=2).temperature, float) and isinstance(check(top_p=1).top_p, float)
    seeds = {check().seed for _ in range(20)}  # no seed: a random one, returned to repeat the tune
    assert len(seeds) > 1 and all(0 <= s < 2**31 for s in seeds)
    assert check(seed=2**63 - 1).seed == 2**63 - 1


@pytest.mark.parametrize("kw, words, status", [
    ({"prompt": 5}, "prompt must be text, got int", 400),
    ({"prompt": "ab" * 3, "max_prompt_chars": 5}, "prompt has 6 characters; the limit is 5", 413),
    ({"prompt": "X:1\nZé"}, "outside the model's vocabulary: 'Z', 'é' (it knows 7 characters", 400),
    ({"max_length": 0}, "max_length must be a whole number >= 1, got 0", 400),
    ({"max_length": 11, "max_new_chars": 10}, "max_length must be between 1 and 10 (EDGESTACK_MAX_NEW_CHARS), got 11",
     400),
    ({"max_length": 2.0}, "max_length must be a whole number, got 2.0", 400),
    ({"max_length": True}, "max_length must be a whole number, got True", 400),
    ({"temperature": 0}, "temperature must be a number in (0, 5], got 0", 400),
    ({"temperature": 5.01}, "temperature must be a number in (0, 5]", 400),
    ({"temperature": float("nan")}, "temperature must be a number", 400),
    ({"temperature": True}, "temperature must be a number", 400),
    ({"temperature": "1"}, "temperature must be a number", 400),
    ({"top_k": -1}, "top_k must be a whole number from 0 (off) to 7, got -1", 400),
    ({"top_k": 8}, "top_k must be a whole number from 0 (off) to 7", 400),
    ({"top_k": 1.0}, "top_k must be a whole number", 400),
    ({"top_k": False}, "top_k must be a whole number", 400),
    ({"top_p": 0}, "top_p must be in (0, 1], got 0", 400),
    ({"top_p": 1.01}, "top_p must be in (0, 1]", 400),
    ({"top_p": float("inf")}, "top_p must be in (0, 1]", 400),
    ({"top_p": True}, "top_p must be in (0, 1]", 400),
    ({"seed": -1}, "seed must be a whole number from 0 to 2**63-1, got -1", 400),
    ({"seed": 2**63}, "seed must be a whole number from 0 to 2**63-1", 400),
    ({"seed": 1.5}, "seed must be a whole number", 400),
    ({"seed": True}, "seed must be a whole number", 400),
])
def test_every_sampling_mistake_names_its_parameter_and_range(kw, words, status):
    with pytest.raises(InputError) as caught:
        check(**kw)
    assert words in str(caught.value) and caught.value.status == status


def test_the_limits_allow_their_own_value():
    assert check(prompt="ab" * 3, max_prompt_chars=6).prompt == "ababab"
    assert check(max_length=10, max_new_chars=10).max_length == 10


# ------------------------------------------------------------------ tune: the sampler

def test_sampling_follows_the_softmax_of_the_logits_over_the_temperature():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    rng = np.random.default_rng(0)
    draws = np.bincount([tune.sample_index(logits, rng, 1.0, 0, 1.0) for _ in range(6000)], minlength=4) / 6000
    np.testing.assert_allclose(draws, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    hot = np.bincount([tune.sample_index(logits, rng, 5.0, 0, 1.0) for _ in range(6000)], minlength=4) / 6000
    want = np.exp(logits / 5) / np.exp(logits / 5).sum()  # flatter
    np.testing.assert_allclose(hot, want, atol=0.03)
    cold = {tune.sample_index(logits, rng, 0.01, 0, 1.0) for _ in range(200)}
    assert cold == {3}


def test_top_k_and_top_p_cut_the_candidates():
    logits = np.log(np.array([0.05, 0.15, 0.3, 0.5]))
    rng = np.random.default_rng(1)
    assert {tune.sample_index(logits, rng, 1.0, 1, 1.0) for _ in range(100)} == {3}        # greedy
    assert {tune.sample_index(logits, rng, 1.0, 2, 1.0) for _ in range(300)} == {2, 3}     # the two likeliest
    assert {tune.sample_index(logits, rng, 1.0, 4, 1.0) for _ in range(500)} == {0, 1, 2, 3}  # k = all: off
    # the nucleus: the smallest set whose mass reaches top_p (0.5 alone reaches 0.45; 0.5 + 0.3 reach 0.7)
    assert {tune.sample_index(logits, rng, 1.0, 0, 0.45) for _ in range(100)} == {3}
    assert {tune.sample_index(logits, rng, 1.0, 0, 0.7) for _ in range(300)} == {2, 3}
    assert {tune.sample_index(logits, rng, 1.0, 0, 0.81) for _ in range(500)} == {1, 2, 3}
    shares = np.bincount([tune.sample_index(logits, rng, 1.0, 0, 0.7) for _ in range(6000)], minlength=4) / 6000
    np.testing.assert_allclose(shares, [0, 0, 0.3 / 0.8, 0.5 / 0.8], atol=0.03)  # renormalised within the nucleus
    shares = np.bincount([tune.sample_index(logits, rng, 1.0, 2, 1.0) for _ in range(6000)], minlength=4) / 6000
    np.testing.assert_allclose(shares, [0, 0, 0.3 / 0.8, 0.5 / 0.8], atol=0.03)


def test_the_same_seed_draws_the_same_and_a_draw_is_always_a_valid_index():
    logits = np.random.default_rng(3).standard_normal(50)
    a = [tune.sample_index(logits, np.random.default_rng(9), 0.8, 10, 0.9) for _ in range(5)]
    b = [tune.sample_index(logits, np.random.default_rng(9), 0.8, 10, 0.9) for _ in range(5)]
    assert a == b and all(isinstance(i, int) for i in a)

    class Top:  # a generator whose next number is the largest it can give
        def random(self):
            return np.nextafter(1.0, 0.0)

    assert tune.sample_index(np.array([0.0, 0.0, 50.0]), Top(), 1.0, 0, 1.0) == 2  # the top of the range: the last


def test_the_prompt_is_read_after_an_end_of_tune():
    ids = tune.prompt_ids("ab", VOCAB, "\n\n")
    assert ids.dtype == np.int64 and ids.shape == (1, 4) and ids.tolist() == [[3, 3, 4, 5]]


# ------------------------------------------------------------------ tune: the character loop

CHARS = list("X:1\nab|")


def chain(successors: dict[str, str]):
    """read_prompt/step functions whose next character is always successors[last character]."""
    def logits_after(ch: str) -> np.ndarray:
        out = np.full(len(CHARS), -50.0)
        out[CHARS.index(successors[ch])] = 50.0
        return out

    calls = []

    def read_prompt(text_: str):
        calls.append(("prompt", text_))
        return logits_after(text_[-1]), np.zeros(1), np.zeros(1)

    def step(token: int, h, c):
        calls.append(("step", token))
        return logits_after(CHARS[token]), h + 1, c

    return read_prompt, step, calls


def test_pieces_stop_at_max_length_at_the_end_of_a_tune_or_when_told():
    read_prompt, step, calls = chain({"\n": "a", "a": "b", "b": "|", "|": "a"})
    params = tune.SamplingParams("X:1\n", 5, 1.0, 0, 1.0, 1)
    assert list(tune.pieces(params, read_prompt, step, CHARS, "\n\n")) == list("ab|ab")
    assert calls[0] == ("prompt", "X:1\n") and [c for c, _ in calls].count("step") == 5
    # a tune ends at a blank line: its first newline is sent, the second (the blank line) is not
    read_prompt, step, _ = chain({"a": "b", "b": "\n", "\n": "\n"})
    params = tune.SamplingParams("X:1\na", 50, 1.0, 0, 1.0, 1)
    generated = "".join(tune.pieces(params, read_prompt, step, CHARS, "\n\n"))
    assert generated == "b\n" and tune.result(params, generated)["tune"] == "X:1\nab"
    stop = threading.Event()
    read_prompt, step, _ = chain({"\n": "a", "a": "b", "b": "|", "|": "a"})
    out = []
    for piece in tune.pieces(tune.SamplingParams("X:1\n", 100, 1.0, 0, 1.0, 1), read_prompt, step, CHARS, "\n\n", stop):
        out.append(piece)
        if len(out) == 3:
            stop.set()
    assert out == list("ab|")


def test_a_result_says_how_the_tune_stopped_and_how_to_have_it_again():
    params = tune.SamplingParams("X:1\n", 4, 0.9, 3, 0.8, 11)
    full = tune.result(params, "ab|a")
    assert full == {"tune": "X:1\nab|a", "generated_chars": 4, "stop_reason": "max_length", "seed": 11,
                    "params": {"max_length": 4, "temperature": 0.9, "top_k": 3, "top_p": 0.8, "seed": 11}}
    short = tune.result(params, "ab\n")
    assert short["stop_reason"] == "end_of_tune" and short["tune"] == "X:1\nab" and short["generated_chars"] == 3


def test_graph_files_name_the_step_and_prompt_graphs():
    manifest = {"variants": {"int8": {"file": "step.int8.onnx", "prompt_file": "prompt.int8.onnx"}}}
    assert tune.graph_files(manifest, "int8") == {"step": "step.int8.onnx", "prompt": "prompt.int8.onnx"}


def next_character_graphs(successors: dict[str, str], hidden: int = 3):
    """(step, prompt) ORT sessions of a 'model' whose logits favour successors[character]."""
    table = np.full((len(CHARS), len(CHARS)), -20.0, np.float32)
    for ch, nxt in successors.items():
        table[CHARS.index(ch), CHARS.index(nxt)] = 20.0
    weights = numpy_helper.from_array(table, "table")
    one = numpy_helper.from_array(np.ones((1, 1, hidden), np.float32), "one")
    state = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "b", hidden]) for n in ("h", "c")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "b", hidden]) for n in ("h_out", "c_out")]
    step = helper.make_graph(
        [helper.make_node("Gather", ["table", "token"], ["logits"]), helper.make_node("Add", ["h", "one"], ["h_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])], "step",
        [helper.make_tensor_value_info("token", TensorProto.INT64, ["b"]), *state],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", len(CHARS)]), *outs], [weights, one])
    prompt = helper.make_graph(
        [helper.make_node("Gather", ["table", "tokens"], ["logits"]), helper.make_node("Identity", ["h"], ["h_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])], "prompt",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "t"]), *state],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "t", len(CHARS)]), *outs], [weights])
    return session(step), session(prompt)


def test_the_generator_runs_the_prompt_graph_once_then_the_step_graph_per_character():
    step, prompt = next_character_graphs({"X": ":", ":": "1", "1": "\n", "\n": "a", "a": "b", "b": "|", "|": "a"})
    generator = tune.Generator(step, prompt, CHARS, {"hidden_size": 3, "end_of_tune": "\n\n", "default_prompt": "X:1\n"})
    h, c = generator.zero_state(2)
    assert h.shape == c.shape == (1, 2, 3) and h.dtype == np.float32 and not h.any() and h is not c
    logits, h, c = generator.read_prompt("X:1\na")
    assert logits.shape == (len(CHARS),) and CHARS[int(logits.argmax())] == "b"  # the last character's logits
    logits, h2, _ = generator.step(CHARS.index("b"), h, c)
    assert CHARS[int(logits.argmax())] == "|" and (h2 == h + 1).all()
    out = generator.generate(seed=4, max_length=6, top_k=1)
    assert out["tune"] == "X:1\nab|ab|" and out["stop_reason"] == "max_length" and out["seed"] == 4
    assert generator.generate("ab", seed=4, max_length=2, top_k=1)["tune"] == "ab|a"
    with pytest.raises(InputError, match="vocabulary"):
        generator.generate("Q", seed=1)
    assert generator.check(max_length=3, max_new_chars=3).max_length == 3


# ------------------------------------------------------------------ text

@pytest.mark.parametrize("items, kw, words, status", [
    ("a text", {}, "`texts` must be a list of strings, got str", 400),
    ([], {}, "`texts` is an empty list: send at least one text", 400),
    (["a", "b", "c"], {"max_items": 2}, "3 texts in one request; the limit is 2", 413),
    (["ok", 3], {}, "texts[1] is int, not a string", 400),
    (["ok", " \t\n"], {}, "texts[1] is empty (or only whitespace)", 400),
    (["ok", "abcdef"], {"max_chars": 5}, "texts[1] has 6 characters; the limit is 5 (EDGESTACK_MAX_TEXT_CHARS)", 413),
    ([""], {"what": "text"}, "text is empty", 400),
    ([5], {"what": "text"}, "text is int, not a string", 400),
])
def test_text_mistakes_say_which_text_and_what(items, kw, words, status):
    with pytest.raises(InputError) as caught:
        text.check_texts(items, **kw)
    assert words in str(caught.value) and caught.value.status == status


def test_texts_within_the_limits_are_passed_on():
    items = ["one", "two"]
    assert text.check_texts(items, max_items=2, max_chars=3) is items


def tokenizer_json(with_pad: bool = True) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate((["[PAD]"] if with_pad else []) + ["[UNK]", "a", "good", "bad", "film", "very"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


def test_the_encoder_pads_to_the_longest_text_and_reports_truncation(tmp_path):
    encoder = text.Encoder(tokenizer_json(), 4)
    ids, mask, lengths, truncated = encoder(["good film", "very very very bad film", "bad"])
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == (3, 4)  # the longest, cut to max length 4
    assert ids.tolist() == [[3, 5, 0, 0], [6, 6, 6, 4], [4, 0, 0, 0]] and encoder.pad_id == 0
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1] and truncated.tolist() == [False, True, False]
    short = text.Encoder(tokenizer_json(), 8)(["good film"])
    assert short[0].shape == (1, 2)  # never padded to max length
    (tmp_path / "tokenizer.json").write_text(tokenizer_json())  # a path works as well as the JSON text
    assert text.Encoder(tmp_path / "tokenizer.json", 4)(["good film"])[0].tolist() == [[3, 5]]
    without = text.Encoder(tokenizer_json(with_pad=False), 4)  # no [PAD] token: pads with id 0
    assert without.pad_id == 0 and without(["good film", "bad"])[0].tolist() == [[2, 4], [3, 0]]


def bag_of_tokens_classifier(with_type_ids: bool = False) -> ort.InferenceSession:
    """logits[n] = sum over the unmasked tokens of a score per id: ('bad' -> class 0, 'good' -> 1)."""
    table = np.zeros((7, 2), np.float32)
    table[4] = [3.0, 0.0]   # bad
    table[3] = [0.0, 3.0]   # good
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["scores"]),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "axis"], ["mask3"]),
             helper.make_node("Mul", ["scores", "mask3"], ["kept"]),
             helper.make_node("ReduceSum", ["kept", "one"], ["logits"], keepdims=0)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["n", "t"]) for n in ("input_ids", "attention_mask")]
    if with_type_ids:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["n", "t"]))
        nodes.append(helper.make_node("Identity", ["token_type_ids"], ["types"]))
    graph = helper.make_graph(nodes, "bag", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([2], np.int64), "axis"),
                               numpy_helper.from_array(np.array([1], np.int64), "one")])
    if with_type_ids:
        graph.output.append(helper.make_tensor_value_info("types", TensorProto.INT64, ["n", "t"]))
    return session(graph)


def test_the_classifier_feeds_the_graph_and_answers_probabilities():
    encoder = text.Encoder(tokenizer_json(), 4)
    classifier = text.Classifier(bag_of_tokens_classifier(), encoder, ["rotten", "fresh"])
    probs, lengths, truncated = classifier.run(["good film", "bad bad", "very very very good good"])
    assert probs.dtype == np.float64
    np.testing.assert_allclose(probs, common.softmax(np.array([[0.0, 3.0], [6.0, 0.0], [0.0, 3.0]])), rtol=1e-6)
    assert lengths.tolist() == [2, 2, 4] and truncated.tolist() == [False, False, True]  # the second "good" cut off
    with_types = text.Classifier(bag_of_tokens_classifier(with_type_ids=True), encoder, ["rotten", "fresh"])
    assert with_types.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    np.testing.assert_allclose(with_types.run(["good film"])[0], probs[:1], rtol=1e-6)


def test_a_graph_with_inputs_a_text_model_does_not_have_is_refused():
    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["out"])], "g",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match=r"unexpected text model inputs \['pixels'\]"):
        text.Classifier(session(graph), text.Encoder(tokenizer_json(), 4), ["a", "b"])


def test_answers_give_label_score_every_probability_and_the_top_k():
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    out = text.answers(probs, np.array([3, 7]), np.array([False, True]), ["rotten", "fresh"], k=1)
    assert out[0] == {"label": "fresh", "score": pytest.approx(0.8), "probabilities": {"rotten": pytest.approx(0.2),
                      "fresh": pytest.approx(0.8)}, "top_k": [{"label": "fresh", "probability": pytest.approx(0.8)}],
                      "tokens": 3, "truncated": False}
    assert out[1]["label"] == "rotten" and out[1]["tokens"] == 7 and out[1]["truncated"] is True
    assert "top_k" not in text.answers(probs, [1, 1], [False, False], ["rotten", "fresh"])[0]
    assert all(type(a["tokens"]) is int and type(a["score"]) is float for a in out)


# ------------------------------------------------------------------ image: what every image consumer shares

def test_idx_files_are_known_by_their_names():
    from edgestack.families import image

    for name in ("t10k-images-idx3-ubyte", "train-labels-idx1-ubyte.gz", "x.idx", "y.idx.gz"):
        assert image.is_idx(name), name
    for name in ("digits.png", "idx.txt", "ubyte.npy", "my-images.gz"):
        assert not image.is_idx(name), name


def test_the_model_size_and_the_answers_of_an_image_classifier():
    from edgestack.families import image

    assert image.model_size({"height": 28, "width": 32}) == (28, 32, 1)
    assert image.model_size({"height": 8, "width": 8, "channels": 3}) == (8, 8, 3)
    assert image.model_size({"height": 8, "width": 8, "channels": None}) == (8, 8, 1)
    p = image.probabilities(np.array([[0.0, 2.0, 1.0]], np.float32))
    assert p.dtype == np.float64 and p[0].argmax() == 1 and p.sum() == pytest.approx(1.0)
    out = image.classify(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]), ["a", "b", "c"], k=2)
    assert [r["label"] for r in out] == ["b", "a"] and [e["label"] for e in out[1]["top_k"]] == ["a", "c"]
    assert out[0]["top_k"][0] == {"label": "b", "index": 1, "probability": pytest.approx(0.7)}
    assert len(image.classify(np.array([[0.1, 0.7, 0.2]]), ["a", "b", "c"])[0]["top_k"]) == 3  # default k 3
    with pytest.raises(InputError, match="top_k must be between 1 and 3"):
        image.classify(np.array([[0.1, 0.7, 0.2]]), ["a", "b", "c"], k=4)
    line = image.format_result({"input": "d.png", "label": "7", "top_k": [{"label": "7", "probability": 0.91234},
                                                                         {"label": "1", "probability": 0.05}]})
    assert line == "d.png: 7   (7 0.912, 1 0.050)"
    assert image.format_result({"input": "x.png", "error": "not an image"}) == "x.png: error: not an image"


def test_read_inputs_takes_arrays_idx_files_and_images_and_names_each_failure(tmp_path):
    from PIL import Image

    from edgestack.families import image

    pixels = (np.arange(3 * 8 * 8) % 256).astype(np.uint8).reshape(3, 8, 8)
    np.save(tmp_path / "many.npy", pixels)
    np.save(tmp_path / "one.npy", pixels[:1])
    idx = tmp_path / "t-idx3-ubyte"
    idx.write_bytes(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in (2, 8, 8)) + pixels[:2].tobytes())
    Image.fromarray(pixels[0]).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 5), np.uint8))
    paths = [str(tmp_path / n) for n in ("many.npy", "one.npy", "t-idx3-ubyte", "a.png", "broken.png", "wrong.npy",
                                         "missing.png")]
    names, images, errors = image.read_inputs(paths, 8, 8, dark_background=False)
    assert names == [f"{paths[0]}[0]", f"{paths[0]}[1]", f"{paths[0]}[2]", paths[1], f"{paths[2]}[0]",
                     f"{paths[2]}[1]", paths[3], paths[4], paths[5], paths[6]]
    assert [i is None for i in images] == [False] * 7 + [True] * 3
    assert np.array_equal(images[0], pixels[0]) and np.array_equal(images[4], pixels[0])
    assert images[6].dtype == np.float32 and np.array_equal(images[6], pixels[0])  # the PNG, light on dark as it is
    assert set(errors) == {paths[4], paths[5], paths[6]}
    assert "not an image" in errors[paths[4]] and "8, 8" in errors[paths[5]].replace("[", "").replace("]", "")
    # a scan of dark ink on light paper: the model's dark background asks for it inverted
    Image.fromarray(255 - pixels[0]).save(tmp_path / "scan.png")
    scan = str(tmp_path / "scan.png")
    assert np.array_equal(image.read_inputs([scan], 8, 8, dark_background=True)[1][0], pixels[0])
    assert np.array_equal(image.read_inputs([scan], 8, 8, dark_background=False)[1][0], 255 - pixels[0])


# ------------------------------------------------------------------ image: pixel arrays and layouts

@pytest.mark.parametrize("values, n", [
    (np.zeros((4, 5)), 1), (np.zeros((2, 4, 5)), 2), (np.zeros((3, 1, 4, 5)), 3), ([[0] * 5] * 4, 1)])
def test_pixel_arrays_of_the_models_size_in_each_layout(values, n):
    from edgestack.families import image

    out = image.check_pixels(values, 4, 5)
    assert out.shape == (n, 4, 5) and out.dtype == np.float32


@pytest.mark.parametrize("values, words, status", [
    (None, "no input: send `pixels` (0..255 intensities) or upload images", 400),
    ([[0, 1], [2]], "`pixels` must be a rectangular nested list of numbers (ragged rows or non-numeric values found)",
     400),
    ([["a"] * 5] * 4, "rectangular nested list of numbers", 400),
    (np.zeros((4, 6)), "`pixels` must have shape [4, 5], [N, 4, 5] or [N, 1, 4, 5]; got [4, 6]", 400),
    (np.zeros((2, 2, 4, 5)), "got [2, 2, 4, 5]", 400),
    (np.zeros((0, 4, 5)), "`pixels` holds no images (or no pixels)", 400),
    (np.full((4, 5), np.nan), "`pixels` contains NaN or infinity", 400),
    (np.full((4, 5), np.inf), "contains NaN or infinity", 400),
    (np.full((4, 5), 255.5), "`pixels` must be intensities in 0..255; got range [255.5, 255.5]", 400),
    (np.full((4, 5), -0.5), "got range [-0.5, -0.5]", 400),
])
def test_pixel_array_mistakes_say_what_is_wrong(values, words, status):
    from edgestack.families import image

    with pytest.raises(InputError) as caught:
        image.check_pixels(values, 4, 5)
    assert words in str(caught.value) and caught.value.status == status


def test_the_range_ends_are_allowed_and_rgb_arrays_come_in_three_layouts():
    from edgestack.families import image

    edges = np.zeros((4, 5))
    edges[0, 0], edges[1, 1] = 0, 255
    assert image.check_pixels(edges, 4, 5, what="x").max() == 255
    rgb = np.arange(2 * 4 * 5 * 3, dtype=np.float64).reshape(2, 4, 5, 3) % 256
    for values in (rgb, rgb.transpose(0, 3, 1, 2), rgb[0]):
        out = image.check_pixels(values, 4, 5, channels=3)
        assert out.shape[1:] == (4, 5, 3) and out.dtype == np.float32 and np.array_equal(out[0], rgb[0])
    with pytest.raises(InputError, match=r"must have shape \[4, 5, 3\], \[N, 4, 5, 3\] or \[N, 3, 4, 5\] \(RGB\); "
                                         r"got \[4, 5\]"):
        image.check_pixels(np.zeros((4, 5)), 4, 5, channels=3)
    with pytest.raises(InputError, match="1 \\(grey\\) or 3"):
        image.check_pixels(np.zeros((4, 5)), 4, 5, channels=4)


def test_drawings_may_have_any_size_with_a_layout_and_are_laid_out():
    from edgestack.families import image

    drawing = np.zeros((60, 40))
    drawing[10:50, 15:25] = 255
    with pytest.raises(InputError, match=r"must have shape \[28, 28\]"):  # no layout: the model's size only
        image.check_drawings(drawing, 28, 28, None)
    assert image.check_drawings(np.zeros((28, 28)), 28, 28, None).shape == (1, 28, 28)
    out = image.check_drawings([drawing, drawing], 28, 28, "mnist")
    assert out.shape == (2, 28, 28) and out.dtype == np.float32
    assert np.array_equal(out[0], image.mnist_style(drawing.astype(np.uint8)))
    with pytest.raises(InputError, match="`layout` applies to grey models only"):
        image.check_drawings(drawing, 28, 28, "mnist", channels=3)
    with pytest.raises(InputError, match=r"must have shape \[H, W\] or \[N, H, W\]; got \[1, 1, 2, 3, 4\]"):
        image.check_drawings(np.zeros((1, 1, 2, 3, 4)), 28, 28, "mnist")
    assert image.check_drawings(np.zeros((1, 1, 9, 9)), 28, 28, "mnist").shape == (1, 28, 28)  # [N, 1, H, W] too
    side = np.zeros((1, image.MAX_DRAWING_SIDE, 3))
    assert image.check_drawings(side, 28, 28, "mnist").shape == (1, 28, 28)
    with pytest.raises(InputError) as caught:
        image.check_drawings(np.zeros((1, 3, image.MAX_DRAWING_SIDE + 1)), 28, 28, "mnist")
    assert caught.value.status == 413 and f"at most {image.MAX_DRAWING_SIDE} pixels per side" in str(caught.value)


def test_layouts_are_named_and_applied_in_one_place():
    from edgestack.families import image

    assert image.check_layout(None) is None and image.check_layout("mnist") == "mnist"
    with pytest.raises(InputError, match=r"`layout` must be one of \['mnist'\] or left out; got 'squash'"):
        image.check_layout("squash")
    plain = image.lay_out(np.array([[-3.0, 300.0], [12.4, 12.6]]), None, 2, 2)
    assert plain.dtype == np.uint8 and plain.tolist() == [[0, 255], [12, 12]]
    with pytest.raises(InputError, match="layout 'mnist' needs a square model input; this model takes 32x28"):
        image.lay_out(np.zeros((5, 5)), "mnist", 28, 32)
    digit = np.zeros((100, 100), np.uint8)
    digit[10:90, 40:60] = 255
    small = image.lay_out(digit, "mnist", 14, 14)  # the box scales with the frame: 10 of 14
    rows = np.flatnonzero(small.max(1) > 25)
    assert small.shape == (14, 14) and rows[-1] - rows[0] + 1 == 10


def test_resampling_matches_pillows_antialiased_bilinear():
    from PIL import Image as PILImage

    from edgestack.families import image

    rng = np.random.default_rng(5)
    picture = rng.random((37, 53)) * 255
    for size in ((20, 11), (9, 17), (74, 106), (37, 53)):
        ours = image.resample(picture, *size)
        theirs = np.asarray(PILImage.fromarray(picture.astype(np.float32), "F").resize(size[::-1],
                                                                                       PILImage.Resampling.BILINEAR))
        assert ours.shape == size
        np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_mnist_style_crops_scales_and_centres_by_mass():
    from edgestack.families import image

    canvas = np.zeros((200, 300), np.uint8)
    canvas[20:120, 230:260] = 255                     # 100 x 30 of ink, top right
    canvas[150, 10] = 20                              # a speck under 10% of the brightest: not ink
    out = image.mnist_style(canvas)
    rows, cols = np.flatnonzero(out.max(1) > 0), np.flatnonzero(out.max(0) > 0)
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 6   # longer side 20, aspect kept
    ys, xs = np.mgrid[0:28, 0:28]
    assert abs((ys * out).sum() / out.sum() - 13.5) <= 0.5 and abs((xs * out).sum() / out.sum() - 13.5) <= 0.5
    assert not image.mnist_style(np.zeros((10, 10), np.uint8)).any()   # no ink: an empty frame
    wide = np.zeros((50, 50), np.uint8)
    wide[24, :] = 200                                                  # a line: 20 long, at least 1 high
    laid = image.mnist_style(wide, box=20, size=28)
    assert np.flatnonzero(laid.max(0) > 0).size == 20 and np.flatnonzero(laid.max(1) > 0).size >= 1
    big = image.mnist_style(canvas, box=40, size=56)
    assert big.shape == (56, 56) and np.flatnonzero(big.max(1) > 0).size == 40
    faint = np.zeros((30, 30), np.uint8)
    faint[5:25, 10:20] = 3                                             # dim ink is still the brightest there is
    assert image.mnist_style(faint).any()


def test_model_input_is_scaled_standardised_and_in_the_graphs_layout():
    from edgestack.families import image

    pre = {"scale": 1 / 255, "mean": 0.5, "std": 0.25}
    grey = np.array([[[0.0, 255.0], [127.5, 51.0]]])
    x = image.to_model_input(grey, pre)
    assert x.shape == (1, 1, 2, 2) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x[0, 0], [[-2.0, 2.0], [0.0, -1.2]], rtol=1e-6)
    rgb = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3)
    y = image.to_model_input(rgb, {"scale": 1.0, "mean": 0.0, "std": 1.0})
    assert y.shape == (1, 3, 2, 2) and y.flags["C_CONTIGUOUS"] and np.array_equal(y[0, 1], rgb[0, :, :, 1])


# ------------------------------------------------------------------ generic: imported graphs' own tensors

def test_generic_example_feeds_have_the_declared_types_and_values():
    from edgestack.families import generic

    specs = [{"name": "x", "dtype": "float64", "shape": [-1, 3]}, {"name": "i", "dtype": "int32", "shape": [2, -1]},
             {"name": "b", "dtype": "bool", "shape": [-1, 2]}, {"name": "t", "dtype": "string", "shape": [-1]}]
    feeds = generic.example_feeds(specs, batch=4, seed=1)
    assert list(feeds) == ["x", "i", "b", "t"]
    assert feeds["x"].shape == (4, 3) and feeds["x"].dtype == np.float64 and 0 < np.abs(feeds["x"]).max() < 1
    assert feeds["i"].shape == (2, 4) and feeds["i"].dtype == np.int32 and feeds["i"].min() >= 0 and feeds["i"].max() <= 9
    assert feeds["b"].tolist() == [[True, False], [True, False], [True, False], [True, False]]
    assert feeds["t"].tolist() == ["edgestack"] * 4 and feeds["t"].dtype == object
    again = generic.example_feeds(specs, batch=4, seed=1)
    assert np.array_equal(again["x"], feeds["x"]) and not np.array_equal(generic.example_feeds(specs, 4, 2)["x"], feeds["x"])
    assert generic.example_feeds(specs)["x"].shape == (2, 3)  # batch 2 by default
    assert generic.dtype_of("bytes") == object and generic.dtype_of("float16") == np.float16


def test_generic_checks_name_the_input_and_keep_the_declared_order():
    from edgestack.families import generic

    specs = [{"name": "a", "dtype": "float32", "shape": [-1, 2]}, {"name": "t", "dtype": "bytes", "shape": [-1]}]
    checked = generic.check_feeds(specs, {"t": np.array(["x", "y"]), "a": np.zeros((2, 2), np.float16)}, batched=True)
    assert list(checked) == ["a", "t"] and checked["a"].dtype == np.float32 and checked["t"].dtype == object
    with pytest.raises(InputError, match=r"^m takes inputs \['a', 't'\]; missing \['t'\]$"):
        generic.check_feeds(specs, {"a": np.zeros((2, 2))}, batched=True, model="m")
    with pytest.raises(InputError, match=r"^the model takes inputs \['a', 't'\]; unexpected \['u'\]$"):
        generic.check_feeds(specs, {"a": 0, "t": 0, "u": 0}, batched=True)
    with pytest.raises(InputError, match=r"^input 't' of m is text \(BYTES\), got float64$"):
        generic.check_feeds(specs, {"a": np.zeros((2, 2)), "t": np.zeros(2)}, batched=True, model="m")
    with pytest.raises(InputError, match=r"^input 'a' of m is float32, got <U1$"):
        generic.check_feeds(specs, {"a": np.array([["x", "y"]] * 2), "t": np.array(["a", "b"])}, batched=True, model="m")
    with pytest.raises(InputError, match=r"must have shape \[-1, 2\] \(-1 = any\), got \[2\]"):
        generic.check_feeds(specs, {"a": np.zeros(2), "t": np.array(["a", "b"])}, batched=True)
    with pytest.raises(InputError, match=r"^the inputs of m are empty \(batch of 0\)$"):
        generic.check_feeds(specs, {"a": np.zeros((0, 2)), "t": np.array([], dtype=object)}, batched=True, model="m")
    with pytest.raises(InputError, match=r"'a' has 2, 't' has 3"):
        generic.check_feeds(specs, {"a": np.zeros((2, 2)), "t": np.array(["a", "b", "c"])}, batched=True)
    fixed = [{"name": "a", "dtype": "float32", "shape": [1, 2]}]  # not batched: no batch rules, no limit
    assert generic.check_feeds(fixed, {"a": np.zeros((1, 2))}, batched=False, max_items=0)["a"].shape == (1, 2)
    assert generic.check_feeds(specs, {"a": np.zeros((3, 2)), "t": np.array(["a"] * 3)}, batched=True,
                               max_items=3)["a"].shape == (3, 2)  # the limit itself is allowed


def test_generic_packing_rules_and_tensor_files(tmp_path):
    from edgestack.families import generic

    assert generic.packable([{"name": "a", "dtype": "float32", "shape": [-1, 2]}])
    assert not generic.packable([{"name": "t", "dtype": "bytes", "shape": [-1]}])
    assert not generic.packable([{"name": "a", "dtype": "float32", "shape": [-1, 2]},
                                 {"name": "s", "dtype": "int64", "shape": [-1, -1]}])
    assert generic.packable([{"name": "a", "dtype": "float32", "shape": [-1, 0]}])
    assert generic.supports_batching([{"shape": [-1, 2]}], [{"shape": [-1]}])
    assert not generic.supports_batching([{"shape": [1, 2]}], [{"shape": [-1]}])
    assert not generic.supports_batching([{"shape": []}], [{"shape": [-1]}])
    specs = [{"name": "a", "dtype": "float32", "shape": [-1, 2]}, {"name": "b", "dtype": "int64", "shape": [-1]}]
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2), np.float32), b=np.arange(3))
    got = generic.read_tensor_file(str(tmp_path / "two.npz"), specs)
    assert sorted(got) == ["a", "b"] and got["b"].tolist() == [0, 1, 2]
    with pytest.raises(InputError, match=r"missing.npz: no such file$"):
        generic.read_tensor_file(tmp_path / "missing.npz", specs)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"^x.csv: give a .npy file \(one input\) or a .npz file \(one array per input\)$"):
        generic.read_tensor_file(tmp_path / "x.csv", specs)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(InputError, match=r"^one.npy: a .npy file holds one array, but the model takes 2 inputs "
                                         r"\['a', 'b'\]: give a .npz file with one array per input$"):
        generic.read_tensor_file(tmp_path / "one.npy", specs)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="^objects.npy is not a readable numpy file"):
        generic.read_tensor_file(tmp_path / "objects.npy", specs[:1])


def test_generic_answers_are_plain_json_rows():
    from edgestack.families import generic

    outputs = {"label": np.array([b"cat", b"\xff"], dtype=object), "p": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32),
               "s": np.array(["x", "y"]), "n": np.array([3, 4], np.int64), "raw": np.array([b"ab", b"cd"])}
    assert generic.as_lists(outputs, 0) == {"label": "cat", "p": [0.25, 0.75], "s": "x", "n": 3, "raw": "ab"}
    second = generic.as_lists(outputs, 1)
    assert second["label"] == "\ufffd" and second["p"] == [1.0, 0.0] and type(second["n"]) is int
    nested = generic.as_lists({"t": np.array([[b"a", 5]], dtype=object)}, 0)
    assert nested == {"t": ["a", "5"]}


def test_top_k_ties_keep_label_order_among_many():
    row = np.full(300, 1 / 300)
    row[[250, 7]] = 0.5  # two winners, tied
    best = common.top_k(row, [str(i) for i in range(300)], 12)
    assert [e["index"] for e in best] == [7, 250, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10]


def test_drawing_and_pixel_errors_name_what_was_sent():
    from edgestack.families import image

    with pytest.raises(InputError, match=r"^images\[2\] must have shape \[28, 28\], \[N, 28, 28\] or \[N, 1, 28, 28\]"):
        image.check_drawings(np.zeros((3, 3)), 28, 28, None, what="images[2]")
    with pytest.raises(InputError, match=r"^drawing must have shape \[H, W\] or \[N, H, W\]"):
        image.check_drawings(np.zeros((1, 1, 1, 2, 2)), 28, 28, "mnist", what="drawing")
    with pytest.raises(InputError, match=r"^`layout` applies to grey models only; this model takes RGB images$"):
        image.check_drawings(np.zeros((2, 2)), 8, 8, "mnist", channels=3)
    rgb = np.zeros((1, 8, 8, 3))
    assert image.check_drawings(rgb, 8, 8, None, channels=3).shape == (1, 8, 8, 3)  # no layout: RGB passes
    with pytest.raises(InputError, match=r"^photo holds no images"):
        image.check_pixels(np.zeros((0, 8, 8, 3)), 8, 8, what="photo", channels=3)
    with pytest.raises(InputError, match=r"^photo must have shape \[8, 8, 3\]"):
        image.check_pixels(np.zeros((1, 8, 8, 4)), 8, 8, what="photo", channels=3)
    with pytest.raises(InputError, match=r"got \[2, 3000\]$") as caught:
        image.check_pixels(np.zeros((1, 2, 3000)), None, None)
    assert caught.value.status == 413
    square = np.zeros((2, 3, 3, 3))  # [N, 3, H, W] and [N, H, W, 3] at once: read as [N, H, W, 3]
    square[:, :, :, 0] = 7
    assert (image.check_pixels(square, 3, 3, channels=3)[..., 0] == 7).all()
    nchw = np.zeros((1, 3, 4, 5))
    nchw[:, 1] = 9
    assert (image.check_pixels(nchw, 4, 5, channels=3)[..., 1] == 9).all()


def test_mnist_style_edges_of_the_rules():
    from edgestack.families import image

    tall = np.zeros((60, 60), np.uint8)
    tall[5:55, 29] = 255  # one pixel wide: at least 1 wide after scaling
    out = image.mnist_style(tall)
    assert np.flatnonzero(out.max(0) > 0).size >= 1 and np.flatnonzero(out.max(1) > 0).size == 20
    crop_check = np.zeros((40, 40), np.uint8)
    crop_check[10:30, 12] = 255
    crop_check[10:30, 27] = 255  # two bars: the crop must span both, first column to last
    laid = image.mnist_style(crop_check)
    cols = np.flatnonzero(laid.max(0) > 60)
    assert cols[-1] - cols[0] + 1 >= 14  # 16 columns of 20 rows scaled to 20 rows: about 16 wide
    threshold = np.zeros((20, 20))
    threshold[2:18, 5] = 100.0
    threshold[2:18, 15] = 10.0  # exactly 10% of the brightest: not ink, so the crop stops at column 5
    only = image.mnist_style(threshold)
    assert np.flatnonzero(only.max(0) > 0).size == 1
    faint = np.zeros((40, 40))
    faint[5:15, 5:8] = 1.5  # a faint stroke (under 1 is treated as 1: the threshold is 0.1 of at least 1)
    speck = faint.copy()
    speck[35, 35] = 0.18  # over 0.1 of max(1.5, 1): ink, so the crop reaches it
    assert not np.array_equal(image.mnist_style(speck), image.mnist_style(faint))
    hot = np.zeros((20, 20))
    hot[0:20, 0:2] = 1000.0  # brighter than 255: clipped, not wrapped
    assert image.mnist_style(hot).max() == 255
    for heavy, edge in ((27, 0), (0, 27)):  # the mass at one side of its crop: the frame's edge, never past it
        lopsided = np.zeros((28, 28), np.uint8)
        lopsided[:, heavy] = 255
        lopsided[14, 27 - heavy] = 255  # one pixel at the other side widens the crop to all 28 columns
        out = image.mnist_style(lopsided)
        cols = np.flatnonzero(out.max(0) > 0)
        assert (cols[0] if edge == 0 else cols[-1]) == edge and cols[-1] - cols[0] + 1 == 20
        out = image.mnist_style(lopsided.T)  # the same for rows
        rows = np.flatnonzero(out.max(1) > 0)
        assert (rows[0] if edge == 0 else rows[-1]) == edge


def test_read_inputs_pass_the_channels_and_layout_on(tmp_path):
    from PIL import Image as PILImage

    from edgestack.families import image

    rgb = np.random.default_rng(2).integers(0, 100, (2, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "two.npy", rgb)
    PILImage.fromarray(rgb[0]).save(tmp_path / "c.png")
    names, images_, errors = image.read_inputs([str(tmp_path / "two.npy"), str(tmp_path / "c.png")], 8, 8, channels=3)
    assert not errors and images_[0].shape == (8, 8, 3) and np.array_equal(images_[2], rgb[0])
    np.save(tmp_path / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    idx = tmp_path / "bad-idx3-ubyte"
    idx.write_bytes(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in (1, 5, 5)) + bytes(25))
    _, _, errors = image.read_inputs([str(tmp_path / "pickle.npy"), str(idx)], 8, 8)
    assert "pickle.npy" in next(iter(errors)) and "allow_pickle" in errors[str(tmp_path / "pickle.npy")]
    assert errors[str(idx)].startswith(f"{idx} must have shape [8, 8]")  # named by its file
    drawing = np.zeros((50, 30), np.uint8)
    drawing[5:45, 10:20] = 255
    PILImage.fromarray(drawing).save(tmp_path / "d.png")
    laid = image.read_inputs([str(tmp_path / "d.png")], 28, 28, layout="mnist")[1][0]
    assert np.array_equal(laid, image.mnist_style(drawing))
    _, _, errors = image.read_inputs([str(tmp_path / "x.png")], 8, 8)
    assert list(errors) == [str(tmp_path / "x.png")]
    np.save(tmp_path / "single.npy", np.zeros((1, 8, 8)))
    np.save(tmp_path / "pair.npy", np.zeros((2, 8, 8)))
    names, _, _ = image.read_inputs([str(tmp_path / "single.npy"), str(tmp_path / "pair.npy")], 8, 8)
    assert names == [str(tmp_path / "single.npy"), f"{tmp_path / 'pair.npy'}[0]", f"{tmp_path / 'pair.npy'}[1]"]
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "tiny.png")
    _, _, errors = image.read_inputs([str(tmp_path / "tiny.png")], 8, 8, layout="squash")
    assert "layout" in errors[str(tmp_path / "tiny.png")] and str(tmp_path / "tiny.png") in errors


def test_model_input_keeps_float32_for_integer_pixels():
    from edgestack.families import image

    x = image.to_model_input(np.array([[[255, 0]]], np.uint8), {"scale": 1 / 255, "mean": 0.0, "std": 1.0})
    assert x.dtype == np.float32 and x.tolist() == [[[[1.0, 0.0]]]]
    y = image.to_model_input(np.zeros((1, 2, 2, 3), np.float64), {"scale": 1.0, "mean": 0.0, "std": 1.0})
    assert y.dtype == np.float32
