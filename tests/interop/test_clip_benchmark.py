"""CLIP_benchmark against `sfclip eval` on the same sets: the scenes' test sets as `sfclip scenes` writes them
(its own layout and CLIP_benchmark's wds/ folders), one CLIP-form student (causal text tower, eos pooling)
exported with `sfclip export --to open_clip`, and the real `clip_benchmark eval` (1.6.2, open_clip 3.3.0) run
offline on the export. Both tools must give the same accuracy and recall@k, and `clip_benchmark build` must
aggregate both tools' JSON files into one table.

Runs in `.venv-interop` (make interop-test); skipped where open_clip or clip_benchmark cannot be imported.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.interop
open_clip = pytest.importorskip("open_clip", reason="open_clip is not installed (make interop-test: .venv-interop)")
pytest.importorskip("clip_benchmark", reason="clip_benchmark is not installed (make interop-test: .venv-interop)")

from sfclip.checkpoint import save_student, write_manifest  # noqa: E402
from sfclip.cli import main  # noqa: E402
from sfclip.eval.images import open_image  # noqa: E402
from sfclip.export import export_open_clip  # noqa: E402
from sfclip.models import SFCLIP, resolve_model_config  # noqa: E402
from sfclip.tokenizer import Tokenizer, load_tokenizer  # noqa: E402

SCENES = 60  # per set: 60 single-object scenes (10 classes), 60 scenes x 5 captions
CONTEXT = 64  # the longest scene caption is ~45 tokens: nothing is truncated
CB = Path(sys.executable).parent / "clip_benchmark"
CLS, RET = "wds/scenes_classification", "wds/scenes_retrieval"
KS = (1, 5, 10)


def _word_tokenizer(texts: list[str], path: Path) -> Tokenizer:
    """A WordLevel tokenizer holding every word of `texts` (no [UNK], so no two class prompts collapse into the
    same tokens), BERT specials: [SEP] is the end of a sequence that the student pools."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = HFTok(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(path)
    return load_tokenizer(path, context_length=CONTEXT)


def _scene_texts(root: Path) -> list[str]:
    cls = root / "clip_benchmark" / "wds_scenes_classification"
    names = (cls / "classnames.txt").read_text().splitlines()
    templates = (cls / "zeroshot_classification_templates.txt").read_text().splitlines()
    captions = json.loads((root / "eval" / "retrieval" / "captions.json").read_text())["images"]
    return [t.replace("{c}", n) for t in templates for n in names] + [
        s["raw"] for image in captions for s in image["sentences"]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Scenes (both layouts), a random CLIP-form student checkpoint and its OpenCLIP export."""
    root = tmp_path_factory.mktemp("cb")
    assert main(["scenes", str(root / "scenes"), "--train", "0", "--eval", str(SCENES), "--seed", "3"]) == 0
    tok = _word_tokenizer(_scene_texts(root / "scenes"), root / "tokenizer")
    assert tok.hf.unk_token_id not in tok(_scene_texts(root / "scenes"))["input_ids"]
    cfg = resolve_model_config("test-tiny", {"text.causal": True, "text.pool": "eos", "text.pad_id": tok.pad_id,
                                             "text.eos_id": tok.eos_id, "text.context_length": CONTEXT,
                                             "text.vocab_size": tok.vocab_size})
    torch.manual_seed(0)
    model = SFCLIP(cfg)
    with torch.no_grad():  # LayerNorms and biases away from their init too, so every tensor's mapping counts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ckpt = root / "ckpt"
    save_student(ckpt, model.eval(), tok)
    write_manifest(ckpt)
    return {"root": root, "scenes": root / "scenes", "ckpt": ckpt,
            "open_clip": export_open_clip(ckpt, root / "open_clip"), "results": root / "results"}


def _sfclip_eval(setup, task: str, data: list[str], name: str) -> dict:
    out = setup["results"] / "sfclip" / f"{name}.json"
    assert main(["eval", str(setup["ckpt"]), "--task", task, *data, "--output", str(out)]) == 0
    return json.loads(out.read_text())


def _clip_benchmark_eval(setup, dataset: str, task: str) -> dict:
    folder = setup["scenes"] / "clip_benchmark" / f"wds_{dataset.split('/', 1)[1]}"
    out = setup["results"] / "clip_benchmark" / f"{task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # --no_amp: CLIP_benchmark's default autocast runs a CPU model in bfloat16 (sfclip eval: float32).
    # --pretrained: ignored for local-dir models, recorded as the result's `pretrained`.
    cmd = [str(CB), "eval", "--model_type", "open_clip", "--model", f"local-dir:{setup['open_clip']}",
           "--pretrained", str(setup["ckpt"]), "--dataset", dataset, "--dataset_root", str(folder), "--task", task,
           "--no_amp", "--num_workers", "0", "--batch_size", "32", "--recall_k", *map(str, KS),
           "--output", str(out), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_preprocessing_is_the_same_pixels(setup):
    """open_clip's transform from the export's preprocess_cfg and sfclip's eval transform give the same tensor
    for the scenes (112 px PNGs resized to the student's 32 px: PIL bicubic in both, then the same crop)."""
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{setup['open_clip']}")
    from sfclip.checkpoint import load

    _, _, transform = load(setup["ckpt"])
    images = sorted((setup["scenes"] / "eval" / "classification" / "images").glob("*.png"))[:8]
    for path in images:
        img = open_image(path)
        theirs, ours = preprocess(img), transform(img)
        assert theirs.shape == ours.shape == (3, 32, 32)
        torch.testing.assert_close(theirs, ours, atol=0, rtol=0)


@pytest.fixture(scope="module")
def results(setup) -> dict[str, dict]:
    """Each set scored by `sfclip eval` in its own layout and in the wds/ folder, and by `clip_benchmark eval`."""
    cls_dir, wds = setup["scenes"] / "eval" / "classification", setup["scenes"] / "clip_benchmark"
    return {
        "sfclip_cls": _sfclip_eval(setup, "zeroshot_classification", [
            "--data", str(cls_dir / "labels.csv"), "--classnames", str(cls_dir / "classnames.json"),
            "--templates", str(cls_dir / "classnames.json"), "--language", "en", "--dataset-name", CLS], "cls"),
        "sfclip_cls_wds": _sfclip_eval(setup, "zeroshot_classification", [
            "--data", str(wds / "wds_scenes_classification")], "cls_wds"),
        "cb_cls": _clip_benchmark_eval(setup, CLS, "zeroshot_classification"),
        "sfclip_ret": _sfclip_eval(setup, "retrieval", [
            "--data", str(setup["scenes"] / "eval" / "retrieval" / "captions.json"), "--dataset-name", RET], "ret"),
        "sfclip_ret_wds": _sfclip_eval(setup, "retrieval", ["--data", str(wds / "wds_scenes_retrieval")], "ret_wds"),
        "cb_ret": _clip_benchmark_eval(setup, RET, "zeroshot_retrieval"),
    }


def test_zeroshot_classification_agrees(results):
    ours, theirs = results["sfclip_cls"], results["cb_cls"]
    # sfclip on the wds folder (its own class names and templates) = sfclip on its own layout
    assert results["sfclip_cls_wds"]["metrics"] == ours["metrics"]
    assert results["sfclip_cls_wds"]["dataset"] == ours["dataset"] == theirs["dataset"] == CLS
    assert theirs["task"] == ours["task"] == "zeroshot_classification"
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert theirs["metrics"][key] == pytest.approx(ours["metrics"][key], abs=1e-9), key
    # the student is random: 0 or 1 would make agreement likely by chance
    assert 0.0 < ours["metrics"]["acc5"] < 1.0


def test_zeroshot_retrieval_agrees(results):
    ours, theirs = results["sfclip_ret"], results["cb_ret"]
    assert results["sfclip_ret_wds"]["metrics"] == ours["metrics"]
    assert theirs["task"] == ours["task"] == "zeroshot_retrieval" and theirs["dataset"] == ours["dataset"] == RET
    # CLIP_benchmark averages hits in float32 (25/300 -> 0.0833333358): compare the hit counts, which must match
    queries = {"image": SCENES * 5, "text": SCENES}  # caption queries find images, image queries find captions
    for k in KS:
        for side, n in queries.items():
            name = f"{side}_retrieval_recall@{k}"
            assert round(theirs["metrics"][name] * n) == round(ours["metrics"][name] * n), name
            assert theirs["metrics"][name] == pytest.approx(ours["metrics"][name], abs=1e-6), name
    assert 0.0 < ours["metrics"]["image_retrieval_recall@5"] < 1.0


def test_clip_benchmark_build_aggregates_both_tools(setup, results):
    """`clip_benchmark build` reads sfclip's JSON files next to its own (before: KeyError: 'pretrained')."""
    files = sorted(setup["results"].rglob("*.json"))
    assert len(files) == len(results)
    out = setup["results"] / "benchmark.csv"
    proc = subprocess.run([str(CB), "build", *map(str, files), "--output", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(files)
    ours = [r for r in rows if r["model"] == "test-tiny"]
    assert len(ours) == 4 and {r["model_fullname"] for r in ours} == {f"test-tiny {setup['ckpt']}"}
    # one column per metric, whichever tool wrote the row
    for r in rows:
        key = "acc1" if r["task"] == "zeroshot_classification" else "image_retrieval_recall@5"
        assert r[key] != "", (r["model"], r["task"])
