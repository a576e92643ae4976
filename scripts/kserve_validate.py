"""Check InferenceService manifests against the KServe SDK's models (run in .venv-kserve).

    .venv-kserve/bin/python scripts/kserve_validate.py kserve/*.yaml

Each manifest is built into `kserve.V1beta1InferenceService`: every object becomes the SDK's
generated model its parent declares (V1beta1PredictorSpec, V1beta1ModelSpec, and the
Kubernetes V1ObjectMeta, V1Container, V1Probe ... from the kubernetes client the SDK uses),
through the model's own constructor (which checks required fields and enums). A key no model
declares, or a value of the wrong kind, is reported with its path; the built service, read back,
must hold every value of the manifest. Standalone: imports the kserve SDK, the kubernetes
client and PyYAML (both come with kserve), nothing of edgestack.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import kserve
import kubernetes.client
import yaml

SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def model_class(name: str):
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name)


def build(value, kind: str, path: str, problems: list[str]):
    """`value` (from the manifest) as the SDK type named `kind` ('V1Container', 'List[str]', 'dict(str, str)' ...)."""
    if value is None:
        return None
    listed = re.fullmatch(r"(?:list|List)\[(.+)\]", kind)
    mapped = re.fullmatch(r"(?:dict\(str, |Dict\[str, )(.+)[)\]]", kind)
    if listed or mapped:
        inner = (listed or mapped).group(1)
        if listed and isinstance(value, list):
            return [build(v, inner, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        if mapped and isinstance(value, dict):
            return {k: build(v, inner, f"{path}.{k}", problems) for k, v in value.items()}
        problems.append(f"{path}: expected {kind}, got {type(value).__name__}")
        return None
    if kind in SCALARS:
        if not isinstance(value, SCALARS[kind]) or (kind == "int" and isinstance(value, bool)):
            problems.append(f"{path}: expected {kind}, got {value!r}")
        return value
    cls = model_class(kind)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({kind}), got {value!r}")
        return None
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{path}.{key}: {kind} has no such field")
            continue
        attr = by_json[key]
        kwargs[attr] = build(item, cls.openapi_types[attr], f"{path}.{key}", problems)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{path}: {kind} refused it: {exc}")
        return None


def as_manifest(obj):
    """A built model back to manifest keys (the models' attribute_map), unset fields left out."""
    if isinstance(obj, list):
        return [as_manifest(item) for item in obj]
    if isinstance(obj, dict):
        return {key: as_manifest(item) for key, item in obj.items()}
    if hasattr(obj, "attribute_map"):
        return {key: as_manifest(getattr(obj, attr)) for attr, key in obj.attribute_map.items()
                if getattr(obj, attr) is not None}
    return obj


def changed(sent, back, path: str = "") -> list[str]:
    """Every value of the manifest, as the built service holds it (the SDK's defaults aside)."""
    if isinstance(sent, dict) and isinstance(back, dict):
        return [d for key in sent for d in changed(sent[key], back.get(key), f"{path}.{key}")]
    if isinstance(sent, list) and isinstance(back, list) and len(sent) == len(back):
        return [d for i, (a, b) in enumerate(zip(sent, back)) for d in changed(a, b, f"{path}[{i}]")]
    return [] if sent == back else [f"{path}: the manifest says {sent!r}, the built service holds {back!r}"]


def check(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    problems: list[str] = []
    service = build(doc, "V1beta1InferenceService", "", problems)
    if problems:
        return problems
    if doc.get("kind") != "InferenceService" or service.spec is None or service.spec.predictor is None:
        return ["not an InferenceService with a predictor"]
    return changed(doc, as_manifest(service))


def main(paths: list[str]) -> int:
    failed = 0
    for name in paths:
        problems = check(Path(name))
        failed += bool(problems)
        print(f"{name}: " + ("ok (built as kserve.V1beta1InferenceService)" if not problems else "FAILED"))
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
