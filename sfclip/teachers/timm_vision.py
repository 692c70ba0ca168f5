"""Vision teachers from timm (optional extra: `pip install 'sfclip[timm]'`): ViTs and CNNs alike."""

from __future__ import annotations

import torch

from .base import VisionTeacher

__all__ = ["TimmVisionTeacher", "load_timm_vision"]


class TimmVisionTeacher(VisionTeacher):
    """`forward_features` of a timm model: token sequences (ViT) or feature maps (CNN) as patch tokens."""

    def __init__(self, name: str, model, image_size: int, patch_size: int, mean, std,
                 dtype: torch.dtype = torch.float32) -> None:
        width = int(getattr(model, "num_features", 0) or model.embed_dim)
        super().__init__(name, width, image_size, patch_size, tuple(mean), tuple(std), dtype)
        self.model = model
        self.num_prefix = int(getattr(model, "num_prefix_tokens", 0))
        self.freeze()

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.model.forward_features(images)
        if x.ndim == 4:  # CNN feature map (B, C, h, w)
            patch = x.flatten(2).transpose(1, 2)  # (B, N, C)
            return {"cls": patch.mean(1), "patch": patch}
        patch = x[:, self.num_prefix:]  # (B, N, D)
        cls = x[:, 0] if self.num_prefix else patch.mean(1)
        return {"cls": cls, "patch": patch}


def load_timm_vision(name: str, model_name: str, image_size: int = 0, dtype: torch.dtype = torch.float32):
    try:
        import timm
    except ImportError:
        raise ImportError(f"teacher {name!r} uses timm, which is not installed: pip install 'sfclip[timm]'") from None
    kwargs = {"img_size": image_size, "dynamic_img_size": True} if image_size and "vit" in model_name else {}
    model = timm.create_model(model_name, pretrained=True, num_classes=0, **kwargs)
    data = timm.data.resolve_data_config({}, model=model)
    size = image_size or int(data["input_size"][-1])
    if hasattr(model, "patch_embed"):
        ps = model.patch_embed.patch_size
        patch = ps[0] if isinstance(ps, (tuple, list)) else int(ps)
    else:
        patch = int(model.feature_info[-1]["reduction"])
    return TimmVisionTeacher(name, model, size, patch, data["mean"], data["std"], dtype)
