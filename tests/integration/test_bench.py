"""The benchmarks run end to end on the small digits build and write what they print as JSON.

Smoke runs with few iterations: they check that every case is measured and the report is
complete, not how fast anything is (speed is what the benchmarks themselves report).
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks.protocols import (
    BATCHES,
    CONCURRENCY,
    PEERS,
    PROTOCOLS,
    TRITON,
    TRITON_FIXED,
)
from edgestack.serverproc import kserve_missing, triton_missing
from tests.conftest import ARTIFACTS, prerequisite


def run_bench(tmp_path, *flags, root=None) -> dict:
    """`edgestack bench digits-cnn` (short) with `flags`; its JSON. The artifacts folder: `root`,
    else EDGESTACK_ARTIFACTS of this process (the artifacts_env fixture)."""
    env = {**os.environ, ARTIFACTS: str(root)} if root else None
    done = subprocess.run([sys.executable, "-m", "cli", "bench", "digits-cnn", "--threads", "1",
                           "--iterations", "5", "--http-requests", "16", "--per-connection", "1", "--out", str(tmp_path),
                           *flags],
                          capture_output=True, text=True, timeout=600, check=False, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    assert str(path) in done.stdout  # the table's run says where its JSON went
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def protocols_with_triton(digits_artifact, artifacts_root, tmp_path_factory) -> dict:
    """One `bench --protocols --triton` run (our protocols and a real Triton in one rotation),
    read by the two tests below: a second run of our side alone would measure the same cases."""
    prerequisite(triton_missing())
    return run_bench(tmp_path_factory.mktemp("bench-triton"), "--protocols", "--triton", root=artifacts_root)


def test_protocol_bench_measures_every_protocol_batch_and_concurrency(protocols_with_triton):
    result = protocols_with_triton
    cases = {(r["protocol"], r["batch"], r["concurrency"]): r for r in result["http"]}
    for protocol in PROTOCOLS:
        for batch in BATCHES:
            for concurrency in CONCURRENCY[batch]:
                row = cases[(protocol, batch, concurrency)]
                assert row["n"] >= 16 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
                # the server's CPU and the load generator's own, per request (h2load, a C program):
                # a positive figure, or None when a short run stays below the clock's resolution
                for cpu in (row["server_cpu_ms_per_request"], row["loadgen_cpu_ms_per_request"]):
                    assert cpu is None or cpu > 0
                assert row["requests_per_s"] > 0
    for batch in BATCHES:
        check = result["checks"][f"batch{batch}"]
        # the fixed cost is measured in the same concurrency-1 rotation as the protocols
        assert check["fixed_p50_ms"] == cases[("fixed-cost", batch, 1)]["p50_ms"] > 0
        assert check["budget_ms"] == pytest.approx(1.5 * (check["ort_p50_ms"] + check["fixed_p50_ms"]))
        assert check["within"] == (check["v2_binary_p50_ms"] <= check["budget_ms"])
    ours = {key for key in result["ratios"] if not key.startswith("triton")}  # Triton's: the test below
    assert ours == {f"{p}_over_v2-binary_p50_batch{b}_conc1" for p in PROTOCOLS[1:] for b in BATCHES}


@pytest.mark.usefixtures("digits_artifact", "artifacts_env")
def test_model_bench_compares_pytorch_and_ort_variants(tmp_path):
    result = run_bench(tmp_path, "--no-http")
    engines = {(r["engine"], r["batch"]) for r in result["in_process"]}
    assert {(e, b) for e in ("pytorch-eager", "ort-fp32", "ort-int8") for b in (1, 32)} <= engines, engines
    assert all(r["n"] >= 5 and r["p50_ms"] > 0 for r in result["in_process"])
    assert result["ratios"]["ort_int8_over_pytorch_p50_batch1"] > 0
    assert "http" not in result or not result["http"]  # --no-http starts no server


def test_protocol_bench_with_a_real_triton_in_the_same_rotation(protocols_with_triton):
    result = protocols_with_triton
    cases = {(r["protocol"], r["batch"], r["concurrency"]): r for r in result["http"]}
    for batch in BATCHES:
        for concurrency in CONCURRENCY[batch]:
            for contender in PEERS["triton"]:
                assert cases[(contender, batch, concurrency)]["p50_ms"] > 0
        assert cases[(TRITON_FIXED, batch, 1)]["p50_ms"] > 0
        assert result["ratios"][f"{TRITON}_over_v2-binary_p50_batch{batch}_conc1"] > 0
        assert result["ratios"][f"{TRITON}_over_v2-binary_items_per_s_batch{batch}_conc16"] > 0
    assert result["triton"] is True


@pytest.mark.usefixtures("digits_artifact", "artifacts_env")
def test_protocol_bench_against_kserve_and_an_ab_server(tmp_path):
    """KServe's own ModelServer (its venv) on the same artifact, and a second server of ours
    with other settings, in the same rotation; the peer comparison names the issue's goals."""
    prerequisite(kserve_missing())
    result = run_bench(tmp_path, "--protocols", "--peers", "kserve", "--ab", "EDGESTACK_GC_FREEZE=0", "--batches", "1")
    cases = {(r["protocol"], r["batch"], r["concurrency"]): r for r in result["http"]}
    for contender in (*PEERS["kserve"], "b:v2-binary", "b:v2-grpc"):
        for concurrency in CONCURRENCY[1]:
            assert cases[(contender, 1, concurrency)]["p50_ms"] > 0
    comparison = result["peer_comparison"]
    assert comparison["ratios"]["v2-grpc/kserve-grpc c1 p50"] > 0
    assert any(key.startswith("v2-binary c16 req/s >= 1.5x best peer") for key in comparison["goals"])
    assert comparison["ab"]["v2-binary batch=1 c1 B/A p50_ms"] > 0
    assert result["peers"] == ["kserve"] and result["ab"] == "EDGESTACK_GC_FREEZE=0"
    assert {r["batch"] for r in result["http"]} == {1}  # --batches 1
