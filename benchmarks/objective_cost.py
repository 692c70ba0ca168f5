"""What masked distillation costs per training step, side by side in one run.

Times a full step (forward, backward, AdamW) of the same student under several objective settings:
plain CLIP, selective distillation at p = 0, 0.25, 0.5, 1.0 with masked patches replaced (EVA-02) or
dropped (FLIP), the shared masked view, and cached teacher targets instead of live teachers. Teachers
are randomly initialised transformers models of the student's size (DINOv2 layout, BERT layout), built
in memory, so nothing is downloaded. Settings are interleaved round by round and each is reported as
its median step time and as a ratio to plain CLIP, the number that survives a noisy shared machine.

    python benchmarks/objective_cost.py                       # CPU defaults (vit-t-16, batch 32)
    python benchmarks/objective_cost.py --device cuda --model vit-b-16 --batch 256 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (build_setting, make_batch, make_teachers, markdown_table,  # noqa: E402
                               peak_memory_mb, reset_peak_memory, step_fn)

SETTINGS = {
    "clip": dict(p=0.0, teachers_on=False),
    "p=0 (teachers loaded)": dict(p=0.0),
    "p=0.25 replace": dict(p=0.25, mode="replace"),
    "p=0.25 drop": dict(p=0.25, mode="drop"),
    "p=0.5 replace": dict(p=0.5, mode="replace"),
    "p=1.0 replace": dict(p=1.0, mode="replace"),
    "p=1.0 drop": dict(p=1.0, mode="drop"),
    "shared drop 50% (p=0.25)": dict(p=0.25, mode="drop", view="shared", ratio=0.5),
    "p=0.25 replace, cached targets": dict(p=0.25, mode="replace", cached=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-t-16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="subset of settings by name")
    ap.add_argument("--out", default="benchmarks/results/objective_cost.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.only or list(SETTINGS)
    teachers = make_teachers(args.model, device)
    runs = {n: build_setting(args.model, teachers, device, **SETTINGS[n]) for n in names}
    batch = make_batch(runs[names[0]][1], args.model, args.batch, device, teachers)
    times: dict[str, list[float]] = {n: [] for n in names}
    teacher_rows: dict[str, list[int]] = {}
    memory: dict[str, float] = {}
    for n in names:  # warm-up, and record how many rows each teacher saw in one step
        obj, _, opt, cached = runs[n]
        seen: list[int] = []
        hooks = [t.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0])) for t in obj.teachers.values()]
        reset_peak_memory(device)
        step_fn(obj, opt, batch, cached, args.precision)
        memory[n] = peak_memory_mb(device) if device.type == "cuda" else float("nan")
        teacher_rows[n] = seen
        for h in hooks:
            h.remove()
    for _ in range(args.rounds):
        for n in names:
            obj, _, opt, cached = runs[n]
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step_fn(obj, opt, batch, cached, args.precision)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[n].append(time.perf_counter() - t0)
    base = statistics.median(times[names[0]])
    rows = []
    for n in names:
        med = statistics.median(times[n])
        rows.append({"setting": n, "ms_per_step": round(1000 * med, 1), "ratio_vs_clip": round(med / base, 3),
                     "teacher_rows_per_step": teacher_rows[n], "peak_mem_mb": round(memory[n], 1) if device.type == "cuda" else "n/a (see memory.py)"})
    print(f"model {args.model}, batch {args.batch}, device {device}, precision {args.precision}, "
          f"{args.rounds} interleaved rounds, threads {torch.get_num_threads()}")
    print(markdown_table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
