"""What this CPU can do, in the words the int8 kernels care about, and the int8 scheme that suits it.

onnxruntime's u8 x s8 integer GEMMs (the int8 encoder's) run on VNNI (``vpdpbusd``, 32-bit sums)
where the CPU has it, and otherwise on AVX2 / AVX-512BW ``vpmaddubsw``, which adds pairs of
products into *saturating* int16: two full-range products (255 x 127 x 2) overflow, and the
vectors come out wrong (min cosine 0.92 on all-MiniLM-L6-v2 on an AVX2 box, BENCHMARKS.md). So
an int8 export is made for a target: ``vnni`` keeps full-range 8-bit weights, ``avx2`` keeps the
sums in range (see ``bge_export.optimize.quantize_int8``).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
"""Either gives onnxruntime's u8 x s8 kernels 32-bit accumulation (AVX-512 VNNI, or AVX-VNNI on newer cores)."""


class Int8Target(str, Enum):
    """The CPU an int8 export is made for (``--int8-target``)."""

    AVX2 = "avx2"  # x86 without VNNI (Intel before Cascade Lake, AMD Zen 2-3); also the choice off x86
    VNNI = "vnni"  # x86 with AVX-512 VNNI or AVX-VNNI (Intel Cascade Lake and later, AMD Zen 4 and later)


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set facts that change what int8 computes, read once from the kernel's view of the CPU."""

    machine: str
    flags: frozenset[str]

    @classmethod
    def read(cls, cpuinfo: Path = CPUINFO) -> CpuFeatures:
        flags: frozenset[str] = frozenset()
        try:
            for line in cpuinfo.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86, arm64
                    flags = frozenset(value.split())
                    break
        except OSError:
            pass
        return cls(machine=platform.machine() or "unknown", flags=flags)

    @property
    def x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i686", "i386")

    @property
    def vnni(self) -> bool:
        return any(flag in self.flags for flag in VNNI_FLAGS)

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    def int8_target(self) -> Int8Target:
        """The int8 scheme for this CPU: full-range weights only where VNNI keeps the sums exact."""
        return Int8Target.VNNI if self.x86 and self.vnni else Int8Target.AVX2

    def describe(self) -> str:
        """One phrase for logs and test output, e.g. ``x86_64: avx2, no avx512, no vnni``."""
        if not self.x86:
            return f"{self.machine}: {'dot-product' if 'asimddp' in self.flags else 'no dot-product'} int8"
        parts = ["avx2" if "avx2" in self.flags else "no avx2", "avx512" if self.avx512 else "no avx512"]
        vnni = [flag for flag in VNNI_FLAGS if flag in self.flags]
        parts.append(f"vnni ({', '.join(vnni)})" if vnni else "no vnni")
        if "amx_int8" in self.flags:
            parts.append("amx_int8")
        return f"{self.machine}: {', '.join(parts)}"


def this_cpu() -> CpuFeatures:
    return CpuFeatures.read()
