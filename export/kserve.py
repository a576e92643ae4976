"""KServe `InferenceService` manifests for the built models (`edgestack export kserve`).

Two ways onto a Kubernetes cluster with KServe installed:

- `triton.yaml`: KServe's Triton runtime (model format `triton`, protocol v2) on the model
  repository `edgestack export triton --backend onnxruntime` writes (the ONNX graphs on
  Triton's ONNX Runtime backend), uploaded to `storage_uri` (s3://, gs://, pvc://...).
  Clients speak the v2 protocol; text models take token ids there (export/triton.py says why).
- `edgestack.yaml`: our own server as a custom predictor: the container image that
  `bentoml build && bentoml containerize edgestack:latest` makes (bentofile.yaml), port 3000,
  readiness on /readyz and liveness on /livez, every REST endpoint and the v2 routes.

The manifests are plain dicts written as YAML (kubectl also takes JSON). They are validated by
building the KServe SDK's own models from them (scripts/kserve_validate.py, run in the
`.venv-kserve` of `make kserve-venv`: the kserve package pins versions that clash with ours);
what the SDK does not know would be dropped and is reported as an error.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from edgestack.serverproc import KSERVE_VENV

API_VERSION = "serving.kserve.io/v1beta1"
VALIDATOR = Path(__file__).resolve().parents[1] / "scripts" / "kserve_validate.py"


def resources(cpu: str, memory: str) -> dict:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def scaling(min_replicas: int, max_replicas: int, concurrency: int) -> dict:
    """KServe's autoscaling knobs on a predictor: replicas between min and max, scaled on
    requests in flight per replica (Knative's concurrency metric)."""
    return {"minReplicas": min_replicas, "maxReplicas": max_replicas, "scaleMetric": "concurrency",
            "scaleTarget": concurrency}


def triton_service(name: str, storage_uri: str, *, runtime_version: str, cpu: str, memory: str,
                   min_replicas: int, max_replicas: int, concurrency: int) -> dict:
    return {
        "apiVersion": API_VERSION, "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "edgestack"}},
        "spec": {"predictor": {
            **scaling(min_replicas, max_replicas, concurrency),
            "model": {
                "modelFormat": {"name": "triton"}, "protocolVersion": "v2", "storageUri": storage_uri,
                "runtimeVersion": runtime_version, "resources": resources(cpu, memory),
            },
        }},
    }


def edgestack_service(name: str, image: str, models: list[str], *, cpu: str, memory: str, min_replicas: int,
                      max_replicas: int, concurrency: int, threads: int | None) -> dict:
    # the pod's server must be reached from outside it: every interface, said explicitly (issue 20; the
    # default is 127.0.0.1). Give it EDGESTACK_API_KEYS (a Secret) before exposing it beyond the cluster.
    env = [{"name": "EDGESTACK_MODELS", "value": ",".join(models)}, {"name": "EDGESTACK_HOST", "value": "0.0.0.0"}]
    if threads:
        env.append({"name": "EDGESTACK_THREADS", "value": str(threads)})
    probe = {"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
    return {
        "apiVersion": API_VERSION, "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "edgestack"}},
        "spec": {"predictor": {
            **scaling(min_replicas, max_replicas, concurrency),
            "containers": [{
                "name": "kserve-container", "image": image,
                "ports": [{"containerPort": 3000, "protocol": "TCP"}],
                "env": env, "resources": resources(cpu, memory),
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 3000}, **probe},
                "livenessProbe": {"httpGet": {"path": "/livez", "port": 3000}, "initialDelaySeconds": 10, **probe},
            }],
        }},
    }


def dump(doc: dict, path: Path) -> Path:
    try:
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False)
    except ImportError:  # JSON is YAML too
        text = json.dumps(doc, indent=2) + "\n"
    path.write_text(text)
    return path


def validate(paths: list[Path], python: Path | None = None) -> str:
    """Build the KServe SDK's V1beta1InferenceService from each manifest (in .venv-kserve); returns its
    report. Raises RuntimeError with the validator's output when a manifest does not hold up, and
    FileNotFoundError when there is no KServe venv."""
    python = python or KSERVE_VENV / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(f"no {python}: run `make kserve-venv` (the kserve SDK in its own venv)")
    run = subprocess.run([str(python), str(VALIDATOR), *map(str, paths)], capture_output=True, text=True,
                         timeout=120, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"KServe SDK refused the manifests:\n{run.stdout}{run.stderr}".strip())
    return run.stdout.strip()
