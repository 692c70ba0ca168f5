"""The demo's evaluation suite: one trained student -> every metric of the comparison, via `sfclip.eval`.

- `zeroshot/<lang>/acc1`: zero-shot classification of the single-object test scenes with the prompts
  of `vocab.prompts(lang)` (five templates per language, names with their articles), in every language
  of `vocab.LANGUAGES`; the students only ever saw English captions.
- `zeroshot_colour/<lang>/acc1`: the same scenes, classified by the object's colour (eight colours), each
  prompted by its bare colour word in that language. Colour is what both models learn first from these
  captions, so this isolates transfer to languages never seen in training from learning the concept at all.
- `retrieval/{i2t,t2i}_r{1,5}`: caption <-> image retrieval on the test scenes, five captions per image,
  positives by index (CLIP_benchmark's rule); `..._text`: a caption with the same text as a positive counts
  too (most of these captions recur in other scenes); `retrieval/oracle_...`: the index rule's ceiling.
- `segmentation/miou`: zero-shot segmentation from patch embeddings (`encode_patches`), each class
  prompted with the English templates and each background by its own prompt (the best one is taken); the
  whole scene is one window at the student's resolution, as in training. `segmentation/<readout>/miou` for
  the training-free readouts `maskclip` and `clearclip`, and `segmentation/all_background/miou`: what
  labelling every pixel background scores (the same for every model).
- `linear_seg/miou`: a linear head on frozen patch tokens, trained on train-split scenes (per-patch
  majority labels), scored on the test scenes.
- `linear_probe/acc1`, `linear_probe_patch/acc1`: logistic regression on the frozen class token, and on
  the mean of the frozen patch tokens (what per-patch distillation trains), of single-object scenes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from sfclip.data.transforms import eval_transform
from sfclip.demo import vocab
from sfclip.demo.data import DemoData
from sfclip.demo.sources import BACKGROUNDS
from sfclip.eval import linear_probe, linear_segmentation, metrics, retrieval, segmentation, zeroshot
from sfclip.eval.classification_data import LabeledImages, classification_dataset
from sfclip.eval.inference import check_device, evaluating, make_loader
from sfclip.eval.pictures import save_classification_examples
from sfclip.eval.prompts import text_classifier
from sfclip.eval.segmentation_data import segmentation_dataset
from sfclip.models.vit import READOUTS

__all__ = ["evaluate_student", "METRICS"]

log = logging.getLogger(__name__)

# Metrics every model reports, in table order (zero-shot languages are added per language).
METRICS = ("linear_probe/acc1", "linear_probe_patch/acc1", "retrieval/i2t_r1", "retrieval/t2i_r1",
           "retrieval/i2t_r1_text", "retrieval/t2i_r1_text", "retrieval/oracle_i2t_r1", "retrieval/oracle_t2i_r1",
           "segmentation/miou", "segmentation/maskclip/miou", "segmentation/clearclip/miou",
           "segmentation/all_background/miou", "linear_seg/miou")


def colour_dataset(classification_csv: Path) -> LabeledImages:
    """The single-object test scenes labelled by their object's colour (index into `vocab.COLOURS`)."""
    folder = Path(classification_csv).parent
    colours = list(vocab.COLOURS)
    items = []
    with open(folder / "meta.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            items.append((folder / "images" / f"{row['index']:06d}.png", colours.index(row["objects"][0]["colour"])))
    return LabeledImages(items, colours)


def _zeroshot_languages(model: nn.Module, tokenizer, dataset: LabeledImages, transform, heads: dict, device: str,
                        pictures_dir: Path | None = None, correct: dict | None = None) -> dict[str, float]:
    """Zero-shot top-1 accuracy per language with one pass over the images: `heads` maps a language to
    (class names, {name: prompts} or None for the bare name); the classifiers are stacked (L*C, E)."""
    dev = check_device(model, device)
    dataset.transform = transform
    with evaluating(model):
        weights = {lang: text_classifier(model, tokenizer, names, ["{c}"], dev, prompts, progress=False)
                   for lang, (names, prompts) in heads.items()}
        logits, labels = zeroshot.classify(model, make_loader(dataset, 128, 0), torch.cat(list(weights.values())),
                                           dev, progress=False)
    out, start = {}, 0
    for lang, w in weights.items():
        out[lang] = metrics.accuracy(logits[:, start:start + len(w)], labels, (1,))[1]
        if correct is not None:
            # the accuracy's own rule (a tie with the target is a miss), per scene
            correct[lang] = (metrics.target_ranks(logits[:, start:start + len(w)], labels) == 0).cpu().numpy()
        if pictures_dir is not None and start == 0:
            n = min(8, len(dataset))
            names = heads[lang][0]
            save_classification_examples(Path(pictures_dir) / "zeroshot_examples.png",
                                         [dataset.image(i) for i in range(n)], [names[int(t)] for t in labels[:n]],
                                         [names[int(p)] for p in logits[:n, :len(w)].argmax(1)])
        start += len(w)
    return out


def retrieval_oracle(captions_json: Path) -> dict[str, float]:
    """`retrieval/oracle_{i2t,t2i}_r{1,5}` of a retrieval set: the index rule's ceiling, from its captions alone
    (`metrics.oracle_retrieval_ranks`)."""
    from sfclip.eval.retrieval_data import retrieval_dataset

    texts, owners = retrieval_dataset(captions_json, split=None).flat_captions()
    i2t, t2i = metrics.oracle_retrieval_ranks(torch.tensor(owners), metrics.text_groups(texts))
    out = {f"retrieval/oracle_i2t_r{k}": v for k, v in metrics.recall_at_k(i2t, (1, 5)).items()}
    out.update({f"retrieval/oracle_t2i_r{k}": v for k, v in metrics.recall_at_k(t2i, (1, 5)).items()})
    return out


def all_background(dataset, num_classes: int) -> dict[str, float]:
    """mIoU and pixel accuracy of labelling every pixel background (class 0): the floor a dense readout must
    beat on these scenes."""
    from sfclip.eval.images import load_mask

    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for _, mask_path in dataset.pairs:
        mask = load_mask(mask_path).long()  # (H, W), the size the readouts are scored at
        conf += metrics.confusion_matrix(torch.zeros_like(mask), mask, num_classes, dataset.ignore_index)
    return {"miou": metrics.mean_iou(conf), "pixel_acc": metrics.pixel_accuracy(conf)}


def _subset(dataset, n: int):
    dataset.pairs = dataset.pairs[:n]
    return dataset


def evaluate_student(model: nn.Module, tokenizer, data: DemoData, mean: list[float], std: list[float], *,
                     seg_eval: int, source: str = "fashion", pictures_dir: Path | None = None,
                     device: str = "cpu", per_sample: dict | None = None) -> dict[str, float]:
    """Every demo metric of `model` (a trained `SFCLIP` in eval mode) as a flat dict, on the evaluation sets
    that `data` points at (`data.split("val")` for choosing settings).

    per_sample: a dict that receives, for each accuracy metric of single-object scenes (zero-shot class and
    colour per language, both linear probes), the per-scene correctness as a bool array in scene order, under
    the metric's name without `/acc1`: what a bootstrap over test scenes resamples.
    """
    size = int(model.visual.image_size)
    transform = eval_transform(size, mean, std)
    out: dict[str, float] = {}
    common = {"device": device, "progress": False, "batch_size": 128}
    objects = classification_dataset(data.classification, vocab.classnames("en", source))
    heads = {lang: (vocab.classnames(lang, source),
                    dict(zip(vocab.classnames(lang, source), vocab.prompts(lang, source))))
             for lang in vocab.LANGUAGES}
    correct: dict = {}
    for lang, acc in _zeroshot_languages(model, tokenizer, objects, transform, heads, device, pictures_dir,
                                         correct).items():
        out[f"zeroshot/{lang}/acc1"] = acc
    keep = {f"zeroshot/{lang}": c for lang, c in correct.items()}
    heads = {lang: (vocab.COLOUR_NAMES[lang], None) for lang in vocab.LANGUAGES}
    colours = colour_dataset(data.classification)
    correct = {}
    for lang, acc in _zeroshot_languages(model, tokenizer, colours, transform, heads, device,
                                         correct=correct).items():
        out[f"zeroshot_colour/{lang}/acc1"] = acc
    keep.update({f"zeroshot_colour/{lang}": c for lang, c in correct.items()})
    for task in ("zeroshot", "zeroshot_colour"):
        out[f"{task}/mean_other/acc1"] = sum(out[f"{task}/{lang}/acc1"] for lang in vocab.LANGUAGES[1:]) / (
            len(vocab.LANGUAGES) - 1)

    m = retrieval.run(model, tokenizer, data.retrieval, transform=transform, split=None, **common)
    out.update({f"retrieval/{pre}{k}{post}": m[f"{pre}{k}{post}"] for k in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")
                for pre, post in (("", ""), ("", "_text"), ("oracle_", ""))})

    classes = ["background", *vocab.prompt_names("en", source)]
    templates = [t.replace("{}", "{c}") for t in vocab.templates("en", source)]
    bare = ["background", *vocab.classnames("en", source)]
    seg_set = _subset(segmentation_dataset(data.segmentation), seg_eval)
    for readout in READOUTS:
        m = segmentation.run(model, tokenizer, seg_set, classnames=classes, mean=mean, std=std, templates=templates,
                             resize_short=size, stride=size, background="prompts",
                             background_prompts=[f"a photo of {bg}." for bg in BACKGROUNDS.values()],
                             pictures_dir=pictures_dir if readout == "plain" else None, num_pictures=4,
                             readout=readout, **{**common, "batch_size": 16})
        key = "segmentation" if readout == "plain" else f"segmentation/{readout}"
        out[f"{key}/miou"], out[f"{key}/pixel_acc"] = m["miou"], m["pixel_acc"]
    out.update({f"segmentation/all_background/{k}": v for k, v in all_background(seg_set, len(classes)).items()})

    m = linear_segmentation.run(model, tokenizer, (segmentation_dataset(data.seg_train), seg_set), classnames=bare,
                                mean=mean, std=std, resize_short=size, stride=size, epochs=20,
                                **{**common, "batch_size": 64})
    out["linear_seg/miou"] = m["miou"]

    for feature, key in (("cls", "linear_probe"), ("mean_patch", "linear_probe_patch")):
        logits, labels = linear_probe.probe_logits(model, data.probe_train, data.classification, transform=transform,
                                                   classnames=vocab.classnames("en", source), feature=feature,
                                                   **common)
        hit = (metrics.target_ranks(logits, labels) == 0).numpy()  # (N,) bool, ties are misses as in acc1
        out[f"{key}/acc1"] = metrics.accuracy(logits, labels, (1,))[1]
        keep[key] = hit
    if per_sample is not None:
        per_sample.update(keep)
    return {k: float(v) for k, v in out.items()}

