"""The recipes shipped inside the package: `sfclip recipes` lists them, `sfclip train NAME` finds them.

Each recipe is a YAML file in this folder whose header (the leading `#` lines) says what it is for, the
launch command, the hardware it was sized for and the result it is expected to give. `configs/` in the
repository holds links to these files, so `configs/NAME.yaml` and the bare `NAME` are the same recipe.

A bare name is a file stem here, `-` read as `_`, with the `sfclip_` prefix optional: `smoke`,
`sfclip_vitb16_cc12m`, `sfclip-vitb16-cc12m` and `vitb16-cc12m` name the SF-CLIP recipe; its CLIP
baseline is `clip_vitb16_cc12m`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RECIPES_DIR", "list_recipes", "find_recipe", "recipe_summary"]

RECIPES_DIR = Path(__file__).parent


def list_recipes() -> dict[str, Path]:
    """Packaged recipes by name (the file stem), sorted."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def find_recipe(name: str) -> Path | None:
    """The packaged recipe a bare name means (see the module docstring), or None."""
    if not name or "/" in name or "\\" in name:
        return None
    stem = name.removesuffix(".yaml").replace("-", "_")
    recipes = list_recipes()
    return recipes.get(stem) or recipes.get(f"sfclip_{stem}")


def recipe_summary(path: str | Path) -> str:
    """The first paragraph of a recipe's header comment (what it is), on one line, without the `#`."""
    words: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            break
        text = text.lstrip("# ")
        if not text and words:
            break
        words += text.split()
    return " ".join(words)
