"""Weights in and out of other tools: OpenCLIP folders (export and import) and timm ViTs (import).

`export_open_clip` writes an sfclip checkpoint as a folder that `open_clip.create_model_and_transforms(
"local-dir:DIR")` loads; `init_student` starts a student's towers from an OpenCLIP or timm model
(`student.init`). Both map tensors by name and fold what is linear (the patch-embedding bias, an inherited
table's projection and scale); what cannot be mapped exactly is refused with a line naming the layer.
"""

from ..errors import InteropError
from .init import InitReport, init_student
from .open_clip import export_open_clip

__all__ = ["InteropError", "InitReport", "export_open_clip", "init_student"]
