"""`sfclip export`: a student as another tool's model folder (today: OpenCLIP). See `sfclip.interop`."""

from .interop.open_clip import export_open_clip

__all__ = ["export_open_clip"]
