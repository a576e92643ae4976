"""Errors of the build pipeline that a user should read as one line, not a traceback."""

from __future__ import annotations


class QualityGateError(Exception):
    """A built model missed one of its quality gates (parity, accuracy, quantization check).

    `gate` names the gate (e.g. "parity", "int8-accuracy"), `model` the served name when known.
    `edgestack build` reports it as one line and goes on with the next model.
    """

    def __init__(self, message: str, *, gate: str, model: str | None = None):
        super().__init__(message)
        self.gate, self.model = gate, model


class ParityError(QualityGateError):
    """ONNX outputs differ from PyTorch's by more than the stated tolerance."""

    def __init__(self, message: str, model: str | None = None):
        super().__init__(message, gate="parity", model=model)
