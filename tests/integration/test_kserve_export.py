"""`edgestack export kserve`: both InferenceService manifests are built into the KServe SDK's own
models (kserve.V1beta1InferenceService, in .venv-kserve of `make kserve-venv`), and a manifest
with a field KServe does not have or a value of the wrong kind is refused with its path.
No Kubernetes here: applying them to a cluster is not tested."""

from __future__ import annotations

import yaml

from cli import main
from export import kserve


def test_export_kserve_writes_manifests_the_sdk_accepts(tmp_path, capsys):
    out = tmp_path / "kserve"
    assert main(["export", "kserve", "digits-cnn", "sentiment-transformer", "--out", str(out),
                 "--image", "registry.example/edgestack:1", "--max-replicas", "3", "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("ok (built as kserve.V1beta1InferenceService)") == 2
    ours = yaml.safe_load((out / "edgestack.yaml").read_text())
    container = ours["spec"]["predictor"]["containers"][0]
    assert container["image"] == "registry.example/edgestack:1" and container["ports"][0]["containerPort"] == 3000
    assert {"name": "EDGESTACK_MODELS", "value": "digits-cnn,sentiment-transformer"} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    triton = yaml.safe_load((out / "triton.yaml").read_text())["spec"]["predictor"]
    assert triton["model"]["modelFormat"] == {"name": "triton"} and triton["model"]["protocolVersion"] == "v2"
    assert triton["maxReplicas"] == 3


def test_a_field_kserve_lacks_or_a_wrong_kind_is_refused_with_its_path(tmp_path):
    doc = kserve.edgestack_service("x", "img", ["digits-cnn"], cpu="1", memory="1Gi", min_replicas=1,
                                   max_replicas=2, concurrency=8, threads=None)
    doc["spec"]["predictor"]["scaleTargett"] = 8                         # a typo KServe would ignore
    doc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "3000"  # a string for an int
    bad = kserve.dump(doc, tmp_path / "bad.yaml")
    try:
        kserve.validate([bad])
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("the KServe SDK check accepted a broken manifest")
    assert ".spec.predictor.scaleTargett: V1beta1PredictorSpec has no such field" in message
    assert ".spec.predictor.containers[0].ports[0].containerPort: expected int" in message
