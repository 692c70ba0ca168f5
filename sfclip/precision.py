"""Which floating-point dtype a device computes fast: the one rule behind every "auto" dtype in sfclip.

bf16 is worth it only where the hardware has bf16 instructions. On a CPU without them (AVX2-only x86, or
AVX-512 without the BF16 extension) a bf16 matmul is emulated: 220 ms against 3.4 ms in fp32 for
512x512 on an AVX2 AMD EPYC, 2 threads (65x slower; `python benchmarks/cpu_bf16.py`). So "auto" means
bf16 on CUDA devices that support it and on CPUs with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm),
and fp32 everywhere else.
"""

from __future__ import annotations

import platform
from functools import cache

import torch

__all__ = ["native_bf16", "bf16_reason", "auto_dtype"]


@cache
def _cpu_bf16() -> tuple[bool, str]:
    cap = torch.backends.cpu.get_cpu_capability()
    checks = [("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported")]
    for label, fn in checks:
        probe = getattr(torch.cpu, fn, None)
        if probe is not None and probe():
            return True, f"CPU has {label} (torch capability {cap})"
    if platform.machine().lower() in ("aarch64", "arm64"):
        try:
            flags = open("/proc/cpuinfo", encoding="utf-8").read().split()
        except OSError:
            flags = []
        if "bf16" in flags:
            return True, f"Arm CPU with the BF16 extension (torch capability {cap})"
    return False, f"CPU without bf16 instructions (torch capability {cap}), where bf16 is emulated and slow"


def bf16_reason(device: torch.device | str) -> tuple[bool, str]:
    """(bf16 is native on `device`, a short reason to log)."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA device with bf16" if ok else "CUDA device without bf16 support"
    if device.type == "cpu":
        return _cpu_bf16()
    return False, f"{device.type} device: bf16 not assumed"


def native_bf16(device: torch.device | str) -> bool:
    """True where `device` computes bf16 in hardware (CUDA with bf16, CPUs with bf16 instructions)."""
    return bf16_reason(device)[0]


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype that "auto" resolves to on `device`: bf16 where native, fp32 elsewhere."""
    return torch.bfloat16 if native_bf16(device) else torch.float32
