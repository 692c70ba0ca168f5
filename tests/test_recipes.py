"""Packaged recipes: shipped inside the package, listed by `sfclip recipes`, found by name by `sfclip train`,
and the same files as `configs/`."""

from pathlib import Path

import pytest

from sfclip.cli import main
from sfclip.config import load_config
from sfclip.recipes import RECIPES_DIR, find_recipe, list_recipes, recipe_summary

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_configs_are_the_packaged_recipes():
    configs = sorted(CONFIGS.glob("*.yaml"))
    assert [p.name for p in configs] == [p.name for p in list_recipes().values()]
    for p in configs:  # links into the package: one file each, nothing to keep in step
        assert p.resolve() == (RECIPES_DIR / p.name).resolve(), p


def test_every_recipe_loads_and_has_a_header():
    assert {"smoke", "sfclip_vitb16_cc12m", "clip_vitb16_cc12m"} <= set(list_recipes())
    for name, path in list_recipes().items():
        cfg = load_config(name)
        assert cfg.name.replace("-", "_") == name  # the run folder is named after the recipe
        assert recipe_summary(path) and not recipe_summary(path).startswith("#")
        assert "Launch" in path.read_text() and "Expected" in path.read_text()


@pytest.mark.parametrize("name, stem", [("smoke", "smoke"), ("smoke.yaml", "smoke"),
                                        ("sfclip_vitb16_cc12m", "sfclip_vitb16_cc12m"),
                                        ("sfclip-vitb16-cc12m", "sfclip_vitb16_cc12m"),
                                        ("vitb16-cc12m", "sfclip_vitb16_cc12m"),
                                        ("clip-vitb16-yfcc15m", "clip_vitb16_yfcc15m")])
def test_bare_names_find_packaged_recipes(name, stem):
    assert find_recipe(name) == RECIPES_DIR / f"{stem}.yaml"


def test_a_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("smoke").write_text("name: mine\n")
    assert load_config("smoke").name == "mine"
    assert find_recipe("no_such_recipe") is None and find_recipe("a/smoke") is None


def test_sfclip_recipes_lists_them_with_their_header_line(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(list_recipes())
    line = next(x for x in out if x.startswith("sfclip_vitb16_cc12m "))
    assert "SF-CLIP ViT-B/16 on CC12M" in line and line.endswith("a multilingual text teacher.")  # the paragraph


def test_sfclip_config_takes_a_name_and_an_unknown_name_is_one_line(capsys):
    assert main(["config", "vitb16-cc12m", "train.epochs=1"]) == 0
    assert "name: sfclip-vitb16-cc12m" in capsys.readouterr().out
    assert main(["train", "no-such-recipe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-recipe does not exist" in err[0] and "smoke" in err[0]
