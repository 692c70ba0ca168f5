"""The built-in demo dataset: tinted Fashion-MNIST objects on photo backgrounds, with English captions,
class masks and multilingual zero-shot vocabulary (see `scenes`, `vocab`, `sources`)."""

from sfclip.demo.scenes import (
    IGNORE_INDEX,
    SceneConfig,
    Scenes,
    iter_scenes,
    render_scenes,
    write_eval_sets,
    write_shards,
)

__all__ = ["IGNORE_INDEX", "SceneConfig", "Scenes", "iter_scenes", "render_scenes", "write_eval_sets",
           "write_shards"]
