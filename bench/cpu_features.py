"""The CPU's instruction-set flags that decide which low-precision paths can be fast.

Recorded with every benchmark result: a bf16 or int8 number means little without knowing
whether the CPU has native instructions for it (AVX-512 BF16 / VNNI, AMX) or emulates them.
"""

from __future__ import annotations

import pathlib

# avx512_bf16: bf16 dot products (oneDNN's bf16 convolutions); amx_*: Sapphire Rapids' tile
# units (bf16 and int8 matrix multiplies); avx512_vnni / avx_vnni: int8 dot products.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_features(cpuinfo: str | pathlib.Path = "/proc/cpuinfo") -> dict[str, bool]:
    """``{flag: present}`` for each of :data:`FLAGS`, read from the first CPU's ``flags`` line.

    All False where there is no ``/proc/cpuinfo`` (not Linux): unknown is treated as absent.
    """
    path = pathlib.Path(cpuinfo)
    flags: set[str] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {flag: flag in flags for flag in FLAGS}


def native_bf16(features: dict[str, bool]) -> bool:
    """Whether bf16 arithmetic runs on native instructions (else oneDNN emulates it in fp32)."""
    return features.get("avx512_bf16", False) or features.get("amx_bf16", False)
