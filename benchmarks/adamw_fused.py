"""Fused against foreach AdamW on a CPU: the optimizer step alone, for a preset's trainable parameters.

    python benchmarks/adamw_fused.py [--model vit-t-16] [--rounds 5]

sfclip's `build_optimizer` uses the fused implementation on CUDA and on a CPU; this measures what that buys on
a CPU, where PyTorch's default is foreach. One torch thread, CPU time, medians over interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfclip.models import create_model
from sfclip.train.optim import param_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-t-16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per round")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = create_model(args.model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opts = {name: torch.optim.AdamW(param_groups(model, 0.2), lr=5e-4, fused=fused)
            for name, fused in (("fused", True), ("foreach", None))}
    ms: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(args.rounds):
        for name, opt in opts.items():
            opt.step()  # warm
            t0 = time.process_time()
            for _ in range(args.steps):
                opt.step()
            ms[name].append((time.process_time() - t0) / args.steps * 1000)
    n = sum(p.numel() for p in model.parameters())
    med = {name: statistics.median(v) for name, v in ms.items()}
    print(f"{args.model}, {n:,} parameters, one thread, CPU ms per optimizer step (median of {args.rounds} rounds)")
    print("| implementation | ms/step |\n|---|---|")
    for name, v in med.items():
        print(f"| {name} | {v:.1f} |")


if __name__ == "__main__":
    main()
