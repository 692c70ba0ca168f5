"""The `sfclip` command line: it parses arguments and calls the library, nothing more.

    sfclip train RECIPE [key.sub=value ...]          train (torchrun or srun for several processes)
    sfclip config RECIPE [key.sub=value ...]         print the resolved, validated config
    sfclip recipes                                   list the packaged recipes (RECIPE: a file or their name)
    sfclip targets RECIPE [key.sub=value ...]        build the target cache that data.targets names
    sfclip eval CHECKPOINT --task TASK --data PATH    evaluate a checkpoint, CLIP_benchmark JSON out
    sfclip export CHECKPOINT --to open_clip --out DIR write it as an OpenCLIP folder (local-dir:DIR)
    sfclip push CHECKPOINT ORG/NAME                  upload a checkpoint and its model card to the HF Hub
    sfclip demo [--quick]                            the built-in SF-CLIP vs CLIP benchmark
    sfclip scenes OUT_DIR [--train N] [--eval N]      write the built-in dataset (shards + eval sets, these
                                                     also in CLIP_benchmark's wds/ layout)
    sfclip models                                    list registered model sizes

A bad input (recipe, override, path, value) prints one line, `sfclip <command>: error: <message>`, and exits
with status 2; `--debug` (or SFCLIP_DEBUG=1) shows the traceback too. Any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _parse_value(text: str):
    """`key=value` arguments: JSON when it parses (numbers, lists, booleans), the raw string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _key_value(text: str) -> tuple[str, object]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value (e.g. --arg resize_short=224)")
    return key, _parse_value(value)


def cmd_train(args) -> int:
    from .config import check_runnable, load_config
    from .train.loop import train

    cfg = load_config(args.recipe, args.overrides)
    check_runnable(cfg)
    summary = train(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_config(args) -> int:
    from .config import load_config, to_yaml

    print(to_yaml(load_config(args.recipe, args.overrides)))
    return 0


def cmd_recipes(args) -> int:
    from .recipes import list_recipes, recipe_summary

    for name, path in list_recipes().items():
        print(f"{name:24s} {recipe_summary(path)}")
    return 0


def cmd_targets(args) -> int:
    from .build import build_run_targets
    from .config import load_config

    cfg = load_config(args.recipe, args.overrides)
    out = build_run_targets(cfg, device=args.device, batch_size=args.batch_size)
    print(f"target cache ready: {out} (train with data.targets={out})")
    return 0


def cmd_export(args) -> int:
    from .export import export_open_clip

    out = export_open_clip(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} to {out}: open_clip.create_model_and_transforms(\"local-dir:{out}\") "
          f"and open_clip.get_tokenizer(\"local-dir:{out}\") load it")
    return 0


def cmd_push(args) -> int:
    from .checkpoint import resolve_checkpoint
    from .hub import model_card, push, read_results

    if args.card_only:
        print(model_card(resolve_checkpoint(args.checkpoint), args.repo_id, read_results(args.results)))
        return 0
    url = push(args.checkpoint, args.repo_id, private=args.private, results=args.results, message=args.message)
    print(f"pushed {args.checkpoint} to {url}; load it with sfclip.load(\"hf-hub:{args.repo_id}\")")
    return 0


def cmd_eval(args) -> int:
    from .checkpoint import image_stats, load
    from .eval.clip_benchmark_wds import is_wds_set, read_wds
    from .eval.results import check_writable, clip_benchmark_record, print_table, result_record, write_result
    from .eval.tasks import check_arguments, evaluate, preprocessing_arguments

    # Everything the command line can check is checked before the checkpoint loads.
    kwargs = dict(args.arg)
    spelled = {key: f"--arg {key}" for key in kwargs}
    for key in ("device", "batch_size"):
        if key in kwargs:
            raise ValueError(f"--arg {key}: use --{key.replace('_', '-')}")
    for key in ("data", "train_data", "test_data", "classnames", "templates", "language", "pictures_dir", "readout"):
        value = getattr(args, key, None)
        if value is not None:
            kwargs[key] = value
            spelled[key] = "--" + {"pictures_dir": "pictures"}.get(key, key).replace("_", "-")
    # A CLIP_benchmark wds/ folder (`sfclip scenes` writes them): its shards, and its class names and templates
    # unless given, so that both tools score the same set.
    wds_set = read_wds(args.data) if args.data is not None and is_wds_set(args.data) else None
    if wds_set is not None:
        if wds_set.task != args.task:
            raise ValueError(f"--data {args.data} is a CLIP_benchmark {wds_set.task} set; evaluate it with "
                             f"--task {wds_set.task}")
        kwargs["data"] = wds_set.shards
        for key in ("classnames", "templates"):
            if key not in kwargs and getattr(wds_set, key) is not None:
                kwargs[key] = str(getattr(wds_set, key))
    check_arguments(args.task, kwargs, spelled)
    if args.output:
        check_writable(args.output)
    model, tokenizer, transform = load(args.checkpoint, device=args.device)
    mean, std = image_stats(args.checkpoint)
    kwargs = {**preprocessing_arguments(args.task, lambda: transform, mean, std), **kwargs}
    metrics = evaluate(args.task, model, tokenizer, device=args.device, batch_size=args.batch_size, **kwargs)
    dataset = args.dataset_name or (wds_set.name if wds_set is not None else
                                    Path(str(kwargs.get("data") or kwargs.get("test_data") or "data")).stem)
    arch, language = str(model.cfg.name), args.language or "en"
    print_table([result_record(dataset, arch, args.task, metrics, language, pretrained=str(args.checkpoint))])
    if args.output:
        record = clip_benchmark_record(dataset, arch, str(args.checkpoint), args.task, metrics, language)
        print(f"wrote {write_result(args.output, record)}")
    return 0


def cmd_demo(args) -> int:
    from .demo.run import run_demo

    run_demo(out_dir=args.out, quick=args.quick, seed=args.seed, train_pairs=args.train_pairs,
             efficientnet=args.efficientnet, references=args.references)
    return 0


def cmd_scenes(args) -> int:
    from .demo.scenes import write_eval_sets, write_shards
    from .eval.clip_benchmark_wds import export_scene_sets

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file; give a folder (it is created if missing)")

    if args.train:
        shards = write_shards(Path(args.out_dir) / "train", "train", args.train, seed=args.seed)
        print(f"wrote {len(shards)} training shards ({args.train} pairs) to {Path(args.out_dir) / 'train'}")
    if args.eval:
        sets = write_eval_sets(Path(args.out_dir) / "eval", args.eval, seed=args.seed)
        for name, path in sets.items():
            print(f"wrote {name} eval set to {path}")
        for name, path in export_scene_sets(sets, Path(args.out_dir) / "clip_benchmark").items():
            print(f"wrote {name} for CLIP_benchmark to {path} (clip_benchmark eval --dataset {name} "
                  f"--dataset_root {path}; sfclip eval --data {path})")
    return 0


def cmd_models(args) -> int:
    from .models import list_models, model_config

    for name in list_models():
        c = model_config(name)
        print(f"{name:10s} image {c.vision.image_size}px /{c.vision.patch_size} width {c.vision.width} "
              f"x{c.vision.layers} | text width {c.text.width} x{c.text.layers} | embed {c.embed_dim}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is a `--help` away) like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sfclip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of expected errors too "
                   "(also SFCLIP_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 data.batch_size=128")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("config", help="print the resolved config of a recipe")
    c.add_argument("recipe")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(fn=cmd_config)

    r = sub.add_parser("recipes", help="list the packaged recipes (sfclip train NAME runs one)")
    r.set_defaults(fn=cmd_recipes)

    tg = sub.add_parser("targets", help="build the target cache a recipe's data.targets names")
    tg.add_argument("recipe")
    tg.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.targets=/data/cc12m-targets")
    tg.add_argument("--device", default="auto", help="auto (CUDA where there is one), cpu, cuda, cuda:N")
    tg.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    tg.set_defaults(fn=cmd_targets)

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest checkpoint)")
    from .eval.tasks import TASKS

    e.add_argument("--task", required=True, choices=list(TASKS), metavar="TASK",
                   help="; ".join(f"{name}: {task.summary}" for name, task in TASKS.items()))
    e.add_argument("--data", help="dataset path (image folder, CSV, shards, Karpathy JSON, mask folders, or a "
                   "CLIP_benchmark wds_<name> folder: its shards, class names and templates)")
    e.add_argument("--train-data", dest="train_data", help="linear probe: training split")
    e.add_argument("--test-data", dest="test_data", help="linear probe: test split")
    e.add_argument("--classnames", help="built-in name (imagenet1k) or a file")
    e.add_argument("--templates", help="built-in name (openai_imagenet) or a file")
    e.add_argument("--language", help="language key for class names / templates / captions")
    e.add_argument("--dataset-name", dest="dataset_name", help="the result's dataset name (default: wds/<name> "
                   "for a CLIP_benchmark folder, else the data path's stem)")
    e.add_argument("--output", help="write the CLIP_benchmark-format JSON here (a folder: named as "
                   "clip_benchmark eval names it); clip_benchmark build reads it")
    e.add_argument("--pictures", dest="pictures_dir", help="write PNG examples into this folder")
    e.add_argument("--readout", choices=["plain", "maskclip", "clearclip"],
                   help="zeroshot_segmentation: how the last block makes the patch embeddings (default plain)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    e.add_argument("--arg", action="append", default=[], type=_key_value,
                   help="extra runner argument key=value, the value read as JSON when it parses (repeatable)")
    e.set_defaults(fn=cmd_eval)

    ex = sub.add_parser("export", help="write a checkpoint as another tool's model folder (OpenCLIP local-dir)")
    ex.add_argument("checkpoint", help="a checkpoint folder, a run folder (its latest checkpoint) or hf-hub:ORG/NAME")
    ex.add_argument("--to", choices=["open_clip"], default="open_clip", help="the target layout (open_clip)")
    ex.add_argument("--out", required=True, help="the folder to write (replaced atomically if it exists)")
    ex.set_defaults(fn=cmd_export)

    pu = sub.add_parser("push", help="upload a checkpoint with a model card to the Hugging Face Hub")
    pu.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest checkpoint)")
    pu.add_argument("repo_id", help="the Hub repo, <org or user>/<name> (created if missing)")
    pu.add_argument("--results", action="append", default=[], help="a CLIP_benchmark JSON from `sfclip eval "
                    "--output` to add to the model card (repeatable)")
    pu.add_argument("--private", action="store_true", help="create the repo private")
    pu.add_argument("--message", default="", help="the commit message")
    pu.add_argument("--card-only", dest="card_only", action="store_true",
                    help="print the model card and upload nothing")
    pu.set_defaults(fn=cmd_push)

    d = sub.add_parser("demo", help="SF-CLIP vs CLIP on the built-in benchmark with real teachers")
    d.add_argument("--quick", action="store_true", help="smaller and faster, same code path")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--train-pairs", dest="train_pairs", type=int, nargs="*", help="training budgets (pairs)")
    d.add_argument("--efficientnet", action="store_true",
                   help="add EfficientNet-Lite0 as a second vision teacher of SF-CLIP")
    d.add_argument("--references", action="store_true",
                   help="also measure the supervised ceiling and the vision teacher's own linear probe")
    d.set_defaults(fn=cmd_demo)

    sc = sub.add_parser("scenes", help="write the built-in scenes dataset (WebDataset shards and eval sets; the "
                        "classification and retrieval sets also as CLIP_benchmark wds/ folders in "
                        "OUT_DIR/clip_benchmark)")
    sc.add_argument("out_dir")
    sc.add_argument("--train", type=_count, default=2000, help="training pairs (0 = none)")
    sc.add_argument("--eval", type=_count, default=500, help="scenes per evaluation set (0 = none)")
    sc.add_argument("--seed", type=int, default=0)
    sc.set_defaults(fn=cmd_scenes)

    m = sub.add_parser("models", help="list model sizes")
    m.set_defaults(fn=cmd_models)

    from .index.commands import add_commands

    add_commands(sub)  # embed, search, serve
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a bad input raises (one line, exit 2); anything else is a bug and keeps its traceback."""
    from omegaconf.errors import OmegaConfBaseException

    from .config import ConfigError

    types: list[type[BaseException]] = [ConfigError, ValueError, OSError, OmegaConfBaseException]
    try:  # the checkpoint's own error class, where this version has one
        from .checkpoint import CheckpointError

        types.insert(0, CheckpointError)
    except ImportError:
        pass
    return tuple(types)


def _one_line(e: BaseException) -> str:
    """The message on one line; a DataLoader worker's error carries the worker's traceback: its last line."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    if "Original Traceback" in str(e):
        return lines[-1]
    return lines[0]


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a bad input, argparse's usage errors included)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, its line already printed)
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
        root.handlers[-1]._sfclip = True  # the trainer's own handler (with the rank prefix) replaces it
    debug = args.debug or os.environ.get("SFCLIP_DEBUG", "") not in ("", "0")
    try:
        return args.fn(args)
    except _expected_errors() as e:
        if debug:
            raise
        print(f"sfclip {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
