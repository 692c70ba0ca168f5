"""A text teacher's prefix and pooling: config fields first, then the source's own metadata, then the known
default of its hub id (E5: "query: "); and the ViT-B/16 recipes set them for their E5 teacher."""

import json
import shutil

import pytest
import torch

from sfclip.build import StudentConfig, build_objective
from sfclip.config import load_config
from sfclip.objective import ObjectiveConfig
from sfclip.teachers import TeacherConfig, build_teacher
from sfclip.teachers.hf import text_options


@pytest.mark.parametrize("source, prefix, pooling, want", [
    ("hf:intfloat/multilingual-e5-base", None, "auto", ("query: ", "mean")),
    ("intfloat/multilingual-e5-large", None, "auto", ("query: ", "mean")),
    ("hf:intfloat/e5-small-v2", None, "auto", ("query: ", "mean")),
    ("offline:multilingual-e5-small", None, "auto", ("query: ", "mean")),
    ("hf:intfloat/multilingual-e5-base", "", "cls", ("", "cls")),  # the config wins, "" = no prefix
    ("hf:bert-base-uncased", None, "auto", ("", "mean")),
    ("hf:intfloat/e5-mistral-7b-instruct", None, "auto", ("", "mean")),  # instructions, not "query: "
])
def test_text_options_resolution(source, prefix, pooling, want):
    assert text_options(source, prefix, pooling) == want


def test_a_folders_metadata_is_used_unless_the_config_sets_the_field(tmp_path, tiny_text_teacher_dir):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_text_teacher_dir, folder)
    (folder / "sfclip_teacher.json").write_text(json.dumps({"text_prefix": "passage: ", "pooling": "cls"}))
    assert text_options(str(folder)) == ("passage: ", "cls")
    assert text_options(str(folder), "", "mean") == ("", "mean")
    t = build_teacher(TeacherConfig(name="t", kind="text", source=str(folder)))
    assert (t.prefix, t.pooling) == ("passage: ", "cls")


def test_config_prefix_and_pooling_reach_the_teacher_and_the_tokenizer(tiny_text_teacher_dir, tiny_vision_teacher_dir):
    t = build_teacher(TeacherConfig(name="t", kind="text", source=str(tiny_text_teacher_dir), prefix="query: ",
                                    pooling="cls"))
    assert (t.prefix, t.pooling) == ("query: ", "cls")
    enc = t.tokenizer(["a red cat", "a dog"], padding=True, return_tensors="pt")
    out = t(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(out["pooled"], out["tokens"][:, 0])  # cls pooling, not the mean
    # without the fields, the tiny folder (no metadata, not a known hub id) has no prefix
    plain = build_teacher(TeacherConfig(name="t", kind="text", source=str(tiny_text_teacher_dir)))
    assert (plain.prefix, plain.pooling) == ("", "mean")

    ocfg = ObjectiveConfig(distill_fraction=0.5, teachers=[
        TeacherConfig(name="dino", kind="vision", source=str(tiny_vision_teacher_dir)),
        TeacherConfig(name="bert", kind="text", source=str(tiny_text_teacher_dir), prefix="photo ")])
    _, tok = build_objective(ocfg, StudentConfig(model="test-tiny"), [0.5] * 3, [0.5] * 3)
    assert tok.prefix == "photo "
    ids = tok(["cat"])["input_ids"][0].tolist()
    assert tok.hf.convert_ids_to_tokens(ids[:3]) == ["[CLS]", "photo", "cat"]


def test_prefix_and_pooling_are_checked():
    with pytest.raises(ValueError, match="pooling"):
        TeacherConfig(name="e5", kind="text", source="x", pooling="max")
    with pytest.raises(ValueError, match="text-teacher options"):
        TeacherConfig(name="dino", kind="vision", source="x", prefix="query: ")


@pytest.mark.parametrize("recipe", ["sfclip_vitb16_cc12m", "sfclip_vitb16_yfcc15m"])
def test_the_vitb16_recipes_give_e5_its_prefix(recipe):
    cfg = load_config(recipe)
    e5 = next(t for t in cfg.objective.teachers if t.kind == "text")
    assert e5.source == "hf:intfloat/multilingual-e5-base"
    assert (e5.prefix, e5.pooling) == ("query: ", "mean")


def test_a_recipe_tells_no_prefix_from_the_sources_own(tmp_path):
    recipe = tmp_path / "r.yaml"
    for value, want in (('""', ""), ("null", None), ("'query: '", "query: ")):
        teacher = f'{{name: e5, kind: text, source: "hf:intfloat/multilingual-e5-base", prefix: {value}}}'
        recipe.write_text(f"student: {{text_embedding: own, tokenizer: x}}\nobjective:\n  teachers:\n    - {teacher}\n")
        assert load_config(recipe).objective.teachers[0].prefix == want
