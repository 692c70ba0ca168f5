"""The runners on an accelerator: inputs follow `device`, results match the CPU (skipped without CUDA)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_fixtures import NAMES, ColourOracle, block_image, save_mask, solid

from sfclip.eval import evaluate, image_transform
from sfclip.eval.images import CLIP_MEAN, CLIP_STD

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_runners_on_cuda_match_cpu(tmp_path, tok):
    transform = image_transform(32, CLIP_MEAN, CLIP_STD)
    images = []
    for name in NAMES[:5]:
        (tmp_path / "cls" / name).mkdir(parents=True)
        for i in range(3):
            solid(name, (32 + i, 32)).save(tmp_path / "cls" / name / f"{i}.png")
        images.append({"filepath": f"cls/{name}", "filename": "0.png", "split": "test",
                       "sentences": [{"raw": f"the {name}"}, {"raw": f"a photo of the {name} ."}]})
    (tmp_path / "d.json").write_text(json.dumps({"images": images}))
    for i in range(2):
        grid = np.repeat(np.array([[0, 1, 2, 1, 0, 2]]), 4, axis=0)
        img, mask = block_image(grid, 8)
        (tmp_path / "seg" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "seg" / "masks").mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "seg" / "images" / f"{i}.png")
        save_mask(mask, tmp_path / "seg" / "masks" / f"{i}.png")
    tasks = {
        "zeroshot_classification": dict(data=tmp_path / "cls", transform=transform, templates=["a {c} ."]),
        "retrieval": dict(data=tmp_path / "d.json", transform=transform, chunk_size=2),
        "linear_probe": dict(train_data=tmp_path / "cls", test_data=tmp_path / "cls", transform=transform),
        "zeroshot_segmentation": dict(data=tmp_path / "seg", classnames=NAMES[:3], mean=CLIP_MEAN,
                                      std=CLIP_STD, templates=["a {c} ."], resize_short=None, stride=16),
    }
    model = ColourOracle(tok)
    for task, kw in tasks.items():
        cpu = evaluate(task, model, tok, progress=False, **kw)
        gpu = evaluate(task, model.to("cuda"), tok, device="cuda", progress=False, **kw)
        model.cpu()
        assert gpu == pytest.approx(cpu), task
        assert all(v == 1.0 for k, v in gpu.items()), (task, gpu)
    with pytest.raises(ValueError, match="move the model"):
        evaluate("retrieval", model, tok, device="cuda", progress=False, **tasks["retrieval"])
