"""Zero-shot classification: prompt loading, the text classifier, and the runner on every data layout."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import NAMES, ColourOracle, png_bytes, solid, write_tar
from torch import nn

from sfclip.eval import evaluate, image_transform, zeroshot
from sfclip.eval.images import CLIP_MEAN, CLIP_STD
from sfclip.eval.prompts import load_classnames, load_templates, text_classifier

TEMPLATES = ["a photo of the {c} .", "an image of one {c} ."]
TRANSFORM = image_transform(32, CLIP_MEAN, CLIP_STD)
CLASSES = NAMES[:6]  # six colours: enough for acc5


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "folder"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i, size in enumerate([(40, 32), (32, 50)]):  # non-square: exercises resize + centre crop
            solid(name, size).save(root / name / f"{i}.png")
    return root


def test_builtin_sets_and_files(tmp_path):
    assert len(load_classnames("imagenet1k")) == 1000
    assert load_classnames("imagenet1k")[0] == "tench"
    assert len(load_templates("openai_imagenet")) == 80
    assert len(load_templates("simple_imagenet")) == 7
    (tmp_path / "c.txt").write_text("cat\n\ndog\n")
    assert load_classnames(tmp_path / "c.txt") == ["cat", "dog"]
    (tmp_path / "t.json").write_text(json.dumps({"en": ["a {c}."], "de": ["ein {c}."]}))
    assert load_templates(tmp_path / "t.json", language="de") == ["ein {c}."]
    assert load_templates(tmp_path / "t.json") == ["a {c}."]  # English by default
    with pytest.raises(ValueError, match="\\{c\\}"):
        load_templates(["no placeholder"])
    with pytest.raises(ValueError, match="fr"):
        load_classnames({"en": ["x"], "de": ["y"]}, language="fr")
    with pytest.raises(FileNotFoundError, match="built-in"):
        load_classnames("not_a_set")


class BagOfWords(nn.Module):
    """Text embedding = normalized sum of random word vectors: different for every prompt."""

    def __init__(self, vocab: int, dim: int = 5) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, dim, generator=torch.Generator().manual_seed(0)))

    def encode_text(self, input_ids, attention_mask=None, normalize=True):
        emb = (self.table[input_ids] * attention_mask[..., None]).sum(1)
        return F.normalize(emb, dim=-1)


def test_text_classifier_is_the_renormalized_mean_of_prompt_embeddings(tok):
    model = BagOfWords(tok.vocab_size)
    classes = ["red", "blue"]
    with torch.inference_mode():
        got = text_classifier(model, tok, classes, TEMPLATES, torch.device("cpu"), batch_size=3,
                              progress=False)
        expected = []
        for c in classes:
            t = tok([tp.replace("{c}", c) for tp in TEMPLATES])
            emb = model.encode_text(t["input_ids"], t["attention_mask"])  # (T, E)
            expected.append(F.normalize(emb.mean(0), dim=-1))
    torch.testing.assert_close(got, torch.stack(expected))


def test_oracle_scores_one_and_wrong_model_less(folder, tok):
    oracle = ColourOracle(tok)
    out = zeroshot.run(oracle, tok, folder, transform=TRANSFORM, templates=TEMPLATES, progress=False)
    assert out == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}
    wrong = zeroshot.run(ColourOracle(tok, shift=1), tok, folder, transform=TRANSFORM, templates=TEMPLATES,
                         progress=False)
    assert wrong["acc1"] < 1.0 and wrong["mean_per_class_recall"] < 1.0
    useless = zeroshot.run(ColourOracle(tok, constant=True), tok, folder, transform=TRANSFORM,
                           templates=TEMPLATES, progress=False)
    assert useless["acc1"] == 0.0  # all tied: ties count against the model


def test_runs_in_eval_and_inference_mode_and_restores_modes(folder, tok):
    model = ColourOracle(tok)
    model.train()
    model.visual.eval()  # a submodule kept in eval (like a frozen teacher) must stay so
    zeroshot.run(model, tok, folder, transform=TRANSFORM, templates=TEMPLATES, progress=False)
    assert model.calls and all(inference and not training for inference, training in model.calls)
    assert model.training and model.proj.training and not model.visual.training


def test_csv_tsv_with_names_and_ints(tmp_path, tok):
    (tmp_path / "img").mkdir()
    rows_names, rows_ints = ["filepath,label"], ["filepath\tlabel"]
    for i, name in enumerate(CLASSES):
        solid(name).save(tmp_path / "img" / f"{name}.png")
        rows_names.append(f"img/{name}.png,{name}")
        rows_ints.append(f"img/{name}.png\t{i}")
    (tmp_path / "a.csv").write_text("\n".join(rows_names))
    (tmp_path / "b.tsv").write_text("\n".join(rows_ints))
    model = ColourOracle(tok)
    by_name = zeroshot.run(model, tok, tmp_path / "a.csv", transform=TRANSFORM, templates=TEMPLATES,
                           progress=False)
    assert by_name["acc1"] == 1.0
    by_int = zeroshot.run(model, tok, tmp_path / "b.tsv", transform=TRANSFORM, classnames=CLASSES,
                          templates=TEMPLATES, progress=False)
    assert by_int["acc1"] == 1.0
    # the same file read with the class names in another order must fail the oracle
    shuffled = CLASSES[1:] + CLASSES[:1]
    assert zeroshot.run(model, tok, tmp_path / "b.tsv", transform=TRANSFORM, classnames=shuffled,
                        templates=TEMPLATES, progress=False)["acc1"] == 0.0


def test_webdataset_cls_and_json(tmp_path, tok):
    samples = []
    for i, name in enumerate(CLASSES):
        label = {"cls": str(i)} if i % 2 else {"json": json.dumps({"label": name})}
        samples.append({"__key__": f"s{i:03d}", "png": png_bytes(solid(name)), **label})
    write_tar(tmp_path / "shard-000.tar", samples[:3])
    write_tar(tmp_path / "shard-001.tar", samples[3:])
    out = zeroshot.run(ColourOracle(tok), tok, str(tmp_path / "shard-{000..001}.tar"), transform=TRANSFORM,
                       classnames=CLASSES, templates=TEMPLATES, progress=False)
    assert out["acc1"] == 1.0 and out["acc5"] == 1.0


def test_per_language_names_and_templates(folder, tok):
    german = {"red": "rot", "green": "gruen", "blue": "blau", "yellow": "gelb", "cyan": "tuerkis",
              "magenta": "lila"}
    # folders map to class names by sorted position when the names differ from the folder names
    classnames = {"en": sorted(CLASSES), "de": [german[c] for c in sorted(CLASSES)]}
    templates = {"en": TEMPLATES, "de": ["ein foto von {c} ."]}
    out = evaluate("zeroshot_classification", ColourOracle(tok), tok, data=folder, transform=TRANSFORM,
                   classnames=classnames, templates=templates, language="de", progress=False)
    assert out["acc1"] == 1.0


def test_fewer_than_five_classes_has_no_acc5(tmp_path, tok):
    for name in CLASSES[:3]:
        (tmp_path / name).mkdir()
        solid(name).save(tmp_path / name / "0.png")
    out = zeroshot.run(ColourOracle(tok), tok, tmp_path, transform=TRANSFORM, templates=TEMPLATES,
                       progress=False)
    assert set(out) == {"acc1", "mean_per_class_recall"}


def test_pictures(folder, tok, tmp_path):
    pytest.importorskip("matplotlib")
    zeroshot.run(ColourOracle(tok), tok, folder, transform=TRANSFORM, templates=TEMPLATES, progress=False,
                 pictures_dir=tmp_path / "pics", num_pictures=3)
    pic = tmp_path / "pics" / "zeroshot_examples.png"
    assert pic.is_file() and pic.read_bytes()[:4] == b"\x89PNG"



def test_webdataset_through_a_pipe_and_a_glob_as_training_reads_them(tmp_path, tok):
    samples = [{"__key__": f"s{i:03d}", "png": png_bytes(solid(name)), "cls": str(i)} for i, name in enumerate(CLASSES)]
    write_tar(tmp_path / "shard-000.tar", samples[:3])
    write_tar(tmp_path / "shard-001.tar", samples[3:])
    kw = dict(transform=TRANSFORM, classnames=CLASSES, templates=TEMPLATES, progress=False)
    assert zeroshot.run(ColourOracle(tok), tok, f"pipe:cat {tmp_path}/shard-{{000..001}}.tar", **kw)["acc1"] == 1.0
    assert zeroshot.run(ColourOracle(tok), tok, str(tmp_path / "shard-*.tar"), **kw)["acc1"] == 1.0
    with pytest.raises(Exception, match="nothing.tar"):  # a failing command is an error, not an empty set
        zeroshot.run(ColourOracle(tok), tok, f"pipe:cat {tmp_path}/nothing.tar", **kw)
