"""What do the demo's DINOv2 targets say about a scene? Linear predictors from the scene's own factors.

    python benchmarks/demo_target_content.py demo_out        # a `sfclip demo --out DIR` folder (data + targets)

For the per-patch targets (layer-normed, as training normalizes them) and for DINOv2's class token (the summary
target, `targets/dinov2.cls.npy`), fits per-position least-squares predictors from one-hot scene factors
(background, colour, the object's box, class) on the first 2500 training scenes and prints their cosine loss
(training's loss) on the last 500. A factor that lowers the loss a lot is what the target mostly encodes; the
per-image-mean line is the reference the demo's loss plot draws. How the demo's summary term was motivated
(docs/demo.md). Needs at least 3000 training scenes (the demo's budget).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfclip.data.wds import read_shard
from sfclip.losses.distill import masked_distill_loss

torch.set_num_threads(1)
TRAIN, TEST = 2500, 500


def onehot(values: list) -> torch.Tensor:
    levels = sorted(set(values))
    return F.one_hot(torch.tensor([levels.index(v) for v in values]), len(levels)).float()


def fit_predict(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-position ridge least squares from factors x (N, F) to targets y (N, P, D); predictions of the test rows."""
    x = torch.cat([x, torch.ones(len(x), 1)], 1)
    a = x[:TRAIN].T @ x[:TRAIN] + 1e-3 * torch.eye(x.shape[1])
    w = torch.linalg.solve(a, x[:TRAIN].T @ y[:TRAIN].reshape(TRAIN, -1))
    return (x[TRAIN:TRAIN + TEST] @ w).reshape(TEST, *y.shape[1:])


def main(root: Path) -> dict:
    keys = (root / "targets" / "keys.txt").read_text().split()
    if len(keys) < TRAIN + TEST:
        raise SystemExit(f"{root}: {len(keys)} training scenes, need {TRAIN + TEST}")
    meta = {}
    for url in sorted((root / "data" / "train").glob("*.tar")):
        for raw in read_shard(str(url), Counter()):
            meta[raw["__key__"]] = json.loads(raw["json"])
    rows = [meta[k] for k in keys[:TRAIN + TEST]]
    obj = [r["objects"][0] for r in rows]
    bg, colour, cls = (onehot([r["background"]["name"] for r in rows]), onehot([o["colour"] for o in obj]),
                       onehot([o["class_id"] for o in obj]))
    box = torch.tensor([o["bbox"] for o in obj], dtype=torch.float32) / rows[0]["image_size"]
    box = torch.cat([box, box[:, 2:] - box[:, :2]], 1)  # x0, y0, x1, y1, w, h
    factors = {"position mean (nothing)": torch.zeros(len(rows), 0), "background": bg,
               "+ colour": torch.cat([bg, colour], 1), "+ object box": torch.cat([bg, colour, box], 1),
               "+ class": torch.cat([bg, colour, box, cls], 1), "class alone": cls}
    arrays = np.load(root / "targets" / "dinov2.patch.npy", mmap_mode="r")
    patch = torch.from_numpy(np.asarray(arrays[:TRAIN + TEST], dtype=np.float32))
    targets = {"per-patch target": F.layer_norm(patch, patch.shape[-1:])}
    cls_file = root / "targets" / "dinov2.cls.npy"
    if cls_file.is_file():
        summary = torch.from_numpy(np.asarray(np.load(cls_file, mmap_mode="r")[:TRAIN + TEST], dtype=np.float32))
        targets["class token (summary target)"] = F.layer_norm(summary, summary.shape[-1:])[:, None]
    out: dict[str, dict[str, float]] = {}
    for name, y in targets.items():
        test = y[TRAIN:]
        res = {n: float(masked_distill_loss(fit_predict(x, y), test, None, "cosine")) for n, x in factors.items()}
        if y.shape[1] > 1:
            res["per-image mean (reference)"] = float(masked_distill_loss(
                test.mean(1, keepdim=True).expand_as(test), test, None, "cosine"))
        out[name] = {k: round(v, 3) for k, v in res.items()}
    return out


if __name__ == "__main__":
    result = main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out"))
    for name, res in result.items():
        print(f"\n{name}: held-out cosine loss of a linear predictor from")
        print("| factors | loss |\n|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v:.3f} |")
    print(json.dumps(result))
