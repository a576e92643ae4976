"""What the CPU can do, for the int8 recipe and for every accuracy and speed figure we record.

Without VNNI, ONNX Runtime's u8 x s8 int8 kernels (AVX2 vpmaddubsw) add pairs of products into
16 bits and can saturate; with AVX-512 VNNI or AVX-VNNI they accumulate in 32 bits. A figure
measured on one kind can differ on the other, so the ISA is written beside each one.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "fma")
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy")


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model, the int8-relevant ISA flags and the core count (Linux /proc/cpuinfo; empty elsewhere)."""
    import os

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return {"model": model, "cores": os.cpu_count() or 1,
            "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "int8_dot_product": "vnni" if has_vnni(flags) else ("avx2" if "avx2" in flags else "none")}


def has_vnni(flags) -> bool:
    return bool({"avx512_vnni", "avx_vnni"} & set(flags))


def package_versions() -> dict[str, str]:
    """Versions of the packages every figure depends on (those installed)."""
    import importlib.metadata

    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
