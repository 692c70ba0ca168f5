"""Does a change to SF-CLIP's *training* give the demo student more class information than CLIP at the same
budget? Trains one demo model (the demo's exact data, view, steps, optimizer and seed) with changed settings and
prints the class-information metrics of `sfclip demo` (same code paths, same protocol) in one JSON line.

    T=1 python benchmarks/demo_vision_gain.py --root demo_out --seed 0 --kind clip --tag clip
    T=1 python benchmarks/demo_vision_gain.py --root demo_out --seed 0 --kind sfclip \
        --set objective.teachers.0.summary_weight=0 --tag patch_only
    T=1 python benchmarks/demo_vision_gain.py --root demo_out --seed 0 --kind sfclip \
        --set objective.teachers.0.weight=3 --tag w3
    T=1 python benchmarks/demo_vision_gain.py --root demo_out --seed 0 --eval-run demo_out/runs/clip_3000 --tag clip

It scores the validation scenes (`data/val/`, glyphs training never uses) unless `--split test` asks for the
test scenes, which are only for reporting a choice already made.

`--root` is a `sfclip demo --out ROOT --seed SEED` folder (its data/, data/tokenizer and targets/ are reused;
missing parts are made here with the demo's own functions; runs go to ROOT/vision_gain/). `--set a.b.0.c=v` sets
a field of the demo's `RunConfig` (list items by index, e.g. `objective.teachers.0.weight` = DINOv2, `.1.` = E5),
`--s a=v` a `DemoSettings` field before the config is built (e.g. `distill_fraction=1.0`). `--eval-run RUN_DIR`
only evaluates a trained run (its newest checkpoint).

Metrics (evaluation exactly as `sfclip.demo.evaluate`): `zs_en` English class zero-shot, `probe_patch` /
`probe_cls` the linear probe on the mean patch token / class token, `probe_head` the same probe on the mean of
the DINOv2 distillation head's outputs (what the head predicts, sfclip only), and the last logged distillation
losses with DINOv2's reference predictors (train batches). Results are appended to `--log`.
Threads: T=1 (default) or T=2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(int(os.environ.get("T", "1")))

from sfclip.data.transforms import eval_transform  # noqa: E402
from sfclip.demo import vocab  # noqa: E402
from sfclip.demo.data import prepare_data  # noqa: E402
from sfclip.demo.evaluate import _zeroshot_languages  # noqa: E402
from sfclip.demo.run import baseline_tokenizer, convert_teachers, fill_target_cache, vocab_source  # noqa: E402
from sfclip.demo.settings import demo_settings, run_config, scene_config  # noqa: E402
from sfclip.eval import linear_probe  # noqa: E402
from sfclip.eval.classification_data import classification_dataset  # noqa: E402

SOURCE = "fashion"


def _set(obj, dotted: str, value: str) -> None:
    *path, last = dotted.split(".")
    for p in path:
        obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
    current = obj[int(last)] if last.isdigit() else getattr(obj, last)
    new = json.loads(value) if isinstance(current, (list, dict, bool)) else type(current)(value)
    if last.isdigit():
        obj[int(last)] = new
    else:
        setattr(obj, last, new)


# -- evaluation ----------------------------------------------------------------------------------------------
class _HeadFeatures(nn.Module):
    """The student with its DINOv2 head applied to every patch token: probes what the head predicts."""

    def __init__(self, student) -> None:
        super().__init__()
        self.student = student

    def forward_features(self, images):
        f = self.student.forward_features(images)
        return {"cls": f["cls"], "patch": self.student.heads["dinov2"](f["patch"])}


def evaluate(model, tokenizer, data, mean, std, source: str = SOURCE) -> dict:
    """`source`: the vocabulary kind of the scenes ("fashion", or "fashion:0,1,3,5,8,9" for a class subset)."""
    size = int(model.visual.image_size)
    transform = eval_transform(size, mean, std)
    objects = classification_dataset(data.classification, vocab.classnames("en", source))
    heads = {"en": (vocab.classnames("en", source), dict(zip(vocab.classnames("en", source),
                                                             vocab.prompts("en", source))))}
    out = {"zs_en": _zeroshot_languages(model, tokenizer, objects, transform, heads, "cpu")["en"]}
    common = dict(transform=transform, classnames=vocab.classnames("en", source), device="cpu", progress=False,
                  batch_size=128)
    out["probe_patch"] = linear_probe.run(model, tokenizer, data.probe_train, data.classification,
                                          feature="mean_patch", **common)["acc1"]
    out["probe_cls"] = linear_probe.run(model, tokenizer, data.probe_train, data.classification, feature="cls",
                                        **common)["acc1"]
    if "dinov2" in model.heads:
        out["probe_head"] = linear_probe.run(_HeadFeatures(model), None, data.probe_train, data.classification,
                                             feature="mean_patch", **common)["acc1"]
    return {k: round(float(v), 3) for k, v in out.items()}


def load_run(run: str):
    """A trained run's newest checkpoint."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from sfclip import checkpoint as ck
    from sfclip.models import SFCLIP
    from sfclip.tokenizer import load_tokenizer

    folder = ck.resolve_checkpoint(run)
    model = SFCLIP(ck._model_config_of(OmegaConf.load(folder / ck.CONFIG)))
    model.load_state_dict(load_file(str(folder / ck.WEIGHTS)))
    return model.eval(), load_tokenizer(folder / ck.TOKENIZER)


def last_losses(run_dir: Path) -> dict:
    """The final logged distillation losses and their references (train batches)."""
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl") if line.strip()]
    rows = [r for r in rows if "contrastive_loss" in r]
    if not rows:
        return {}
    last = rows[-1]
    keep = [k for k in last if k.endswith("_loss") or k.startswith("dinov2_ref/")]
    return {k: round(float(last[k]), 3) for k in keep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="demo_out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", default="sfclip", choices=("sfclip", "clip"))
    ap.add_argument("--set", action="append", default=[], help="dotted RunConfig field=value")
    ap.add_argument("--s", action="append", default=[], help="DemoSettings field=value")
    ap.add_argument("--eval-run", default="")
    ap.add_argument("--tag", default="")
    ap.add_argument("--split", default="val", choices=("val", "test"),
                    help="the evaluation sets scored (val: for choosing; test: only to report)")
    ap.add_argument("--log", default="", help="JSONL to append to (default ROOT/vision_gain/results.jsonl)")
    a = ap.parse_args()

    root = Path(a.root)
    s = demo_settings()
    for kv in a.s:
        k, v = kv.split("=", 1)
        _set(s, k, v)
    t0 = time.perf_counter()
    # Settings are chosen on the validation scenes; `--split test` only to report a choice already made.
    data = prepare_data(root / "data", s, a.seed, scene_config(s, SOURCE)).split(a.split)
    tok_dir = root / "data" / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists() and not any(tok_dir.glob("*")):
        folders = convert_teachers()
        baseline_tokenizer(folders["multilingual-e5-small"], int(s.overrides["text.context_length"]), tok_dir)
    targets = root / "targets"
    if a.kind == "sfclip" and not (targets / "meta.json").is_file():
        fill_target_cache(s, data.train, targets, a.seed)
    vocab_kind = vocab_source(s, SOURCE)  # the scenes' class names
    row = {"tag": a.tag, "seed": a.seed, "kind": a.kind, "set": a.set, "s": a.s,
           "classes": list(s.scenes.get("classes") or []) or "all"}

    if a.eval_run:
        model, tokenizer = load_run(a.eval_run)
        cfg = run_config(s, a.kind, s.budgets[0], data.train, root / "runs", a.seed, targets=targets,
                         e5_folder=tok_dir)
        row.update(evaluate(model.eval(), tokenizer, data, cfg.data.mean, cfg.data.std, vocab_kind))
        row.update(last_losses(Path(a.eval_run)))
        row["run"] = a.eval_run
    else:
        from sfclip.train.loop import Trainer

        cfg = run_config(s, a.kind, s.budgets[0], data.train, root / "vision_gain", a.seed, targets=targets,
                         e5_folder=tok_dir)
        for kv in a.set:
            k, v = kv.split("=", 1)
            _set(cfg, k, v)
        cfg.name = f"{a.kind}_s{a.seed}_{a.tag or int(time.time())}"
        cfg.log.progress = False
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        trainer = Trainer(cfg)
        t1 = time.perf_counter()
        trainer.fit()
        row["train_s"] = round(time.perf_counter() - t1)
        row.update(evaluate(trainer.student.eval(), trainer.tokenizer, data, cfg.data.mean, cfg.data.std,
                            vocab_kind))
        row.update(last_losses(Path(cfg.run_dir)))
        row["run"] = str(cfg.run_dir)
    row["wall_s"] = round(time.perf_counter() - t0)
    row["threads"] = torch.get_num_threads()
    print(json.dumps(row), flush=True)
    log = Path(a.log or root / "vision_gain" / "results.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
