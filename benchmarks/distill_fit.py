"""Distillation only: how far the demo student fits DINOv2-S/14's patch features on fixed scenes.

    python benchmarks/distill_fit.py --steps 600 --positions all --lr 2e-3
    python benchmarks/distill_fit.py --steps 200 --positions masked --lr 1e-3

Renders `--n` train scenes at 112 px (1-3 objects by default), caches the teacher's 8x8 patch tokens in
--cache, then trains the demo's 64 px student with the real Objective (contrastive weight 0, every row
distilled) and prints the loss on the masked view every 50 steps, the final loss of the unmasked student on
every position, and the three reference levels (dataset mean, per-position mean, per-image mean).
docs/defaults.md (`distill_positions`) quotes it; tests/test_distill_fit.py is the bounded version.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfclip.build import StudentConfig, build_student
from sfclip.demo.scenes import SceneConfig, render_scenes
from sfclip.losses.distill import token_loss
from sfclip.masking import ImageMaskConfig
from sfclip.objective import Objective, ObjectiveConfig
from sfclip.teachers import TeacherConfig, build_teacher
from sfclip.teachers.cached import CachedVisionTeacher
from sfclip.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # make_tiny_tokenizer
torch.set_num_threads(int(os.environ.get("T", "2")))

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=256)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--loss", default="cosine")
ap.add_argument("--norm", default="layernorm")
ap.add_argument("--positions", default="masked")
ap.add_argument("--ratio", type=float, default=0.4)
ap.add_argument("--mask", default="block")
ap.add_argument("--head", default="linear")
ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--scale", default="0.3,0.55")
ap.add_argument("--objs", default="1,3")
ap.add_argument("--wd", type=float, default=0.1)
ap.add_argument("--warm", type=int, default=30)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--width", type=int, default=128)
ap.add_argument("--cache", default="/tmp/sfclip_distill_fit")
a = ap.parse_args()

Path(a.cache).mkdir(parents=True, exist_ok=True)
cache = Path(a.cache) / f"targets_{a.n}_{a.scale}_{a.objs}.pt"
cfg = SceneConfig(
    object_scale=tuple(map(float, a.scale.split(","))), objects_per_scene=tuple(map(int, a.objs.split(",")))
)
if cache.exists():
    d = torch.load(cache)
else:
    sc = render_scenes("train", a.n, seed=0, cfg=cfg)
    x = torch.from_numpy(sc.images).permute(0, 3, 1, 2).float() / 255  # (N,3,112,112)
    t = build_teacher(
        TeacherConfig(name="dinov2", kind="vision", source="offline:dinov2-small"), student_grid=8
    )
    t0 = time.time()
    with torch.inference_mode():
        pt = torch.cat([t(x[i : i + 64])["patch"] for i in range(0, a.n, 64)])
    print("teacher", time.time() - t0, "s", pt.shape)
    d = {"images": x, "patch": pt.clone()}
    torch.save(d, cache)
x, tgt = d["images"], d["patch"]
tok_dir = Path(a.cache) / "tokenizer"
if not tok_dir.exists():
    from conftest import make_tiny_tokenizer

    make_tiny_tokenizer(tok_dir)
tok = Tokenizer(__import__("transformers").AutoTokenizer.from_pretrained(tok_dir), 16)
teachers = {"dinov2": CachedVisionTeacher("dinov2", 384, 112, 14)}
tcs = [TeacherConfig(name="dinov2", kind="vision", source="x", norm=a.norm, loss=a.loss, head=a.head)]
ov = {
    "embed_dim": 128,
    "vision.width": a.width,
    "vision.layers": a.layers,
    "vision.heads": 4,
    "text.width": 64,
    "text.layers": 1,
    "text.heads": 4,
    "text.context_length": 16,
}
torch.manual_seed(0)
student = build_student(
    StudentConfig(model="vit-demo-8", overrides=ov, text_embedding="own"), teachers, tok, tcs
)
ocfg = ObjectiveConfig(
    contrastive_weight=0.0,
    distill_fraction=1.0,
    teachers=tcs,
    distill_positions=a.positions,
    image_mask=ImageMaskConfig(kind=a.mask, ratio=a.ratio, min_block_frac=0.06),
)
MEAN, STD = [0.5] * 3, [0.25] * 3
obj = Objective(ocfg, student, teachers, tok.special_ids, tok.mask_id, MEAN, STD)
img64 = F.interpolate(x, size=64, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
img64 = (img64 - 0.5) / 0.25
head = student.heads["dinov2"]
# reference levels in the normalized target space
nt = head.normalize_target(tgt) if a.norm != "running" else (tgt - tgt.mean((0, 1))) / tgt.std((0, 1))


def L(pred):
    return token_loss(pred.expand_as(nt), nt, a.loss).mean().item()


refs = {
    "dataset_mean": L(nt.mean((0, 1), keepdim=True)),
    "position_mean": L(nt.mean(0, keepdim=True)),
    "image_mean": L(nt.mean(1, keepdim=True)),
}
print("refs", {k: round(v, 4) for k, v in refs.items()})
params = [p for p in obj.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.wd)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1, (s + 1) / a.warm) * 0.5 * (1 + np.cos(np.pi * min(s, a.steps) / a.steps))
)
ids = tok(["a photo"] * a.bs)
g = torch.Generator().manual_seed(0)
t0 = time.time()
hist = []
for step in range(a.steps):
    idx = torch.randint(a.n, (a.bs,), generator=g)
    batch = {"image": img64[idx], **ids, "targets": {"dinov2": {"patch": tgt[idx]}}}
    out = obj(batch)
    opt.zero_grad()
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    hist.append(out["dinov2_loss"].item())
    if step % 50 == 0 or step == a.steps - 1:
        print(step, round(float(np.mean(hist[-20:])), 4), f"{time.time() - t0:.0f}s", flush=True)
# final: unmasked prediction on all positions (what a downstream probe sees)
obj.eval()
with torch.no_grad():
    pred = head(student.visual(img64)["patch"])
print(f"final train(masked) {np.mean(hist[-20:]):.4f}  unmasked-all {L(pred):.4f}", "refs", refs)
