"""Supervised ceiling of a scene regime: the demo student's image tower trained on class labels.

    python benchmarks/demo_ceiling.py --n 8000 --steps 2000 --size 48 --bgs grass,gravel,moon,brick
    python benchmarks/demo_ceiling.py --n 3000 --steps 900 --size 48 --bgs grass,gravel,moon,brick --places 0 \
        --classes 0,1,3,5,8,9   # the demo's regime

Renders `--n` train scenes and 500 test scenes (single object by default, scale 0.6-0.95), prints the caption
shortcut (unique in a batch of 32 without the class) and the test top-1 of a linear classifier on the class
token every 200 steps (batch 32, AdamW, 10% warmup, cosine). How docs/demo.md's regime was chosen; the demo's
own ceiling at its exact budget is `sfclip demo --references`. Threads: T=1 (default) or T=2.
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from sfclip.demo.scenes import SceneConfig, render_scenes
from sfclip.models import create_model

torch.set_num_threads(int(os.environ.get("T", "1")))

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--steps", type=int, default=800)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--scale", default="0.6,0.95")
ap.add_argument("--objs", default="1,1")
ap.add_argument("--bgs", default="")
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--patch", type=int, default=8)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--width", type=int, default=128)
ap.add_argument("--pool", default="cls")
ap.add_argument("--colours", default="")
ap.add_argument("--places", type=int, default=1, help="0: captions without places (the demo's)")
ap.add_argument("--classes", default="", help="label ids to keep, e.g. 0,1,3,5,8,9 (the demo's)")
a = ap.parse_args()
kw = dict(
    object_scale=tuple(map(float, a.scale.split(","))), objects_per_scene=tuple(map(int, a.objs.split(",")))
)
if a.bgs:
    kw["backgrounds"] = tuple(a.bgs.split(","))
if a.colours:
    kw["colours"] = tuple(a.colours.split(","))
kw["caption_places"] = bool(a.places)
if a.classes:
    kw["classes"] = tuple(int(c) for c in a.classes.split(","))
cfg = SceneConfig(**kw)
t0 = time.time()
tr = render_scenes("train", a.n, seed=0, cfg=cfg)
te = render_scenes("test", 500, seed=0, cfg=cfg)
print("render", round(time.time() - t0, 1), "s")
# caption shortcut: unique in a batch of 32 without the class
sig = [
    (m["background"]["name"],) + tuple(sorted((o["colour"], o["position"]) for o in m["objects"]))
    for m in tr.meta
]
rng = np.random.default_rng(0)
uniq = []
for _ in range(200):
    idx = rng.choice(len(sig), 32, replace=False)
    s = [sig[i] for i in idx]
    uniq += [s.count(v) == 1 for v in s]
print(f"caption shortcut (unique without class in batch of 32): {np.mean(uniq):.3f}")
print("example captions:", tr.captions[0], tr.captions[1])


def prep(sc):
    x = torch.from_numpy(sc.images).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=a.size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return (x - 0.5) / 0.25, torch.from_numpy(sc.labels)


xtr, ytr = prep(tr)
xte, yte = prep(te)
torch.manual_seed(0)
m = create_model(
    "vit-demo-8",
    **{
        "embed_dim": 128,
        "vision.width": a.width,
        "vision.layers": a.layers,
        "vision.heads": 4,
        "vision.image_size": a.size,
        "vision.patch_size": a.patch,
        "text.width": 64,
        "text.layers": 1,
        "text.heads": 4,
    },
)
vis = m.visual
clf = torch.nn.Linear(a.width, int(tr.labels.max()) + 1)
params = list(vis.parameters()) + list(clf.parameters())
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.1)
warm = max(1, a.steps // 10)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, a.steps) / a.steps))
)
g = torch.Generator().manual_seed(0)
t0 = time.time()


def feats(x):
    o = vis(x)
    return o["cls"] if a.pool == "cls" else o["patch"].mean(1)


def acc():
    vis.eval()
    with torch.no_grad():
        p = torch.cat([clf(feats(xte[i : i + 250])).argmax(1) for i in range(0, 500, 250)])
    vis.train()
    return (p == yte).float().mean().item()


for step in range(a.steps):
    idx = torch.randint(a.n, (a.bs,), generator=g)
    loss = F.cross_entropy(clf(feats(xtr[idx])), ytr[idx])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    if (step + 1) % 200 == 0:
        print(step + 1, f"loss {loss.item():.3f} acc {acc():.3f}", f"{time.time() - t0:.0f}s", flush=True)
