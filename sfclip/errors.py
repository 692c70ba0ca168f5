"""The error types that mean "bad input" across the package (the CLI prints them as one line).

A leaf module, so that any part of the package can raise them without importing what composes the run.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InteropError"]


class ConfigError(ValueError):
    """A recipe or override that cannot work; the message names the key."""


class InteropError(ValueError):
    """A model that cannot be mapped exactly to or from another tool's layout; the message names the layer."""
