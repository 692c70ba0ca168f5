"""The demo's evaluation suite: one trained student -> every metric of the comparison, via `sfclip.eval`.

- `zeroshot/<lang>/acc1`: zero-shot classification of the single-object test scenes with the prompts
  of `vocab.prompts(lang)` (five templates per language, names with their articles), in every language
  of `vocab.LANGUAGES`; the students only ever saw English captions.
- `retrieval/{i2t,t2i}_r{1,5}`: caption <-> image retrieval on the multi-object test scenes, five
  captions per image.
- `segmentation/miou`: zero-shot segmentation from patch embeddings (`encode_patches`), each class
  prompted with the English templates and the background with the dataset's background names; the whole
  scene is one 64 px window, as in training.
- `linear_seg/miou`: a linear head on frozen patch tokens, trained on train-split scenes (per-patch
  majority labels), scored on the test scenes.
- `linear_probe/acc1`: logistic regression on the frozen class token of single-object scenes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from sfclip.data.transforms import eval_transform
from sfclip.demo import vocab
from sfclip.demo.data import DemoData
from sfclip.demo.sources import BACKGROUNDS
from sfclip.eval import linear_probe, linear_segmentation, retrieval, segmentation, zeroshot
from sfclip.eval.segmentation_data import segmentation_dataset

__all__ = ["evaluate_student", "METRICS"]

log = logging.getLogger(__name__)

# Metrics every model reports, in table order (zero-shot languages are added per language).
METRICS = ("retrieval/i2t_r1", "retrieval/t2i_r1", "segmentation/miou", "linear_seg/miou", "linear_probe/acc1")


def _subset(dataset, n: int):
    dataset.pairs = dataset.pairs[:n]
    return dataset


def evaluate_student(model: nn.Module, tokenizer, data: DemoData, mean: list[float], std: list[float], *,
                     seg_eval: int, source: str = "fashion", pictures_dir: Path | None = None,
                     device: str = "cpu") -> dict[str, float]:
    """Every demo metric of `model` (a trained `SFCLIP` in eval mode) as a flat dict."""
    size = int(model.visual.image_size)
    transform = eval_transform(size, mean, std)
    out: dict[str, float] = {}
    common = {"device": device, "progress": False, "batch_size": 128}
    for lang in vocab.LANGUAGES:
        names = vocab.classnames(lang, source)
        prompts = dict(zip(names, vocab.prompts(lang, source)))
        m = zeroshot.run(model, tokenizer, data.classification, transform=transform, classnames=names,
                         templates=["{c}"], class_prompts=prompts, **common,
                         pictures_dir=pictures_dir if lang == "en" else None)
        out[f"zeroshot/{lang}/acc1"] = m["acc1"]
    out["zeroshot/mean_other/acc1"] = sum(out[f"zeroshot/{lang}/acc1"] for lang in vocab.LANGUAGES[1:]) / (
        len(vocab.LANGUAGES) - 1)

    m = retrieval.run(model, tokenizer, data.retrieval, transform=transform, **common)
    out.update({f"retrieval/{k}": m[k] for k in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")})

    classes = ["background", *vocab.prompt_names("en", source)]
    templates = [t.replace("{}", "{c}") for t in vocab.templates("en", source)]
    bare = ["background", *vocab.classnames("en", source)]
    seg_set = _subset(segmentation_dataset(data.segmentation), seg_eval)
    m = segmentation.run(model, tokenizer, seg_set, classnames=classes, mean=mean, std=std, templates=templates,
                         resize_short=size, stride=size, background="prompts",
                         background_prompts=[f"a photo of {bg}." for bg in BACKGROUNDS.values()],
                         pictures_dir=pictures_dir, num_pictures=4, **{**common, "batch_size": 16})
    out["segmentation/miou"], out["segmentation/pixel_acc"] = m["miou"], m["pixel_acc"]

    m = linear_segmentation.run(model, tokenizer, (segmentation_dataset(data.seg_train), seg_set), classnames=bare,
                                mean=mean, std=std, resize_short=size, stride=size, epochs=20,
                                **{**common, "batch_size": 64})
    out["linear_seg/miou"] = m["miou"]

    m = linear_probe.run(model, tokenizer, data.probe_train, data.classification, transform=transform,
                         classnames=vocab.classnames("en", source), feature="cls", **common)
    out["linear_probe/acc1"] = m["acc1"]
    return {k: float(v) for k, v in out.items()}

