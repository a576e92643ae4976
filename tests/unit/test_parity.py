"""The parity check of the export step fails loudly, naming the worst difference."""

from __future__ import annotations

import numpy as np
import pytest
from export.onnx_utils import ParityError, check_parity


def test_parity_check_fails_loudly_beyond_tolerance():
    a = np.zeros((2, 10), np.float32)
    assert check_parity(a, a + 1e-6, atol=1e-4, rtol=0, what="x")["passed"]
    with pytest.raises(ParityError, match="exceeds"):
        check_parity(a, a + 1e-2, atol=1e-4, rtol=0, what="x")
    with pytest.raises(ParityError, match="shape"):
        check_parity(a, a[:1], atol=1e-4, rtol=0, what="x")
