"""The Open Inference Protocol's BYTES codec: round trips and refusals."""

from __future__ import annotations

import struct
import numpy as np
import pytest
from edgestack import v2protocol as v2


def test_bytes_codec_round_trip_and_refusals():
    values = np.array([[b"", "h\u00e9llo".encode()], [b"\x00\xff", b"abc"]], dtype=object)
    raw = v2.serialize_bytes(values)
    assert raw[:4] == struct.pack("<I", 0) and len(raw) == 4 * 4 + 0 + 6 + 2 + 3
    back = v2.from_raw(raw, v2.BY_V2["BYTES"], [2, 2], "t")
    assert back.tolist() == values.tolist()
    with pytest.raises(v2.ProtocolError, match="claims 9 bytes"):
        v2.deserialize_bytes(struct.pack("<I", 9) + b"abc")
    with pytest.raises(v2.ProtocolError, match="stray"):
        v2.deserialize_bytes(struct.pack("<I", 1) + b"a" + b"\x01")
    with pytest.raises(v2.ProtocolError, match="needs 3 BYTES element"):
        v2.from_raw(raw, v2.BY_V2["BYTES"], [3], "t")
