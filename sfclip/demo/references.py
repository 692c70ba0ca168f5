"""Reference rows of the demo's comparison: what the budget allows, and what the teacher knows.

- `reference/supervised/acc1`: the supervised ceiling. The student's image tower (same architecture,
  initialisation seed, training scenes, steps, batch, optimizer and schedule as the two compared models)
  trained on the object's class label with a linear classifier on its class token, scored on the same
  single-object test scenes. Neither image-text model can be expected to classify better than this.
- `reference/teacher_cls/acc1`, `reference/teacher_patch/acc1`: the linear probe (the demo's own
  protocol) on the vision teacher's class token and mean patch token, at the resolution the teacher was
  distilled at. What distillation could at best hand over.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sfclip.data.transforms import eval_transform
from sfclip.demo import vocab
from sfclip.demo.data import DemoData
from sfclip.demo.settings import DemoSettings, teacher_configs
from sfclip.eval import linear_probe
from sfclip.eval.classification_data import classification_dataset
from sfclip.eval.inference import evaluating, make_loader

__all__ = ["supervised_ceiling", "teacher_probe", "TeacherFeatures"]

log = logging.getLogger(__name__)


def _training_scenes(shards: Path, pairs: int, size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `pairs` training scenes as the student sees them (N, 3, S, S) and their class ids (N,), read
    with the training shard reader."""
    from collections import Counter

    from sfclip.data.spec import IMAGE_EXTS
    from sfclip.data.transforms import decode_image
    from sfclip.data.wds import read_shard

    transform = eval_transform(size, mean, std)  # the training view is the whole scene, resized: the same
    images, labels, counts = [], [], Counter()
    for url in sorted(str(p) for p in shards.glob("*.tar")):
        for raw in read_shard(url, counts):
            image = next(raw[ext] for ext in IMAGE_EXTS if ext in raw)
            images.append(transform(decode_image(image)))
            labels.append(int(json.loads(raw["json"])["objects"][0]["class_id"]))
            if len(images) == pairs:
                return torch.stack(images), torch.tensor(labels)
    return torch.stack(images), torch.tensor(labels)


def supervised_ceiling(s: DemoSettings, data: DemoData, mean, std, seed: int = 0, source: str = "fashion",
                       device: str = "cpu") -> dict[str, float]:
    """Train the student's image tower on class labels with the demo's budget; test top-1 and seconds."""
    from sfclip.models import create_model
    from sfclip.train.optim import OptimConfig, build_optimizer, lr_lambda

    t0 = time.perf_counter()
    size = s.image_size
    x, y = _training_scenes(data.train, s.budgets[0], size, mean, std)
    torch.manual_seed(seed)
    model = create_model(s.model, **s.overrides)
    tower = model.visual.to(device)
    classifier = nn.Linear(tower.width, len(vocab.classnames("en", source))).to(device)
    model.heads = nn.ModuleDict({"classifier": classifier})  # so the optimizer's grouping covers it
    for p in model.text.parameters():
        p.requires_grad_(False)
    model.logit_scale.requires_grad_(False)
    model.logit_bias.requires_grad_(False)
    ocfg = OptimConfig(lr=s.lr, weight_decay=s.weight_decay, warmup_steps=max(1, int(s.warmup_fraction * s.steps)))
    opt = build_optimizer(model, ocfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(ocfg, s.steps))
    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    tower.train()
    for _ in range(s.steps):
        if len(order) < s.batch_size:  # epochs of a fresh permutation, as the shuffled shards give
            order = torch.cat([order, torch.randperm(len(y), generator=gen)])
        idx, order = order[:s.batch_size], order[s.batch_size:]
        logits = classifier(tower(x[idx].to(device))["cls"])
        loss = F.cross_entropy(logits, y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
    test = classification_dataset(data.classification, vocab.classnames("en", source))
    test.transform = eval_transform(size, mean, std)
    correct = total = 0
    with evaluating(tower), torch.no_grad():
        for images, labels in make_loader(test, 128, 0):
            pred = classifier(tower(images.to(device))["cls"]).argmax(1).cpu()
            correct += int((pred == torch.as_tensor(labels)).sum())
            total += len(labels)
    acc = correct / max(total, 1)
    log.info("supervised ceiling: %.3f after %d steps (%.0fs)", acc, s.steps, time.perf_counter() - t0)
    return {"reference/supervised/acc1": acc, "reference/supervised/seconds": time.perf_counter() - t0,
            "reference/supervised/final_loss": float(loss)}


class TeacherFeatures(nn.Module):
    """A vision teacher behind the student's `forward_features` surface (images already in [0, 1])."""

    def __init__(self, teacher) -> None:
        super().__init__()
        self.teacher = teacher

    def forward_features(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.teacher(images01)
        return {"cls": out["cls"], "patch": out["patch"]}


def teacher_probe(s: DemoSettings, data: DemoData, source: str = "fashion", device: str = "cpu") -> dict[str, float]:
    """The demo's linear probe on the vision teacher's class token and mean patch token."""
    from sfclip.build import StudentConfig, build_teachers
    from sfclip.objective import ObjectiveConfig

    t0 = time.perf_counter()
    vision = [tc for tc in teacher_configs(s) if tc.kind == "vision"][:1]
    teacher = next(iter(build_teachers(ObjectiveConfig(teachers=vision), StudentConfig(s.model, s.overrides)).values()))
    model = TeacherFeatures(teacher).to(device)
    transform = eval_transform(teacher.image_size, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    out = {}
    for feature, key in (("cls", "teacher_cls"), ("mean_patch", "teacher_patch")):
        m = linear_probe.run(model, None, data.probe_train, data.classification, transform=transform,
                             classnames=vocab.classnames("en", source), feature=feature, device=device,
                             progress=False, batch_size=128)
        out[f"reference/{key}/acc1"] = m["acc1"]
    out["reference/teacher/seconds"] = time.perf_counter() - t0
    log.info("teacher probe at %d px: cls %.3f, mean patch %.3f", teacher.image_size,
             out["reference/teacher_cls/acc1"], out["reference/teacher_patch/acc1"])
    return out
