"""What masked distillation costs per training step and in peak memory, side by side in one run.

Times a full step (forward, backward, AdamW) of the same student under several objective settings:
plain CLIP, selective distillation at p = 0.25, 0.5, 1.0 with masked patches replaced (EVA-02) or
dropped (FLIP), the shared masked view, and cached teacher targets instead of live teachers. Teachers
are randomly initialised transformers models of the student's size (DINOv2 layout, BERT layout), built
in memory, so nothing is downloaded. Settings are interleaved round by round and each is reported as
its median step time and as ratios to two baselines, the numbers that survive a noisy shared machine
(the median over rounds of the ratio within a round; on a CPU, of this process's CPU time with one
thread, which other work on the machine does not inflate; wall-clock ratios are printed beside):

- `clip`: plain CLIP as one would train it, the text tower with its own trainable token table;
- `p=0`: the SF-CLIP student itself (inherited, frozen token table) with distillation off, so the
  ratio isolates what distillation adds.

With `--memory`, every setting also runs in a fresh process of its own (peak RSS only ever grows, so
one process cannot measure several settings) and reports its peak: RSS on CPU, allocated on CUDA.

    python benchmarks/objective_cost.py --memory                          # CPU defaults (vit-t-16, batch 32)
    python benchmarks/objective_cost.py --device cuda --model vit-b-16 --batch 256 --precision bf16 --memory
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import build_setting, make_batch, make_teachers, step_fn, with_dtype
from benchmarks.harness import (
    emit_child_result,
    interleaved,
    machine_state,
    markdown_table,
    median,
    peak_memory_mb,
    reset_peak_memory,
    round_ratio,
    rss_mb,
    run_child,
    set_threads,
    write_json,
)

SETTINGS = {
    "clip": dict(p=0.0, teachers_on=False),
    "p=0": dict(p=0.0),
    "p=0.25 replace": dict(p=0.25, mode="replace"),
    "p=0.25 replace, cached": dict(p=0.25, mode="replace", cached=True),
    "p=0.25 drop": dict(p=0.25, mode="drop"),
    "p=0.25 drop, cached": dict(p=0.25, mode="drop", cached=True),
    "p=0.25 replace, bf16 teachers": dict(p=0.25, mode="replace", teachers="bf16"),
    "p=0.25 drop, bf16 teachers": dict(p=0.25, mode="drop", teachers="bf16"),
    "p=0.5 replace": dict(p=0.5, mode="replace"),
    "p=1.0 replace": dict(p=1.0, mode="replace"),
    "p=1.0 drop": dict(p=1.0, mode="drop"),
    "shared drop 50%, p=0.25": dict(p=0.25, mode="drop", view="shared", ratio=0.5),
    "shared drop 50%, p=0.25, cached": dict(p=0.25, mode="drop", view="shared", ratio=0.5, cached=True),
}


def teacher_dtype(args) -> torch.dtype:
    return torch.bfloat16 if args.precision == "bf16" else torch.float32


def teacher_sets(args, device: torch.device) -> dict[str, dict]:
    """Teachers computing in the run's precision, and the same models computing in bf16."""
    teachers = make_teachers(args.model, device, teacher_dtype(args))
    return {"default": teachers, "bf16": with_dtype(teachers, torch.bfloat16)}


def build(name: str, args, sets: dict, device: torch.device):
    kw = dict(SETTINGS[name])
    return build_setting(args.model, sets[kw.pop("teachers", "default")], device, **kw)


def child(args) -> None:
    """One setting in a fresh process: RSS after setup, then the peak over three steps."""
    device = torch.device(args.device)
    sets = teacher_sets(args, device)
    obj, tok, opt, cached = build(args.child, args, sets, device)
    batch = make_batch(tok, args.model, args.batch, device, sets["default"])
    setup = rss_mb()
    reset_peak_memory(device)
    for _ in range(3):
        step_fn(obj, opt, batch, cached, args.precision)
    emit_child_result({"setup_rss_mb": setup, "peak_mb": peak_memory_mb(device)})


def measure_memory(args, names: list[str]) -> dict[str, dict]:
    base = [__file__, "--model", args.model, "--batch", str(args.batch), "--device", args.device,
            "--precision", args.precision, "--threads", str(args.threads)]
    return {n: run_child(base + ["--child", n]) for n in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-t-16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads; default 1 on a CPU, see harness")
    ap.add_argument("--only", nargs="*", help="subset of settings by name (clip and p=0 are always kept)")
    ap.add_argument("--memory", action="store_true", help="also measure each setting's peak in a fresh process")
    ap.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    ap.add_argument("--out", default="benchmarks/results/objective_cost.json")
    args = ap.parse_args()
    args.threads = set_threads(args.threads, args.device)
    if args.child:
        return child(args)
    device = torch.device(args.device)
    state_before = machine_state()
    names = ["clip", "p=0"] + [n for n in (args.only or SETTINGS) if n not in ("clip", "p=0")]
    sets = teacher_sets(args, device)
    runs = {n: build(n, args, sets, device) for n in names}
    batch = make_batch(runs["p=0"][1], args.model, args.batch, device, sets["default"])
    teacher_rows: dict[str, list[int]] = {}
    for n in names:  # record how many rows each teacher sees in one step (also a warm-up step)
        obj, _, opt, cached = runs[n]
        seen: list[int] = []
        hooks = [t.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0].shape[0]))
                 for t in obj.teachers.values()]
        step_fn(obj, opt, batch, cached, args.precision)
        teacher_rows[n] = seen
        for h in hooks:
            h.remove()
    steps = {n: (lambda r=runs[n]: step_fn(r[0], r[2], batch, r[3], args.precision)) for n in names}
    times = interleaved(steps, args.rounds, device, warmup=0)
    memory = measure_memory(args, names) if args.memory else {}
    clip_m = memory.get("clip", {}).get("peak_mb")
    main_t = times.primary(device)
    rows = []
    for n in names:
        row = {"setting": n, "ms_wall": round(1000 * median(times.wall[n])),
               "ms_cpu": round(1000 * median(times.cpu[n])) if device.type == "cpu" else "-",
               "vs_clip": round(round_ratio(main_t, n, "clip"), 3),
               "vs_clip_wall": round(round_ratio(times.wall, n, "clip"), 3),
               "vs_p0": round(round_ratio(main_t, n, "p=0"), 3), "teacher_rows": teacher_rows[n]}
        if memory:
            row["peak_mb"] = round(memory[n]["peak_mb"])
            row["peak_vs_clip"] = round(memory[n]["peak_mb"] / clip_m, 3)
        rows.append(row)
    clock = "CPU time" if device.type == "cpu" else "wall time"
    print(f"model {args.model}, batch {args.batch}, device {device}, precision {args.precision}, "
          f"{args.rounds} interleaved rounds, threads {args.threads}; vs_clip and vs_p0 from {clock} "
          f"(median of per-round ratios); machine {state_before}")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "machine_before": state_before, "machine_after": machine_state(),
                          "rows": rows, "wall_s": times.wall, "cpu_s": times.cpu, "memory": memory})


if __name__ == "__main__":
    main()
