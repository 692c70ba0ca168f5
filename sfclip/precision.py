"""Which floating-point dtype a device computes fast: the one rule behind every "auto" dtype in sfclip.

bf16 is worth it only where the hardware has bf16 instructions. On a CPU without them (AVX2-only x86, or
AVX-512 without the BF16 extension) a bf16 matmul is emulated: 220 ms against 3.4 ms in fp32 for
512x512 on an AVX2 AMD EPYC, 2 threads (65x slower; `python benchmarks/cpu_bf16.py`). So "auto" means
bf16 on CUDA devices that support it and on CPUs with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm),
and fp32 everywhere else.

The environment variable `SFCLIP_BF16` forces the rule either way on every device (`1`: bf16, `0`: fp32,
`auto` or unset: the hardware rule), so that any machine can run the other path on purpose: the test suite
runs with `SFCLIP_BF16=0` unless told otherwise, and CI runs the precision-sensitive tests again with
`SFCLIP_BF16=1`. It changes only what "auto" means; an explicit dtype in a config (`train.precision=fp32`,
`teachers[].dtype=bfloat16`) is always honoured.
"""

from __future__ import annotations

import os
import platform
from functools import cache

import torch

__all__ = ["ENV", "native_bf16", "bf16_reason", "auto_dtype", "forced", "hardware_bf16"]

ENV = "SFCLIP_BF16"
_FORCED = {"1": True, "0": False, "auto": None, "": None}


def forced() -> bool | None:
    """What `SFCLIP_BF16` forces: True (bf16), False (fp32) or None (the hardware rule)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value not in _FORCED:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: use 1 (bf16), 0 (fp32) or auto (bf16 only where native)")
    return _FORCED[value]


@cache
def _cpu_bf16() -> tuple[bool, str]:
    cap = torch.backends.cpu.get_cpu_capability()
    checks = [("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported")]
    for label, fn in checks:
        probe = getattr(torch.cpu, fn, None)
        if probe is not None and probe():
            if not cap.upper().startswith("AVX512"):
                # e.g. ATEN_CPU_CAPABILITY=avx2: torch was told not to use the AVX-512 kernels that bf16 needs
                return False, f"CPU has {label} but torch runs its {cap} kernels, where bf16 is emulated and slow"
            return True, f"CPU has {label} (torch capability {cap})"
    if platform.machine().lower() in ("aarch64", "arm64"):
        try:
            flags = open("/proc/cpuinfo", encoding="utf-8").read().split()
        except OSError:
            flags = []
        if "bf16" in flags:
            return True, f"Arm CPU with the BF16 extension (torch capability {cap})"
    return False, f"CPU without bf16 instructions (torch capability {cap}), where bf16 is emulated and slow"


def hardware_bf16(device: torch.device | str) -> tuple[bool, str]:
    """(the hardware of `device` computes bf16 natively, a short reason), ignoring `SFCLIP_BF16`."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA device with bf16" if ok else "CUDA device without bf16 support"
    if device.type == "cpu":
        return _cpu_bf16()
    return False, f"{device.type} device: bf16 not assumed"


def bf16_reason(device: torch.device | str) -> tuple[bool, str]:
    """(auto means bf16 on `device`, a short reason to log): `SFCLIP_BF16` where set, else the hardware."""
    force = forced()
    if force is not None:
        return force, f"{ENV}={os.environ[ENV].strip()} forces {'bf16' if force else 'fp32'}"
    return hardware_bf16(device)


def native_bf16(device: torch.device | str) -> bool:
    """True where "auto" means bf16 on `device`: CUDA with bf16, CPUs with bf16 instructions, or `SFCLIP_BF16=1`."""
    return bf16_reason(device)[0]


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype that "auto" resolves to on `device`: bf16 where native (or forced), fp32 elsewhere."""
    return torch.bfloat16 if native_bf16(device) else torch.float32
