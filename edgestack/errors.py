"""The errors users read: caller mistakes (HTTP 4xx) and failed quality gates (one line each).

InputError itself lives in edgestack/families/common.py, because the family processing
modules raise it and are copied standalone into edge bundles; it is re-exported here.
"""

from __future__ import annotations

from edgestack.families.common import InputError

__all__ = [
    "ArtifactError",
    "DataError",
    "DataMissing",
    "InputError",
    "Overloaded",
    "ParityError",
    "QualityGateError",
    "UnknownModel",
    "UnknownName",
    "UsageError",
]


class UnknownModel(InputError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown model {name!r}; this server serves: {', '.join(sorted(known)) or 'nothing'}", 404)


class Overloaded(InputError):
    """The server cannot start this request in time (its model's queue is full, its deadline cannot
    be met, or the server is draining): HTTP 503 with Retry-After, gRPC UNAVAILABLE. Not the
    caller's fault, but answered the same way as a caller's mistake: at once, with a message.
    `retry_after`: seconds after which a retry may succeed."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, 503)
        self.retry_after = max(1, int(retry_after))


class UsageError(ValueError):
    """A command was asked for something that cannot be done (an unknown option, a variant the
    artifact lacks, ...); the message says what and what can be. The CLI prints it as one line."""


class DataError(UsageError):
    """Training data that cannot be used as it is (one class, an empty class, no readable file,
    a missing column); the message says what and where. The CLI prints it and exits 1."""

    exit_status = 1


class UnknownName(UsageError, KeyError):
    """An unknown served model or family name (a KeyError too, for lookups)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataMissing(FileNotFoundError):
    """A dataset or corpus is not installed; the message says how to install it or bring your own."""


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


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, does not match its manifest, or its manifest is not
    one this edgestack reads (edgestack/manifest.py). edgestack.artifact re-exports it."""
