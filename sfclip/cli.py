"""The `sfclip` command line: it parses arguments and calls the library, nothing more.

    sfclip train RECIPE.yaml [key.sub=value ...]     train (torchrun for several processes)
    sfclip config RECIPE.yaml [key.sub=value ...]    print the resolved, validated config
    sfclip eval CHECKPOINT --task TASK --data PATH    evaluate a checkpoint, CLIP_benchmark JSON out
    sfclip demo [--quick]                            the built-in SF-CLIP vs CLIP benchmark
    sfclip scenes OUT_DIR [--train N] [--eval N]      write the built-in dataset (shards + eval sets)
    sfclip models                                    list registered model sizes
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def _parse_value(text: str):
    """`key=value` arguments: JSON when it parses (numbers, lists, booleans), the raw string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_train(args) -> int:
    from .config import load_config
    from .train.loop import train

    import os

    cfg = load_config(args.recipe, args.overrides)
    summary = train(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_config(args) -> int:
    from .config import load_config, to_yaml

    print(to_yaml(load_config(args.recipe, args.overrides)))
    return 0


def cmd_eval(args) -> int:
    from .checkpoint import load
    from .eval.results import print_table, result_record, write_result
    from .eval.tasks import evaluate

    model, tokenizer, transform = load(args.checkpoint, device=args.device)
    kwargs = {k: _parse_value(v) for k, v in (item.split("=", 1) for item in args.arg)}
    for key in ("data", "train_data", "test_data", "classnames", "templates", "language", "pictures_dir"):
        value = getattr(args, key, None)
        if value is not None:
            kwargs[key] = value
    if args.task in ("zeroshot_segmentation", "linear_segmentation"):
        from .checkpoint import image_stats

        mean, std = image_stats(args.checkpoint)
        kwargs.setdefault("mean", mean)
        kwargs.setdefault("std", std)
    else:
        kwargs.setdefault("transform", transform)
    metrics = evaluate(args.task, model, tokenizer, device=args.device, batch_size=args.batch_size, **kwargs)
    dataset = args.dataset_name or Path(str(kwargs.get("data") or kwargs.get("test_data") or "data")).stem
    record = result_record(dataset, str(args.checkpoint), args.task, metrics, args.language or "en")
    print_table([record])
    if args.output:
        print(f"wrote {write_result(args.output, record)}")
    return 0


def cmd_demo(args) -> int:
    from .demo.run import run_demo

    run_demo(out_dir=args.out, quick=args.quick, seed=args.seed, train_pairs=args.train_pairs,
             efficientnet=args.efficientnet)
    return 0


def cmd_scenes(args) -> int:
    from .demo.scenes import write_eval_sets, write_shards

    if args.train:
        shards = write_shards(Path(args.out_dir) / "train", "train", args.train, seed=args.seed)
        print(f"wrote {len(shards)} training shards ({args.train} pairs) to {Path(args.out_dir) / 'train'}")
    if args.eval:
        for name, path in write_eval_sets(Path(args.out_dir) / "eval", args.eval, seed=args.seed).items():
            print(f"wrote {name} eval set to {path}")
    return 0


def cmd_models(args) -> int:
    from .models import list_models, model_config

    for name in list_models():
        c = model_config(name)
        print(f"{name:10s} image {c.vision.image_size}px /{c.vision.patch_size} width {c.vision.width} x{c.vision.layers}"
              f" | text width {c.text.width} x{c.text.layers} | embed {c.embed_dim}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sfclip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 data.batch_size=128")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("config", help="print the resolved config of a recipe")
    c.add_argument("recipe")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(fn=cmd_config)

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest checkpoint)")
    e.add_argument("--task", required=True, choices=["zeroshot_classification", "retrieval", "linear_probe",
                                                    "zeroshot_segmentation", "linear_segmentation"])
    e.add_argument("--data", help="dataset path (image folder, CSV, shards, Karpathy JSON, mask folders)")
    e.add_argument("--train-data", dest="train_data", help="linear probe: training split")
    e.add_argument("--test-data", dest="test_data", help="linear probe: test split")
    e.add_argument("--classnames", help="built-in name (imagenet1k) or a file")
    e.add_argument("--templates", help="built-in name (openai_imagenet) or a file")
    e.add_argument("--language", help="language key for class names / templates / captions")
    e.add_argument("--dataset-name", dest="dataset_name")
    e.add_argument("--output", help="write the CLIP_benchmark-format JSON here")
    e.add_argument("--pictures", dest="pictures_dir", help="write PNG examples into this folder")
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    e.add_argument("--arg", action="append", default=[], help="extra runner argument key=value (repeatable)")
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser("demo", help="SF-CLIP vs CLIP on the built-in benchmark with real teachers")
    d.add_argument("--quick", action="store_true", help="smaller and faster, same code path")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--train-pairs", dest="train_pairs", type=int, nargs="*", help="training budgets (pairs)")
    d.add_argument("--efficientnet", action="store_true",
                   help="add EfficientNet-Lite0 as a second vision teacher of SF-CLIP")
    d.set_defaults(fn=cmd_demo)

    sc = sub.add_parser("scenes", help="write the built-in scenes dataset (WebDataset shards and eval sets)")
    sc.add_argument("out_dir")
    sc.add_argument("--train", type=int, default=2000, help="training pairs (0 = none)")
    sc.add_argument("--eval", type=int, default=500, help="scenes per evaluation set (0 = none)")
    sc.add_argument("--seed", type=int, default=0)
    sc.set_defaults(fn=cmd_scenes)

    m = sub.add_parser("models", help="list model sizes")
    m.set_defaults(fn=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
        root.handlers[-1]._sfclip = True  # the trainer's own handler (with the rank prefix) replaces it
    from .config import ConfigError

    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"sfclip {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
