"""Reading the CPU's int8-relevant features and the int8 scheme that follows from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bge_model_repository.cpu import CpuFeatures, Int8Target

EPYC_ZEN3 = "fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni"
CASCADE_LAKE = "sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni"
ALDER_LAKE = "sse4_2 avx avx2 fma avx_vnni"
SKYLAKE_SP = "sse4_2 avx avx2 fma avx512f avx512bw avx512vl"


def _cpu(tmp_path: Path, flags: str, machine: str = "x86_64", key: str = "flags") -> CpuFeatures:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: test\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    return CpuFeatures(machine=machine, flags=CpuFeatures.read(info).flags)


@pytest.mark.parametrize(
    ("flags", "target", "described"),
    [
        (EPYC_ZEN3, Int8Target.AVX2, "x86_64: avx2, no avx512, no vnni"),
        (SKYLAKE_SP, Int8Target.AVX2, "x86_64: avx2, avx512, no vnni"),  # AVX-512BW still saturates
        (CASCADE_LAKE, Int8Target.VNNI, "x86_64: avx2, avx512, vnni (avx512_vnni)"),
        (ALDER_LAKE, Int8Target.VNNI, "x86_64: avx2, no avx512, vnni (avx_vnni)"),
    ],
)
def test_the_int8_scheme_follows_vnni(tmp_path: Path, flags: str, target: Int8Target, described: str) -> None:
    cpu = _cpu(tmp_path, flags)
    assert (cpu.int8_target(), cpu.describe()) == (target, described)


def test_arm_takes_the_portable_scheme(tmp_path: Path) -> None:
    cpu = _cpu(tmp_path, "fp asimd asimddp sve", machine="aarch64", key="Features")
    assert cpu.int8_target() is Int8Target.AVX2 and cpu.describe() == "aarch64: dot-product int8"


def test_unreadable_cpuinfo_means_no_features(tmp_path: Path) -> None:
    cpu = CpuFeatures.read(tmp_path / "absent")
    assert cpu.flags == frozenset() and cpu.int8_target() is Int8Target.AVX2


def test_this_machine_is_read(cpu: CpuFeatures) -> None:
    """Every x86 machine this project runs on has AVX2; the header of the test run names the rest."""
    assert cpu.machine
    if cpu.x86:
        assert "avx2" in cpu.flags, cpu.describe()
