"""Property-based fuzzing of the server's own OpenAPI document: no caller input gets a 5xx.

schemathesis reads /docs.json (BentoML serves the document there) from a real server
(digits-cnn and a tiny folk-lstm, as in test_error_shape.py) and sends generated requests,
valid and invalid, to every operation in it, with the `not_a_server_error` check only: a
caller's request may be refused with a 4xx, never answered with a 5xx. The run is bounded
(examples per operation, a fixed seed) to stay well under a minute on 2 cores. The v2 routes
are not in the document; test_error_shape.py and test_v2.py send them malformed requests.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import httpx

from tests.integration.test_error_shape import url  # noqa: F401 (the module's server fixture)

EXAMPLES = 100  # per operation and phase
SEED = 20261129


def test_no_operation_of_the_openapi_document_answers_a_5xx(url, tmp_path):  # noqa: F811
    operations = [(method.upper(), path) for path, item in httpx.get(url + "/docs.json").json()["paths"].items()
                  for method in item if method in ("get", "post", "put", "delete", "patch")]
    assert ("POST", "/classify_image") in operations and len(operations) >= 10
    junit = tmp_path / "schemathesis.xml"
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", url + "/docs.json", "--checks", "not_a_server_error",
         "--phases", "examples,coverage,fuzzing", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
         "--workers", "1", "--request-timeout", "30", "--generation-database", "none", "--no-color",
         "--report", "junit", "--report-junit-path", str(junit)],
        check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    cases = ET.parse(junit).getroot().iter("testcase")
    tested = {case.get("name") for case in cases}
    assert len(tested) == len(operations), (sorted(tested), operations)
