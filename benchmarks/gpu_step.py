"""GPU step time, model FLOP utilisation and peak memory: SF-CLIP, plain CLIP and OpenCLIP, one run.

For the H200 (one command, under 8 minutes; see benchmarks/README.md for the device call and the
wheels OpenCLIP needs there):

    python3 benchmarks/gpu_step.py --out $OUT/gpu_step.json                 # vit-b-16, batch 256, bf16

Rehearsal on a CPU (a tiny student, two rounds; proves the script runs end to end):

    python benchmarks/gpu_step.py --tiny

Every setting trains the ViT-B/16 student (text 12 x 512, context 77) in bf16 autocast with fused
AdamW: OpenCLIP's CLIP and sfclip's objective with the same shapes (CLIP text tower), then sfclip's
SF-CLIP settings with in-memory random teachers of the student's size running in bf16. Settings are
timed round by round (several steps per round, CUDA-synchronised). MFU = model FLOPs per step
(`sfclip.models.flops`: 3x forward matmul FLOPs with attention, both towers, the masked passes and
the heads; teacher forwards 1x) / step time / peak: the datasheet's dense bf16 rate and the rate of a
large bf16 matrix product measured at start. Peak memory per setting = its own weights, optimizer
state and teachers plus the step's peak above what was allocated before the step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import build_setting, make_batch, make_teachers, objective_flops, step_fn
from benchmarks.harness import machine_state, markdown_table, median, sync, write_json
from benchmarks.objective_cost import SETTINGS
from benchmarks.openclip_compare import build_openclip, build_sfclip, clip_batch
from sfclip.models import model_config
from sfclip.models.flops import step_flops
from sfclip.train.optim import OptimConfig

DATASHEET_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16, no sparsity
SF_SETTINGS = ["clip", "p=0", "p=0.25 replace", "p=0.25 replace, cached", "p=0.25 drop", "p=0.5 replace",
               "p=1.0 replace", "shared drop 50%, p=0.25"]


def measured_matmul_tflops(device: torch.device, n: int) -> float:
    """bf16 n x n x n product rate on random data, median of 10 after 3 warm-ups."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(13):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / median(times) / 1e12


def tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def static_mb(modules: list[torch.nn.Module], opt: torch.optim.Optimizer) -> float:
    """Weights of `modules` plus the optimizer's state tensors (Adam's two moments)."""
    params = {id(p): p for m in modules for p in m.parameters()}
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    return tensor_mb(params.values()) + tensor_mb(state)


def build_all(args, device: torch.device) -> dict:
    """name -> dict(step, flops, modules, opt) for every setting."""
    name, B, runs = args.model, args.batch, {}
    T = model_config(name).text.context_length
    clip_data = clip_batch(name, B, device)
    ac = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    optim = OptimConfig(warmup_steps=0)
    try:
        model, loss_fn, oopt = build_openclip(name, device, optim)

        def oc_step() -> None:
            with torch.autocast(**ac):
                img, txt, scale = model(clip_data["image"], clip_data["input_ids"])
                loss = loss_fn(img, txt, scale)
            loss.backward()
            oopt.step()
            oopt.zero_grad(set_to_none=True)
        runs["openclip"] = dict(step=oc_step, flops=step_flops(model_config(name), B)["total"], modules=[model],
                                opt=oopt)
    except Exception as e:  # noqa: BLE001 - a missing or mismatched open_clip must not cost the other rows
        print(f"OpenCLIP unavailable ({type(e).__name__}: {e}); its row is left out")
    obj, sopt = build_sfclip(name, device, optim)

    def sf_step(obj=obj, sopt=sopt) -> None:
        with torch.autocast(**ac):
            loss = obj(clip_data)["loss"]
        loss.backward()
        sopt.step()
        sopt.zero_grad(set_to_none=True)
    runs["sfclip, OpenCLIP's shapes"] = dict(step=sf_step, flops=step_flops(obj.student.cfg, B)["total"],
                                              modules=[obj], opt=sopt)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    teachers = make_teachers(name, device, dtype)
    batch = None
    for s in SF_SETTINGS:
        kw = {k: v for k, v in SETTINGS[s].items() if k != "teachers"}  # teachers already run in bf16 here
        obj, tok, opt, cached = build_setting(name, teachers, device, **kw)
        batch = batch if batch is not None else make_batch(tok, name, B, device, teachers)
        mods = [obj] if not cached else [obj.student]
        runs[s] = dict(step=lambda o=obj, op=opt, c=cached, b=batch: step_fn(o, op, b, c, args.precision),
                       flops=objective_flops(obj, B, cached, T)["total"], modules=mods, opt=opt)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-b-16")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="steps per setting per round")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--peak-tflops", type=float, default=DATASHEET_BF16_TFLOPS)
    ap.add_argument("--tiny", action="store_true", help="CPU rehearsal: test-tiny, batch 8, 2 rounds of 1 step")
    ap.add_argument("--out", default="benchmarks/results/gpu_step.json")
    args = ap.parse_args()
    if args.tiny:
        args.model, args.batch, args.rounds, args.steps = "test-tiny", 8, 2, 1
        args.device = "cpu" if not torch.cuda.is_available() else args.device
    device = torch.device(args.device)
    start = time.perf_counter()
    state_before = machine_state()
    matmul = measured_matmul_tflops(device, 8192 if device.type == "cuda" else 256)
    runs = build_all(args, device)
    print(f"built {len(runs)} settings in {time.perf_counter() - start:.0f}s", flush=True)
    memory = {}
    for name, r in list(runs.items()):  # warm-up, and each setting's memory: static + the step's own peak
        try:
            r["step"]()
        except torch.cuda.OutOfMemoryError as e:  # one setting too large must not cost the others
            print(f"{name}: out of memory ({e}); left out")
            runs.pop(name)
            torch.cuda.empty_cache()
            continue
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        r["step"]()
        sync(device)
        if device.type == "cuda":
            step_peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            memory[name] = static_mb(r["modules"], r["opt"]) + step_peak
    times: dict[str, list[float]] = {n: [] for n in runs}
    for _ in range(args.rounds):
        for name, r in runs.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                r["step"]()
            sync(device)
            times[name].append((time.perf_counter() - t0) / args.steps)
    base = median(times["clip"]) if "clip" in times else float("nan")
    rows = []
    for name, r in runs.items():
        t = median(times[name])
        achieved = r["flops"] / t / 1e12
        rows.append({"setting": name, "ms_per_step": round(1000 * t, 2), "samples_per_s": round(args.batch / t, 1),
                     "vs_clip": round(t / base, 3), "model_gflop_per_step": round(r["flops"] / 1e9, 2),
                     "achieved_tflops": round(achieved, 2), "mfu_datasheet": round(achieved / args.peak_tflops, 3),
                     "mfu_measured_matmul": round(achieved / matmul, 3),
                     "peak_mem_gb": round(memory[name] / 1024, 2) if memory else "n/a (CPU)"})
    print(f"model {args.model}, batch {args.batch}, {device} {args.precision}, {args.rounds} rounds x {args.steps} "
          f"steps; bf16 matmul measured {matmul:.0f} TFLOP/s, datasheet {args.peak_tflops:.0f}; "
          f"total {time.perf_counter() - start:.0f}s; machine {state_before}")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "machine_before": state_before, "machine_after": machine_state(),
                          "matmul_tflops": matmul, "rows": rows, "times_s": times, "memory_mb": memory})


if __name__ == "__main__":
    main()
