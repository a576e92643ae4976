"""What a served model should answer, computed without any of the server's code.

`plain_reference(art, variant, feeds)` answers a v2 request's tensors from the artifact's files
alone: a bare `onnxruntime.InferenceSession` on the variant's graph, the `tokenizers` library
on tokenizer.json for text (each text on its own: no padding to agree or disagree about), the
softmax written out here, and for folk-lstm's one-step graph the token and LSTM state fed as
they are. The family runners (serving/*.py) are never used, so a test comparing the server with
this compares two implementations, not the code with itself.

`graph_ops(path)` counts an ONNX file's operators with `onnx` itself (subgraphs included), not
with the exporter's helper or its manifest.

`independent_v2_check` (a fixture in tests/conftest.py) makes `edgestack v2-check`
(cli/v2check.py) compare with plain_reference instead of its own runner-based one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _variant_file(art, variant: str) -> Path:
    return art.path / art.manifest["variants"][variant]["file"]


def text_probabilities(art, variant: str, texts: list[str]) -> np.ndarray:
    """[N, classes] float64: each text tokenized by `tokenizers` (truncated to the manifest's max
    length, no padding) and run alone through the variant's graph."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(art.path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(art.manifest["preprocessing"]["max_length"])
    graph = session(_variant_file(art, variant))
    names = [i.name for i in graph.get_inputs()]
    rows = []
    for text in texts:
        encoding = tokenizer.encode(text)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        known = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        (logits,) = graph.run(None, {n: known[n] for n in names})[:1]
        rows.append(softmax(logits)[0])
    return np.asarray(rows)


def plain_reference(art, variant: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs the served `variant` of `art` should give for v2 input tensors `feeds`."""
    task = art.manifest["task"]
    if task == "image-classification":
        graph = session(_variant_file(art, variant))
        names = [o["name"] for o in art.manifest["outputs"]]
        return dict(zip(names, graph.run(names, feeds)))
    if task == "text-classification":
        (name,) = feeds
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in np.asarray(feeds[name]).reshape(-1)]
        (output,) = (o["name"] for o in art.manifest["outputs"])
        return {output: text_probabilities(art, variant, texts).astype(np.float32)}
    if art.manifest["family"] == "tune":  # one step of the LSTM, state in and out, as the graph takes it
        graph = session(_variant_file(art, variant))
        inputs = {"token": feeds["token"].astype(np.int64), "h": feeds["h"].astype(np.float32),
                  "c": feeds["c"].astype(np.float32)}
        return dict(zip([o.name for o in graph.get_outputs()], graph.run(None, inputs)))
    raise NotImplementedError(f"no plain reference for {art.name} ({task}): add one to tests/reference.py")


def graph_ops(path: Path) -> Counter:
    """How many nodes of each operator type an ONNX file holds (subgraphs too), read with onnx."""
    counts: Counter = Counter()

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g)
                for sub in attribute.graphs:
                    walk(sub)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return counts
