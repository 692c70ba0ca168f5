"""sfclip's plain-CLIP training step against OpenCLIP's, same architecture, batch and threads, one run.

Both dual encoders are built from one sfclip preset: pre-norm ViT with a class token (OpenCLIP with
`no_ln_pre`, since sfclip's ViT has no pre-LayerNorm), a causal 12-layer text transformer pooled at the
end-of-text token (CLIP's `argmax` pooling; sfclip `text.causal=true, text.pool=eos`), MLP ratio 4, the
same head width, context length, vocabulary and joint width. Each step is forward, symmetric InfoNCE
(sfclip's `Objective` with p = 0 and no teachers; OpenCLIP's `ClipLoss`), backward and AdamW with the
same hyperparameters. The two are timed round by round in one process (on a CPU by this process's
CPU time with one thread, see benchmarks/harness.py; wall time beside); peak memory comes from one
fresh process per implementation. Parameter counts are printed to show the match.

Needs open_clip_torch, so run it from the benchmark environment (benchmarks/README.md):

    benchmarks/.venv-openclip/bin/python benchmarks/openclip_compare.py                 # CPU: vit-t-16, batch 32
    benchmarks/.venv-openclip/bin/python benchmarks/openclip_compare.py --device cuda --model vit-b-16 \
        --batch 256 --precision bf16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from sfclip.models import ModelConfig, create_model, model_config
from sfclip.objective import Objective, ObjectiveConfig
from sfclip.train.optim import OptimConfig, build_optimizer

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def clip_text_overrides(cfg: ModelConfig) -> dict:
    """CLIP's text tower in sfclip terms: causal, pooled at the end-of-text id (the largest id)."""
    return {"causal": True, "pool": "eos", "eos_id": cfg.text.vocab_size - 1, "pad_id": 0}


def build_sfclip(name: str, device: torch.device, optim: OptimConfig):
    cfg = model_config(name)
    student = create_model(name, text=clip_text_overrides(cfg))
    obj = Objective(ObjectiveConfig(distill_fraction=0.0, teachers=[]), student, {}, [], None, MEAN, STD)
    obj = obj.to(device).train()
    return obj, build_optimizer(obj.student, optim)


def build_openclip(name: str, device: torch.device, optim: OptimConfig):
    """OpenCLIP's `CLIP` with the preset's shapes, and AdamW with OpenCLIP's own weight-decay groups."""
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = model_config(name)
    v, t = cfg.vision, cfg.text
    model = CLIP(cfg.embed_dim,
                 CLIPVisionCfg(layers=v.layers, width=v.width, head_width=v.width // v.heads, mlp_ratio=v.mlp_ratio,
                               patch_size=v.patch_size, image_size=v.image_size, no_ln_pre=True),
                 CLIPTextCfg(context_length=t.context_length, vocab_size=t.vocab_size, width=t.width, heads=t.heads,
                             layers=t.layers, mlp_ratio=t.mlp_ratio),
                 init_logit_scale=cfg.init_logit_scale).to(device).train()
    # open_clip_train/main.py: no decay for gains, biases and the temperature.
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if exclude(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in params if not exclude(n, p)], "weight_decay": optim.weight_decay}]
    # The same AdamW implementation as sfclip's `build_optimizer` (fused on CUDA and CPU), so that the
    # comparison is of the models: OpenCLIP's own trainer would use the slower foreach AdamW on a CPU.
    fused = device.type in ("cuda", "cpu") or None
    opt = torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, fused=fused)
    return model, ClipLoss(), opt


def clip_batch(name: str, batch: int, device: torch.device, full_length: bool = False, seed: int = 0) -> dict:
    """CLIP-tokenizer-shaped captions: start id, words, end id (the largest id), zero padding to the context."""
    cfg = model_config(name)
    S, T, V = cfg.vision.image_size, cfg.text.context_length, cfg.text.vocab_size
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((batch,), T) if full_length else torch.randint(T // 4, T // 2, (batch,), generator=g)
    ids = torch.randint(1, V - 2, (batch, T), generator=g)
    am = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[:, 0] = V - 2
    ids[torch.arange(batch), lengths - 1] = V - 1
    ids[am == 0] = 0
    out = {"image": torch.randn(batch, 3, S, S, generator=g), "input_ids": ids, "attention_mask": am}
    return {k: v.to(device) for k, v in out.items()}


def count_params(module: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def make_steps(name: str, device: torch.device, precision: str, batch: dict, which: tuple[str, ...]):
    """{impl: zero-argument training step} plus the built models, for timing and parameter counts."""
    optim = OptimConfig(warmup_steps=0)
    ac = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    steps, models = {}, {}
    if "sfclip" in which:
        obj, opt = build_sfclip(name, device, optim)

        def sf_step() -> float:
            with torch.autocast(**ac):
                loss = obj(batch)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())
        steps["sfclip"], models["sfclip"] = sf_step, obj.student
    if "openclip" in which:
        model, loss_fn, oopt = build_openclip(name, device, optim)

        def oc_step() -> float:
            with torch.autocast(**ac):
                img, txt, scale = model(batch["image"], batch["input_ids"])
                loss = loss_fn(img, txt, scale)
            loss.backward()
            oopt.step()
            oopt.zero_grad(set_to_none=True)
            # OpenCLIP's trainer clamps the temperature after the step; sfclip clamps inside the loss.
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)
            return float(loss.detach())
        steps["openclip"], models["openclip"] = oc_step, model
    return steps, models


def child(args) -> None:
    """One implementation in a fresh process: RSS after setup and peak RSS over a few steps."""
    device = torch.device(args.device)
    batch = clip_batch(args.model, args.batch, device, args.full_length)
    steps, _ = make_steps(args.model, device, args.precision, batch, (args.child,))
    setup = rss_mb()
    reset_peak_memory(device)
    for _ in range(3):
        steps[args.child]()
    emit_child_result({"setup_rss_mb": setup, "peak_mb": peak_memory_mb(device)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-t-16", help="sfclip preset whose shapes both implementations take")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads; default 1 on a CPU, see harness")
    ap.add_argument("--full-length", action="store_true", help="every caption fills the context (no padding)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    ap.add_argument("--child", choices=["sfclip", "openclip"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default="benchmarks/results/openclip_compare.json")
    args = ap.parse_args()
    args.threads = set_threads(args.threads, args.device)
    if args.child:
        return child(args)
    device = torch.device(args.device)
    state_before = machine_state()
    batch = clip_batch(args.model, args.batch, device, args.full_length)
    steps, models = make_steps(args.model, device, args.precision, batch, ("sfclip", "openclip"))
    params = {k: {"trainable": count_params(m), "total": count_params(m, False)} for k, m in models.items()}
    times = interleaved(steps, args.rounds, device)
    memory = {}
    if not args.no_memory:
        base = [__file__, "--model", args.model, "--batch", str(args.batch), "--device", args.device,
                "--precision", args.precision, "--threads", str(args.threads)]
        base += ["--full-length"] if args.full_length else []
        memory = {k: run_child(base + ["--child", k]) for k in steps}
    main_t = times.primary(device)
    rows = []
    for k in steps:
        med = median(main_t[k])
        rows.append({"implementation": k, "ms_wall": round(1000 * median(times.wall[k])),
                     "ms_cpu": round(1000 * median(times.cpu[k])) if device.type == "cpu" else "-",
                     "samples_per_s": round(args.batch / med, 2),
                     "throughput_vs_openclip": round(1 / round_ratio(main_t, k, "openclip"), 3),
                     "throughput_vs_openclip_wall": round(1 / round_ratio(times.wall, k, "openclip"), 3),
                     "trainable_params": params[k]["trainable"], "total_params": params[k]["total"],
                     "setup_rss_mb": round(memory[k]["setup_rss_mb"]) if memory else "-",
                     "peak_mb": round(memory[k]["peak_mb"]) if memory else "-"})
    cfg = model_config(args.model)
    print(f"model {args.model} (image {cfg.vision.image_size}, patch {cfg.vision.patch_size}, vision "
          f"{cfg.vision.layers}x{cfg.vision.width}, text {cfg.text.layers}x{cfg.text.width}, context "
          f"{cfg.text.context_length}), batch {args.batch}, {args.device} {args.precision}, threads {args.threads}, "
          f"captions {'full length' if args.full_length else 'T/4..T/2 tokens'}, {args.rounds} interleaved rounds; "
          f"samples_per_s and throughput_vs_openclip from {'CPU' if device.type == 'cpu' else 'wall'} time; "
          f"machine {state_before}")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "machine_before": state_before, "machine_after": machine_state(),
                          "rows": rows, "wall_s": times.wall, "cpu_s": times.cpu})


if __name__ == "__main__":
    main()
