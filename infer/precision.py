"""The precision policy: which number format the network runs in, on which device, and why."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from infer.errors import UsageError


class Precision(str, Enum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


PRECISIONS = tuple(p.value for p in Precision)

# CPU features that make bfloat16 convolutions native rather than emulated: AVX-512 BF16 and AMX on
# x86 (/proc/cpuinfo "flags"), FEAT_BF16 on Arm ("Features").
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The first processor's feature flags from /proc/cpuinfo (or the text given); empty where unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    return bool(_NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def parse(value: str | Precision) -> Precision:
    try:
        return Precision(value)
    except ValueError:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {value!r}") from None


def choose(
    requested: str | Precision,
    device: str,
    *,
    native_bf16: bool,
    supported: tuple[Precision, ...] = (Precision.FP32, Precision.BF16, Precision.FP16),
    auto_half: tuple[str, ...] = ("bf16", "fp16"),
    engine: str = "this engine",
) -> Precision:
    """`auto`: bf16 where the device runs it natively and fast (`native_bf16`: GPUs from Ampere on; CPUs with
    AVX512_BF16/AMX whose measured rates favour it, infer/engines/cpu_rates.py),
    else fp16 on CUDA and fp32 on the CPU; only half formats the model family allows (`auto_half`)
    and the engine has. An explicit choice is kept, or refused when the engine cannot run it."""
    wanted = parse(requested)
    if wanted is Precision.AUTO:
        preference = []
        if native_bf16:
            preference.append(Precision.BF16)
        if device == "cuda":
            preference.append(Precision.FP16)
        for p in preference:
            if p.value in auto_half and p in supported:
                return p
        return Precision.FP32
    if wanted not in supported:
        allowed = ", ".join(p.value for p in supported)
        raise UsageError(f"{engine} on the {device.upper()} runs {allowed}, not {wanted.value}; use --engine torch or --precision auto")
    return wanted
