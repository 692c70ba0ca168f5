"""Where SF-CLIP's extra step time goes: torch.profiler self CPU time by operator, minus plain CLIP's.

Profiles a few steps of `p=0` (the SF-CLIP student, distillation off) and of SF-CLIP settings, and
prints, per setting, the operators that account for the difference and the share of it spent in
matrix products and attention (the arithmetic the FLOP count predicts) against everything else (the
part code changes could still remove).

    python benchmarks/profile_overhead.py
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import build_setting, make_batch, make_teachers, step_fn
from benchmarks.harness import machine_state, markdown_table, set_threads, write_json

ARITHMETIC = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product", "aten::mkldnn_convolution",
              "aten::convolution_backward")
SETTINGS = {"p=0": dict(p=0.0), "p=0.25 replace": dict(p=0.25), "p=0.25 replace, cached": dict(p=0.25, cached=True)}


def op_times(obj, opt, batch, cached: bool, steps: int) -> collections.Counter:
    """Self CPU milliseconds per operator, averaged over `steps` profiled steps after one warm-up."""
    step_fn(obj, opt, batch, cached, "fp32")
    total: collections.Counter = collections.Counter()
    for _ in range(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step_fn(obj, opt, batch, cached, "fp32")
        for e in prof.key_averages():
            total[e.key] += e.self_cpu_time_total / 1e3 / steps
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-t-16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; default 1, see harness")
    ap.add_argument("--out", default="benchmarks/results/profile_overhead.json")
    args = ap.parse_args()
    args.threads = set_threads(args.threads, "cpu")
    state_before = machine_state()
    device = torch.device("cpu")
    teachers = make_teachers(args.model, device)
    runs = {n: build_setting(args.model, teachers, device, **kw) for n, kw in SETTINGS.items()}
    batch = make_batch(runs["p=0"][1], args.model, args.batch, device, teachers)
    ops = {n: op_times(obj, opt, batch, cached, args.steps) for n, (obj, _, opt, cached) in runs.items()}
    rows, detail = [], {}
    for name in list(SETTINGS)[1:]:
        diff = {k: ops[name][k] - ops["p=0"][k] for k in set(ops[name]) | set(ops["p=0"])}
        extra = sum(diff.values())
        arith = sum(v for k, v in diff.items() if k.startswith(ARITHMETIC))
        top = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:args.top]
        detail[name] = {k: round(v, 1) for k, v in top}
        rows.append({"setting": name, "extra_ms_over_p0": round(extra), "matmul_attention_ms": round(arith),
                     "matmul_attention_share": round(arith / extra, 3), "other_ms": round(extra - arith),
                     "largest_other": ", ".join(f"{k} {v:.0f}" for k, v in top if not k.startswith(ARITHMETIC))[:120]})
    print(f"model {args.model}, batch {args.batch}, threads {args.threads}, {args.steps} profiled steps each; "
          f"self CPU time by operator; machine {state_before}")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "machine_before": state_before, "machine_after": machine_state(),
                          "rows": rows, "largest_differences_ms": detail,
                          "ops_ms": {n: dict(c.most_common(40)) for n, c in ops.items()}})


if __name__ == "__main__":
    main()
