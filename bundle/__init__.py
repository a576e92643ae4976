"""Edge-device bundles: `edgestack bundle MODEL` (make.py) and `edgestack bench-bundle` (bench.py).

A bundle is a folder (and a .tar.gz of it) that runs with onnxruntime + numpy alone:
the int8 model as ONNX and in ORT format, the operator list for an ONNX Runtime minimal
build, the manifest (labels, preprocessing, checksums), and `edge_runner/`, a small
package with a Python API and a command line. The family-specific part of the runner
is one module in bundle/edge_runner/ (the family's `edge` stage in edgestack/registry.py),
and the family's numpy-only processing (edgestack/families/) is copied beside it.
"""
