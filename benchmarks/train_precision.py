"""What `train.precision` should "auto" mean on this CPU: a training step in bf16 autocast against fp32.

Times a full step (forward, backward, AdamW) of one student in fp32 and under bf16 autocast, interleaved
round by round in one process, for plain CLIP and for SF-CLIP as the demo trains it (cached targets, half
the batch distilled, the summary term). By default the student is the demo's (`vit-demo-8` at 48 px with
the demo's overrides, batch 32, two threads as `sfclip demo` runs); `--model vit-t-16` and the like time a
registry preset as it is. It prints the CPU, torch's capability and what `sfclip.precision` says of it
beside the ratios; a ratio below 1 means bf16 is faster.

    python benchmarks/train_precision.py                                # the demo's student, 2 threads
    python benchmarks/train_precision.py --model vit-t-16 --batch 32 --threads 2
    # what an AVX2-only machine does, on an AVX-512 one: torch's and oneDNN's kernels limited to AVX2
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/train_precision.py --rounds 3

The loss after the timed steps is printed for both precisions (same data, same initial weights), a first
check that bf16 trains the same model; the demo's metrics under each precision come from the demo itself
(`docs/defaults.md`, `train.precision`).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import build_setting, make_batch, make_teachers, step_fn
from benchmarks.cpu_bf16 import cpu_model
from benchmarks.harness import (
    interleaved,
    machine_state,
    markdown_table,
    median,
    round_ratio,
    set_threads,
    write_json,
)
from sfclip.precision import bf16_reason, hardware_bf16
from sfclip.train.optim import OptimConfig, build_optimizer


def demo_student() -> tuple[str, dict]:
    from sfclip.demo.settings import demo_settings

    s = demo_settings()
    return s.model, dict(s.overrides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="'demo' (the demo's student) or a registry preset")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the demo trains with 2)")
    ap.add_argument("--out", default="benchmarks/results/train_precision.json")
    args = ap.parse_args()
    args.threads = set_threads(args.threads, "cpu")
    device = torch.device("cpu")
    model, overrides = demo_student() if args.model == "demo" else (args.model, {})
    state_before = machine_state()
    teachers = make_teachers(model, device, torch.float32, overrides)
    arms = {"clip": dict(p=0.0, teachers_on=False),
            "sfclip cached p=0.5 +summary": dict(p=0.5, cached=True, summary_weight=1.0)}
    runs, batches = {}, {}
    for arm, kw in arms.items():
        obj, tok, opt, cached = build_setting(model, teachers, device, overrides=overrides, **kw)
        batches[arm] = make_batch(tok, model, args.batch, device, teachers, overrides)
        for prec in ("fp32", "bf16"):  # the same initial weights in both precisions
            o = copy.deepcopy(obj)
            runs[f"{arm} | {prec}"] = (o, build_optimizer(o.student, OptimConfig(warmup_steps=0)), cached, prec, arm)
    losses: dict[str, float] = {}

    def step(name):
        o, opt, cached, prec, arm = runs[name]
        losses[name] = step_fn(o, opt, batches[arm], cached, prec)

    for name in runs:  # warm-up
        step(name)
    times = interleaved({n: (lambda n=n: step(n)) for n in runs}, args.rounds, device, warmup=0)
    hw, hw_why = hardware_bf16("cpu")
    native, why = bf16_reason("cpu")
    rows = []
    for arm in arms:
        f, b = f"{arm} | fp32", f"{arm} | bf16"
        rows.append({"setting": arm, "fp32 ms (wall)": round(1000 * median(times.wall[f]), 1),
                     "bf16 ms (wall)": round(1000 * median(times.wall[b]), 1),
                     "bf16/fp32 (wall)": round(round_ratio(times.wall, b, f), 3),
                     "bf16/fp32 (cpu)": round(round_ratio(times.cpu, b, f), 3),
                     f"loss after {args.rounds + 1} steps fp32 / bf16": f"{losses[f]:.4f} / {losses[b]:.4f}"})
    head = (f"CPU: {cpu_model()}, torch capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} "
            f"threads, torch {torch.__version__}; hardware bf16: {hw} ({hw_why}); "
            f"auto -> {'bf16' if native else 'fp32'} ({why})")
    print(head)
    print(f"student {model} {overrides or ''}, batch {args.batch}, {args.rounds} rounds (median; ratio = median of "
          "per-round ratios)")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "header": head, "rows": rows, "wall": times.wall, "cpu": times.cpu,
                          "machine_before": state_before, "machine_after": machine_state()})


if __name__ == "__main__":
    main()
