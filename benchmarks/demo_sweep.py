"""One `sfclip demo` model with changed settings, trained and evaluated on the demo's data: how the demo's
defaults were chosen (docs/demo.md, "How the settings were chosen").

    python benchmarks/demo_sweep.py kind=clip optim.lr=1e-3 s.batch_size=32 s.samples_seen=10240

Arguments are `key=value`: `kind` (sfclip | clip), `pairs` (training pairs, default 1500), `root` (data and
target cache, default /tmp/sfclip_demo_sweep; made on first use and reused), `s.<field>` sets a
`DemoSettings` field before the run config is built (batch size, samples seen, warmup...), any other
dotted key sets a field of the resulting `RunConfig` (e.g. `optim.lr`, `train.precision`), and `scene`
takes a JSON object of `SceneConfig` fields. Prints one JSON line of the main metrics.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfclip.demo.data import prepare_data
from sfclip.demo.evaluate import evaluate_student
from sfclip.demo.run import baseline_tokenizer, convert_teachers, fill_target_cache
from sfclip.demo.scenes import SceneConfig
from sfclip.demo.settings import demo_settings, run_config
from sfclip.train.loop import Trainer

KEYS = ("zeroshot/en/acc1", "zeroshot/mean_other/acc1", "zeroshot_colour/en/acc1", "zeroshot_colour/mean_other/acc1",
        "retrieval/i2t_r1", "retrieval/t2i_r1", "segmentation/miou", "linear_seg/miou", "linear_probe/acc1")


def _set(obj, dotted: str, value: str) -> None:
    *path, last = dotted.split(".")
    for p in path:
        obj = getattr(obj, p)
    current = getattr(obj, last)
    setattr(obj, last, json.loads(value) if isinstance(current, (list, dict)) else type(current)(value))


def main(argv: list[str]) -> dict:
    args = dict(a.split("=", 1) for a in argv)
    kind, pairs = args.pop("kind", "sfclip"), int(args.pop("pairs", 1500))
    root = Path(args.pop("root", "/tmp/sfclip_demo_sweep"))
    scene = SceneConfig(source="fashion", **json.loads(args.pop("scene", "{}")))
    s = demo_settings(quick=True, train_pairs=[pairs])
    s.eval_images, s.probe_train, s.seg_train, s.seg_eval = 200, 400, 100, 100
    for key in [k for k in args if k.startswith("s.")]:
        _set(s, key[2:], args.pop(key))
    data = prepare_data(root / "data", s, 0, scene).split("val")  # a sweep chooses: validation scenes only
    tokenizer_dir = root / "data" / "tokenizer"
    if not (root / "targets" / "meta.json").is_file():
        e5 = convert_teachers()["multilingual-e5-small"]
        baseline_tokenizer(e5, int(s.overrides["text.context_length"]), tokenizer_dir)
        fill_target_cache(s, data.train, root / "targets", 0)
    cfg = run_config(s, kind, pairs, data.train, root / "runs", 0, targets=root / "targets", e5_folder=tokenizer_dir)
    for key, value in args.items():
        _set(cfg, key, value)
    cfg.name, cfg.log.progress = f"{kind}_{int(time.time())}", False
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    # The class names of the scenes' kept classes (a `classes` subset is relabelled 0..k-1).
    vocab_kind = "fashion" + (":" + ",".join(map(str, scene.classes)) if scene.classes else "")
    m = evaluate_student(trainer.student.eval(), trainer.tokenizer, data, cfg.data.mean, cfg.data.std,
                         seg_eval=s.seg_eval, source=vocab_kind)
    row = {"kind": kind, "args": argv, "train_seconds": round(seconds), "steps": cfg.train.steps,
           "final_contrastive_loss": round(float(summary["contrastive_loss"]), 3),
           **{k: round(m[k], 3) for k in KEYS}}
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main(sys.argv[1:])
