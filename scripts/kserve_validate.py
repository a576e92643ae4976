"""Check InferenceService manifests against the KServe SDK's models (run in .venv-kserve).

    .venv-kserve/bin/python scripts/kserve_validate.py out/kserve/*.yaml

Each manifest is deserialized into `kserve.V1beta1InferenceService` (the SDK's generated model,
nested V1beta1PredictorSpec, V1beta1ModelSpec, V1Container ...) and serialized back: a field the
SDK does not know would be dropped, a value of the wrong type raises, and either is reported
with the path. Standalone: only the kserve SDK (and PyYAML, which it brings) are imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kserve
import yaml
from kserve import V1beta1InferenceService


class _Response:  # what ApiClient.deserialize reads: a body in `.data`
    def __init__(self, doc: dict):
        self.data = json.dumps(doc)


def differences(sent, back, path: str = "") -> list[str]:
    if isinstance(sent, dict) and isinstance(back, dict):
        found = [f"{path}.{k}: not in the SDK's model (dropped)" for k in sent if k not in back]
        return found + [d for k in sent if k in back for d in differences(sent[k], back[k], f"{path}.{k}")]
    if isinstance(sent, list) and isinstance(back, list) and len(sent) == len(back):
        return [d for i, (a, b) in enumerate(zip(sent, back)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if sent == back else [f"{path}: sent {sent!r}, the SDK read {back!r}"]


def check(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    client = kserve.ApiClient()
    service = client.deserialize(_Response(doc), "V1beta1InferenceService")
    if not isinstance(service, V1beta1InferenceService) or service.spec is None or service.spec.predictor is None:
        return ["not an InferenceService with a predictor"]
    return differences(doc, client.sanitize_for_serialization(service))


def main(paths: list[str]) -> int:
    failed = 0
    for name in paths:
        problems = check(Path(name))
        failed += bool(problems)
        print(f"{name}: " + ("ok (kserve.V1beta1InferenceService)" if not problems else "FAILED"))
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
