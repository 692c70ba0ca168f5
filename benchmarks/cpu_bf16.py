"""Is bf16 worth it on this CPU? A 512 x 512 matmul in fp32 and in bf16, side by side in one process.

    python benchmarks/cpu_bf16.py [--size 512] [--rounds 20]

Prints the CPU model, torch's CPU capability, what `sfclip.precision` decides for "auto", and the median
time of each dtype with their ratio. On a CPU without bf16 instructions bf16 is emulated, which is why
teachers default to `dtype: auto` (docs/defaults.md).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfclip.precision import bf16_reason, hardware_bf16


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    mats = {name: [torch.randn(args.size, args.size).to(getattr(torch, name)) for _ in range(2)] for name in times}
    for _ in range(args.rounds):  # interleaved, so load changes hit both dtypes alike
        for name, (a, b) in mats.items():
            t0 = time.perf_counter()
            a @ b
            times[name].append(time.perf_counter() - t0)
    fp32, bf16 = (statistics.median(times[k]) * 1e3 for k in ("float32", "bfloat16"))
    native, why = bf16_reason("cpu")
    hw, hw_why = hardware_bf16("cpu")
    print(f"CPU: {cpu_model()}, torch capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"hardware: {'native' if hw else 'no'} bf16 ({hw_why}); auto -> {'bf16' if native else 'fp32'} ({why})")
    print(f"{args.size}x{args.size} matmul: fp32 {fp32:.2f} ms, bf16 {bf16:.2f} ms, bf16/fp32 {bf16 / fp32:.1f}x")


if __name__ == "__main__":
    main()
