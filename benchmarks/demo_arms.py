"""The demo's ablation study: CLIP, CLIP with the inherited table, the paper's SF-CLIP, and SF-CLIP with our
summary term, over several seeds, each trained and evaluated exactly as `sfclip demo` does; paired differences
with 95% intervals. Arms: `sfclip/demo/arms.py`. Resumable: every finished (arm, seed) is kept on disk, so a
killed study continues where it stopped.

    python benchmarks/demo_arms.py                          # the committed study (about 2 h on 2 cores)
    python benchmarks/demo_arms.py --summarize              # only rewrite docs/demo/arms.{json,png}
    python benchmarks/demo_arms.py --variants sfclip_bf16_teachers sfclip_bf16_train   # + issue 18's, seed 0
    python benchmarks/demo_arms.py --variants clip_meanpool sfclip_meanpool --variant-seeds 0,1,2

Per seed (`OUT/seed<N>/`): the demo's data (training shards, test sets, validation sets, probe sets), its
tokenizer and the fp32 target cache, shared by every arm. Per arm and seed: `RESULTS/<arm>/seed<N>.json`
(every metric on the test and validation sets, the training time) and `.npz` (per-scene correctness), where
RESULTS is docs/demo/arms_results (committed): a pair that has its result there is not run again. Every
run uses two torch threads, fp32 teachers and fp32 training, whatever the CPU (the variants change that on
purpose). Settings are chosen on the validation sets (`val/...` metrics); the test sets are only reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfclip.demo.arms import (
    ARMS,
    HEADLINE,
    VARIANTS,
    arm_config,
    arm_settings,
    plot_arms,
    summarize,
    with_means,
)

log = logging.getLogger("demo_arms")
THREADS = 2
# The evaluation protocol of a result file; a result of an older one is evaluated again from its run's final
# checkpoint (no retraining). 3: per-prompt background rows, the dense readouts, text-aware retrieval and its
# oracle; 4: Russian colour words spelled with "е".
PROTOCOL = 4


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prepare_seed(out: Path, seed: int, need_bf16: bool) -> dict:
    """The demo's data, tokenizer and target cache(s) for `seed` (made once, reused by every arm)."""
    from sfclip.demo.data import prepare_data
    from sfclip.demo.run import (
        baseline_tokenizer,
        convert_teachers,
        fill_target_cache,
        object_source,
        vocab_source,
    )
    from sfclip.demo.settings import demo_settings, scene_config

    s = demo_settings()
    folders = convert_teachers()
    source = object_source()
    root = out / f"seed{seed}"
    data = prepare_data(root / "data", s, seed, scene_config(s, source))
    ctx = int(s.overrides.get("text.context_length", 77))
    tok = baseline_tokenizer(folders["multilingual-e5-small"], ctx, root / "data" / "tokenizer")
    targets = {"float32": fill_target_cache(arm_settings(s, "sfclip"), data.train, root / "targets", seed)}
    if need_bf16:
        targets["bfloat16"] = fill_target_cache(arm_settings(s, "sfclip_bf16_teachers"), data.train,
                                                root / "targets_bf16", seed)
    return {"settings": s, "data": data, "tokenizer": tok, "targets": targets, "source": vocab_source(s, source),
            "root": root}


def run_arm(out: Path, results: Path, arm: str, seed: int, prep: dict) -> None:
    """Train `arm` on `seed` through the real Trainer, evaluate on the test and validation sets, keep both."""
    from sfclip.demo.evaluate import evaluate_student
    from sfclip.train.loop import Trainer

    s = prep["settings"]
    dtype = arm_settings(s, arm).teacher_dtype
    cfg = arm_config(s, arm, s.budgets[0], prep["data"].train, prep["root"] / "runs", seed,
                     prep["targets"][dtype], prep["tokenizer"])
    import shutil

    folder = results / arm
    done = folder / f"seed{seed}.json"
    old = json.loads(done.read_text()) if done.is_file() else {}
    if _final_checkpoint(cfg.run_dir, s.steps):  # trained already (a result of an older protocol, or a kill)
        from sfclip.checkpoint import load

        print(f"-- {arm} seed {seed}: evaluating its final checkpoint (protocol {PROTOCOL}) --", flush=True)
        model, tokenizer, _ = load(cfg.run_dir)
        model.eval()
        metrics = {k: v for k, v in old.items() if k.startswith("train/")}
        seconds = metrics.get("train/seconds", float("nan"))
    else:
        shutil.rmtree(cfg.run_dir, ignore_errors=True)  # a killed run starts again from step 0
        print(f"-- {arm} seed {seed}: training {s.steps} steps --", flush=True)
        trainer = Trainer(cfg)
        t0 = time.perf_counter()
        summary = trainer.fit()
        seconds = time.perf_counter() - t0
        model, tokenizer = trainer.student.eval(), trainer.tokenizer
        metrics = {"train/seconds": seconds,
                   "train/final_contrastive_loss": float(summary.get("contrastive_loss", float("nan")))}
        del trainer
    metrics["protocol"] = PROTOCOL
    samples: dict = {}
    for split in ("test", "val"):
        per: dict = {}
        m = evaluate_student(model, tokenizer, prep["data"].split(split), cfg.data.mean, cfg.data.std,
                             seg_eval=s.seg_eval, source=prep["source"], device="cpu", per_sample=per)
        prefix = "" if split == "test" else "val/"
        metrics.update({prefix + k: v for k, v in m.items()})
        samples.update({prefix + k: v for k, v in with_means(per).items()})
    folder.mkdir(parents=True, exist_ok=True)
    buf = __import__("io").BytesIO()
    np.savez_compressed(buf, **{k.replace("/", "|"): v for k, v in samples.items()})
    _write(folder / f"seed{seed}.npz", buf.getvalue())
    _write(folder / f"seed{seed}.json", json.dumps(metrics, indent=1).encode())  # last: it marks the pair done
    print(f"-- {arm} seed {seed}: {seconds:.0f}s training; test zero-shot en {metrics['zeroshot/en/acc1']:.3f}, "
          f"mean-patch probe {metrics['linear_probe_patch/acc1']:.3f} --", flush=True)
    del model
    gc.collect()


def _final_checkpoint(run_dir: Path, steps: int) -> bool:
    """The run has a complete checkpoint of its last step (what `Trainer.fit` saves at the end)."""
    from sfclip.checkpoint import CheckpointError, resolve_checkpoint

    try:
        folder = resolve_checkpoint(run_dir)
    except (CheckpointError, FileNotFoundError):
        return False
    return folder.name.endswith(f"{steps:08d}")


def load_results(folder: Path) -> tuple[dict, dict]:
    """({arm: {seed: metrics}}, {arm: {seed: {key: per-scene array}}}) of every finished pair in `folder`."""
    results: dict = {}
    samples: dict = {}
    for f in sorted(folder.glob("*/seed*.json")):
        arm, seed = f.parent.name, f.stem.removeprefix("seed")
        results.setdefault(arm, {})[seed] = json.loads(f.read_text())
        with np.load(f.with_suffix(".npz")) as z:
            samples.setdefault(arm, {})[seed] = {k.replace("|", "/"): z[k] for k in z.files}
    return results, samples


def machine() -> dict:
    from sfclip.demo.run import machine as demo_machine

    return {**demo_machine(), "threads": THREADS, "teachers": "float32", "train_precision": "fp32"}


def _finite(x):
    """JSON without Infinity: an unbounded interval end (a single seed) is written as null."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _oracles(results: dict, out: Path) -> None:
    """Write each seed's retrieval ceiling into its results from the seed's own sets (it depends on the captions
    alone; results of protocol 4 carry an earlier, wrong construction of it)."""
    from sfclip.demo.evaluate import retrieval_oracle

    for per_seed in results.values():
        for seed, m in per_seed.items():
            for prefix, folder in (("", "eval"), ("val/", "val")):
                captions = out / f"seed{seed}" / "data" / folder / "retrieval" / "captions.json"
                if captions.is_file():
                    m.update({prefix + k: v for k, v in retrieval_oracle(captions).items()})
                else:
                    for k in [k for k in m if k.startswith(prefix + "retrieval/oracle_")]:
                        del m[k]


def write_summary(results_dir: Path, docs: Path, out: Path) -> dict:
    results, samples = load_results(results_dir)
    if not results:
        raise SystemExit(f"no finished arm in {results_dir}: run the study first")
    _oracles(results, out)
    diffs = _finite(summarize(results, samples))
    diffs_val = _finite(summarize(results, samples, prefix="val/"))
    doc = {"arms": {arm: {"description": {**ARMS, **VARIANTS}[arm], "seeds": results[arm]}
                    for arm in (*ARMS, *VARIANTS) if arm in results},
           "diffs": diffs, "diffs_val": diffs_val, "machine": machine(),
           "protocol": {"command": "python benchmarks/demo_arms.py", "threads": THREADS,
                        "test_scenes": "500 per set and seed (classification, retrieval), 300 segmentation",
                        "choose_on": "val/... metrics (validation scenes of held-out glyphs)",
                        "ci95": "2.5/97.5 percentiles of a two-level bootstrap (seeds, then test scenes, paired); "
                                "ci95_t: Student t over per-seed differences; a claim needs both to exclude 0"}}
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "arms.json").write_text(json.dumps(doc, indent=1))
    keep = {f"{arm}/seed{seed}/{k}": v for arm, per in samples.items() for seed, d in per.items()
            for k, v in d.items() if not k.startswith("val/")}
    np.savez_compressed(docs / "arms_samples.npz", **{k.replace("/", "|"): v for k, v in keep.items()})
    plot_arms(results, samples, docs / "arms.png")
    # What `sfclip demo` prints beside its one seed's differences (packaged: the docs are not installed).
    packaged = Path(__file__).resolve().parents[1] / "sfclip" / "demo" / "arms_intervals.json"
    keep = {k: {m: {f: v for f, v in r.items() if f != "per_seed"} for m, r in rows.items()}
            for k, rows in diffs.items() if k == "sfclip-clip"}
    packaged.write_text(json.dumps({"source": "docs/demo/arms.json (python benchmarks/demo_arms.py)",
                                    "diffs": keep, "machine": doc["machine"]}, indent=1))
    lines = []
    for pair, rows in diffs.items():
        for metric, r in rows.items():
            lo, hi = (f"{v:+.3f}" if v is not None else "?" for v in r["ci95"])
            tlo, thi = (f"{v:+.3f}" if v is not None else "?" for v in r["ci95_t"])
            lines.append(f"{pair:28s} {metric:34s} {r['mean']:+.3f} [{lo}, {hi}] t[{tlo}, {thi}] n={r['n_seeds']}"
                         f"{' *' if r['excludes_zero'] else ''}")
    print("\n".join(lines))
    return doc


def markdown(doc: dict, key: str = "diffs") -> str:
    """The docs' tables: each arm's mean over its seeds, and each difference with both intervals."""
    arms = [a for a in doc["arms"] if a in ARMS]  # the variants (one seed) appear in the differences only
    lines = ["| metric | " + " | ".join(f"{a} (n={len(doc['arms'][a]['seeds'])})" for a in arms) + " |",
             "|---|" + "---|" * len(arms)]
    prefix = "val/" if key == "diffs_val" else ""
    for metric in HEADLINE:
        vals = []
        for a in arms:
            xs = [m[prefix + metric] for m in doc["arms"][a]["seeds"].values() if prefix + metric in m]
            vals.append(f"{np.mean(xs):.3f}" if xs else "-")
        lines.append(f"| `{metric}` | " + " | ".join(vals) + " |")
    lines += ["", "| difference | metric | mean | 95% CI (bootstrap) | 95% CI (t) | seeds |",
              "|---|---|---|---|---|---|"]

    def fmt(v):
        return "?" if v is None else f"{v:+.3f}"

    for pair, rows in doc[key].items():
        for metric, r in rows.items():
            star = "**" if r["excludes_zero"] else ""
            ci = f"[{fmt(r['ci95'][0])}, {fmt(r['ci95'][1])}]" if r["method"].startswith("bootstrap") else "-"
            lines.append(f"| {pair} | `{metric}` | {star}{r['mean']:+.3f}{star} | {ci} | "
                         f"[{fmt(r['ci95_t'][0])}, {fmt(r['ci95_t'][1])}] | {r['n_seeds']} |")
    return "\n".join(lines)


def _protocol(path: Path) -> int | None:
    try:
        return json.loads(path.read_text()).get("protocol")
    except (OSError, ValueError):
        return None


def _seeds(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_arms_out", help="data, target caches and runs (not committed)")
    ap.add_argument("--results", default="docs/demo/arms_results",
                    help="one JSON (metrics) and one NPZ (per-scene scores) per finished arm and seed (committed, so "
                         "that a study continues from a fresh clone)")
    ap.add_argument("--docs", default="docs/demo", help="where arms.json, arms_samples.npz and arms.png go")
    ap.add_argument("--seeds-main", default="0,1,2,3,4", help="seeds of clip and sfclip")
    ap.add_argument("--seeds-other", default="0,1,2", help="seeds of clip_inherit and sfclip_paper")
    ap.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=None,
                    help="also these variants (precision, mean pooling) after the arms, on --variant-seeds")
    ap.add_argument("--variant-seeds", default="0", help="seeds of the variants")
    ap.add_argument("--summarize", action="store_true", help="only write the summary of what is finished")
    ap.add_argument("--markdown", choices=["diffs", "diffs_val"], help="print the docs' tables from arms.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(THREADS)
    out, results = Path(args.out), Path(args.results)
    if args.markdown:
        print(markdown(json.loads((Path(args.docs) / "arms.json").read_text()), args.markdown))
        return
    if not args.summarize:
        main_seeds, other_seeds = _seeds(args.seeds_main), _seeds(args.seeds_other)
        plan = []
        for seed in sorted(set(main_seeds) | set(other_seeds)):  # seed by seed, so that a partial study is paired
            plan += [(seed, a) for a in ARMS if seed in (main_seeds if a in ("clip", "sfclip") else other_seeds)]
        # last: the study's own arms come first
        plan += [(seed, v) for seed in _seeds(args.variant_seeds) for v in args.variants or ()]
        todo = [(seed, a) for seed, a in plan if _protocol(results / a / f"seed{seed}.json") != PROTOCOL]
        print(f"demo arms: {len(plan)} runs planned, {len(plan) - len(todo)} done, {len(todo)} to go; "
              f"{platform.processor() or platform.machine()}, torch capability "
              f"{torch.backends.cpu.get_cpu_capability()}, {THREADS} threads", flush=True)
        t0 = time.perf_counter()
        prepared: dict = {}
        for i, (seed, arm) in enumerate(todo):
            if seed not in prepared:
                prepared = {seed: prepare_seed(out, seed, any(a == "sfclip_bf16_teachers" for s2, a in todo
                                                              if s2 == seed))}
            run_arm(out, results, arm, seed, prepared[seed])
            done = time.perf_counter() - t0
            print(f"== {i + 1}/{len(todo)} done, {done / 60:.0f} min; about "
                  f"{done / (i + 1) * (len(todo) - i - 1) / 60:.0f} min to go ==", flush=True)
    write_summary(results, Path(args.docs), out)


if __name__ == "__main__":
    main()
