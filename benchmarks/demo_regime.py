"""How learnable is object class in the demo's scenes? The caption shortcut of a scene regime.

    python benchmarks/demo_regime.py [--scenes 4000] [--batch 32]

For the demo's scenes (`sfclip.demo.settings.SCENES`) and the earlier regime (1-3 small objects on eleven
photos, captions naming places), prints the fraction of training scenes that are the only one of their
batch with their caption minus the class (background, and each object's colour and, where captions name
it, place). Those scenes can be matched to their caption without recognising the object, so a contrastive
loss does not need the class for them. The supervised ceiling and the teacher's probe of the same regime
come from `sfclip demo --references` (docs/demo.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfclip.demo.scenes import SceneConfig, render_scenes
from sfclip.demo.settings import SCENES


def caption_shortcut(cfg: SceneConfig, scenes: int, batch: int, draws: int = 500, seed: int = 0) -> float:
    """Mean fraction of a random batch whose caption-without-class is unique in the batch."""
    sc = render_scenes("train", scenes, seed=0, cfg=cfg)
    sig = [(m["background"]["name"],) + tuple(sorted(
        (o["colour"], o["position"] if cfg.caption_places else "") for o in m["objects"])) for m in sc.meta]
    rng = np.random.default_rng(seed)
    unique = []
    for _ in range(draws):
        s = [sig[i] for i in rng.choice(len(sig), batch, replace=False)]
        unique += [s.count(v) == 1 for v in s]
    return float(np.mean(unique))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    out = {"earlier demo (1-3 objects, 11 photos, places)": caption_shortcut(SceneConfig(), args.scenes, args.batch),
           "demo (SCENES)": caption_shortcut(SceneConfig(**SCENES), args.scenes, args.batch),
           "demo objects, places named": caption_shortcut(SceneConfig(**{**SCENES, "caption_places": True}),
                                                          args.scenes, args.batch)}
    print(f"| regime | unique without the class, batch {args.batch} |\n|---|---|")
    for k, v in out.items():
        print(f"| {k} | {v:.3f} |")
    print(json.dumps({"batch": args.batch, "scenes": args.scenes, "caption_shortcut": out}))


if __name__ == "__main__":
    main()
