"""Target caches: cached teacher outputs give the same losses as live teachers through the real loader and
objective; a cache that does not match the run is refused; samples the cache lacks are skipped and counted."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from data_helpers import image_bytes, write_shard

from sfclip.build import StudentConfig, build_objective, build_teachers
from sfclip.data import DataConfig, build_train_loader
from sfclip.data.target_build import build_target_cache
from sfclip.data.targets import MISSING_TARGET, TargetCache, TargetCacheError
from sfclip.objective import ObjectiveConfig
from sfclip.teachers import TeacherConfig
from sfclip.teachers.cached import CachedVisionTeacher

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
# Words of the tiny BERT's vocabulary (tests/conftest.py), so captions tokenize to real ids.
WORDS = "a photo of the red green blue yellow cat dog car tree house on left right top bottom grass brick".split()


def samples(shard: int, n: int, size=(40, 40)) -> list[dict]:
    rng = np.random.default_rng(shard)
    return [{"__key__": f"{shard:03d}{i:04d}", "png": image_bytes("PNG", size=size, seed=shard * 100 + i),
             "txt": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))} for i in range(n)]


def write_data(root, shards=2, per_shard=8, size=(40, 40)) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        write_shard(root / f"{s:05d}.tar", samples(s, per_shard, size))
    (root / "sizes.json").write_text(json.dumps({f"{s:05d}.tar": per_shard for s in range(shards)}))
    return str(root / f"{{00000..{shards - 1:05d}}}.tar")


def teacher_cfgs(vision_dir, text_dir, **vision_kw):
    return [TeacherConfig(name="dino", kind="vision", source=str(vision_dir), **vision_kw),
            TeacherConfig(name="bert", kind="text", source=str(text_dir))]


def data_cfg(spec, **kw) -> DataConfig:
    base = dict(train_data=spec, image_size=32, batch_size=8, workers=0, shuffle_buffer=0, crop_scale=[1.0, 1.0],
                ratio=[1.0, 1.0])
    return DataConfig(**{**base, **kw})


@pytest.fixture
def setup(tmp_path, tiny_vision_teacher_dir, tiny_text_teacher_dir):
    spec = write_data(tmp_path / "shards")
    ocfg = ObjectiveConfig(distill_fraction=0.5, teachers=teacher_cfgs(tiny_vision_teacher_dir, tiny_text_teacher_dir))
    scfg = StudentConfig(model="test-tiny")
    obj, tok = build_objective(ocfg, scfg, MEAN, STD)
    cache = build_target_cache(data_cfg(spec), ocfg.teachers, tmp_path / "cache", batch_size=5,
                               context_length=tok.context_length, prebuilt=obj.teachers, progress=False)
    return spec, ocfg, scfg, obj, tok, cache


def first_batch(cfg: DataConfig, tok) -> dict:
    loader, _ = build_train_loader(cfg, tok)
    return next(iter(loader))


def losses(obj, batch) -> dict[str, float]:
    obj = copy.deepcopy(obj)  # same masking RNG state for both batches
    torch.manual_seed(0)
    with torch.no_grad():
        out = obj(batch)
    return {k: float(v) for k, v in out.items() if k.endswith("_loss")}


@pytest.mark.parametrize("workers", [0, 1])
def test_cached_targets_give_the_live_losses(setup, workers):
    spec, ocfg, scfg, obj, tok, cache = setup
    live = first_batch(data_cfg(spec, teacher_sizes=[16], workers=workers), tok)
    cached = first_batch(data_cfg(spec, targets=str(cache), workers=workers), tok)
    assert live["__key__"] == cached["__key__"]
    assert "teacher_image" not in cached and set(cached["targets"]) == {"dino", "bert"}
    assert cached["targets"]["dino"]["patch"].dtype == torch.float16
    assert cached["targets"]["dino"]["patch"].shape == (8, 16, 20)  # 4x4 grid, width 20
    assert cached["targets"]["bert"]["tokens"].shape == (8, tok.context_length, 24)
    want, got = losses(obj, live), losses(obj, cached)
    assert set(want) == {"contrastive_loss", "dino_loss", "bert_loss"} and set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=2e-3, abs=2e-3), k
    # The stored rows are the teacher's outputs for those samples, to fp16 precision.
    with torch.no_grad():
        res = obj.teachers["dino"](live["teacher_image"][16].float() / 255)
    torch.testing.assert_close(cached["targets"]["dino"]["patch"].float(), res["patch"], rtol=2e-3, atol=2e-3)
    # The summary (class) token beside them, for summary_weight runs.
    assert cached["targets"]["dino"]["cls"].shape == (8, 20)
    torch.testing.assert_close(cached["targets"]["dino"]["cls"].float(), res["cls"], rtol=2e-3, atol=2e-3)


def test_cache_meta_and_reuse(setup):
    spec, ocfg, scfg, obj, tok, cache = setup
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["num_rows"] == 16 and meta["complete"] and meta["dtype"] == "float16"
    assert meta["teachers"]["dino"]["grid"] == [4, 4] and meta["teachers"]["dino"]["image_size"] == 16
    assert meta["teachers"]["bert"]["context_length"] == tok.context_length
    assert (cache / "keys.txt").read_text().split() == [f"{s:03d}{i:04d}" for s in range(2) for i in range(8)]
    stamp = (cache / "dino.patch.npy").stat().st_mtime_ns
    again = build_target_cache(data_cfg(spec), ocfg.teachers, cache, context_length=tok.context_length,
                               prebuilt=obj.teachers, progress=False)
    assert again == cache and (cache / "dino.patch.npy").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_interrupted_build_resumes(setup, tmp_path):
    spec, ocfg, scfg, obj, tok, cache = setup
    kwargs = dict(context_length=tok.context_length, prebuilt=obj.teachers, progress=False, batch_size=4)
    calls = []
    bert = obj.teachers["bert"]
    original = bert.forward

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    bert.forward = failing
    with pytest.raises(KeyboardInterrupt):
        build_target_cache(data_cfg(spec), ocfg.teachers, tmp_path / "resumed", **kwargs)
    bert.forward = original
    partial = tmp_path / ".resumed.partial"
    assert len((partial / "keys.txt").read_text().split()) == 8  # two batches of four were complete
    build_target_cache(data_cfg(spec), ocfg.teachers, tmp_path / "resumed", **kwargs)
    assert not partial.exists()
    # against an uninterrupted build in the same batches: bit-equal in any dtype (bf16 kernels may round a value
    # differently in a batch of another size, so `setup`'s cache of batches of 5 is not the reference)
    whole = build_target_cache(data_cfg(spec), ocfg.teachers, tmp_path / "whole", **kwargs)
    for name in ("dino.patch.npy", "bert.tokens.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "resumed" / name), np.load(whole / name))


def test_missing_keys_are_skipped_and_counted(setup, tmp_path, tiny_vision_teacher_dir, tiny_text_teacher_dir):
    spec, ocfg, scfg, obj, tok, cache = setup
    # One shard: the cached samples of shard 0 with three uncached ones among them.
    mixed = samples(0, 8)
    new = samples(7, 3)
    mixed = mixed[:2] + new[:1] + mixed[2:5] + new[1:] + mixed[5:]
    root = tmp_path / "mixed"
    root.mkdir()
    write_shard(root / "00000.tar", mixed)
    batch = first_batch(data_cfg(str(root / "00000.tar"), targets=str(cache), num_samples=8), tok)
    assert batch["__key__"] == [f"000{i:04d}" for i in range(8)]
    assert batch["skipped"][MISSING_TARGET] == 3
    # Without a cache the key does not appear at all (the documented keys stay as they were).
    plain = first_batch(data_cfg(str(root / "00000.tar"), num_samples=8), tok)
    assert MISSING_TARGET not in plain["skipped"]


def test_mismatching_cache_is_refused(setup, tiny_vision_teacher_dir, tiny_text_teacher_dir, tmp_path):
    spec, ocfg, scfg, obj, tok, cache = setup
    ok = build_teachers(ocfg, scfg, str(cache), data_cfg(spec))
    assert isinstance(ok["dino"], CachedVisionTeacher) and ok["dino"].width == 20 and ok["dino"].image_size == 16
    assert not isinstance(ok["bert"], CachedVisionTeacher)  # text teachers load: the student inherits them

    cases = {
        "source": (ObjectiveConfig(teachers=[TeacherConfig(name="dino", kind="vision", source="elsewhere"),
                                             ocfg.teachers[1]]), scfg, data_cfg(spec)),
        "grid": (ObjectiveConfig(teachers=teacher_cfgs(tiny_vision_teacher_dir, tiny_text_teacher_dir,
                                                       image_size=32)), scfg, data_cfg(spec)),
        "context length": (ocfg, StudentConfig(model="test-tiny", overrides={"text.context_length": 12}),
                           data_cfg(spec)),
        "crop_scale": (ocfg, scfg, data_cfg(spec, crop_scale=[0.5, 1.0])),
        "hflip": (ocfg, scfg, data_cfg(spec, hflip=True)),
        "none of the run's data files": (ocfg, scfg, data_cfg(write_data(tmp_path / "other"))),
    }
    for what, (o, s, d) in cases.items():
        with pytest.raises(TargetCacheError, match=what):
            build_teachers(o, s, str(cache), d)
    with pytest.raises(TargetCacheError, match="no target cache"):
        build_teachers(ocfg, scfg, str(tmp_path / "nothing"), data_cfg(spec))


def test_the_cache_dtype_rule(setup, tiny_vision_teacher_dir, tiny_text_teacher_dir):
    """An explicit teacher dtype needs a cache computed in it; "auto" takes a cache computed in any dtype."""
    spec, ocfg, scfg, obj, tok, cache = setup
    meta = json.loads((cache / "meta.json").read_text())
    computed = meta["teachers"]["dino"]["computed_in"]
    from sfclip.precision import auto_dtype

    assert computed == str(auto_dtype("cpu")).removeprefix("torch.")  # the cache was built with "auto"
    other = "bfloat16" if computed == "float32" else "float32"

    def run(dtype):
        return ObjectiveConfig(teachers=teacher_cfgs(tiny_vision_teacher_dir, tiny_text_teacher_dir, dtype=dtype))

    for dtype in ("auto", computed):
        assert isinstance(build_teachers(run(dtype), scfg, str(cache), data_cfg(spec))["dino"], CachedVisionTeacher)
    with pytest.raises(TargetCacheError, match=f"computes in {other} in the run, the cache was computed in {computed}"):
        build_teachers(run(other), scfg, str(cache), data_cfg(spec))
    # a cache computed in bf16 (as `auto` builds it on a CPU with bf16 instructions) serves an "auto" run
    # anywhere, and is refused to a run that asks for fp32
    meta["teachers"]["dino"]["computed_in"] = "bfloat16"
    (cache / "meta.json").write_text(json.dumps(meta))
    assert isinstance(build_teachers(run("auto"), scfg, str(cache), data_cfg(spec))["dino"], CachedVisionTeacher)
    with pytest.raises(TargetCacheError, match="the cache was computed in bfloat16"):
        build_teachers(run("float32"), scfg, str(cache), data_cfg(spec))


def test_the_text_prefix_is_recorded_and_checked(setup, tiny_vision_teacher_dir, tiny_text_teacher_dir):
    spec, ocfg, scfg, obj, tok, cache = setup
    bert = json.loads((cache / "meta.json").read_text())["teachers"]["bert"]
    assert (bert["prefix"], bert["pooling"]) == ("", "mean")  # the tiny folder's: no metadata, not a known id
    assert (bert["prefix_config"], bert["pooling_config"]) == (None, "auto")
    dino, plain = ocfg.teachers

    def run(**text_kw):
        return ObjectiveConfig(teachers=[dino, TeacherConfig(name="bert", kind="text", source=plain.source, **text_kw)])

    build_teachers(run(prefix=""), scfg, str(cache), data_cfg(spec))  # "" is what the cache holds: accepted
    build_teachers(run(pooling="cls"), scfg, str(cache), data_cfg(spec))  # pooling changes no cached token
    with pytest.raises(TargetCacheError, match="text prefix 'query: ' in the run, '' in the cache"):
        build_teachers(run(prefix="query: "), scfg, str(cache), data_cfg(spec))


def test_an_augmenting_crop_cannot_build_vision_targets(setup, tmp_path):
    spec, ocfg, scfg, obj, tok, cache = setup
    with pytest.raises(TargetCacheError, match="crop_scale"):
        build_target_cache(data_cfg(spec, crop_scale=[0.5, 1.0]), ocfg.teachers, tmp_path / "c",
                           context_length=tok.context_length, prebuilt=obj.teachers, progress=False)


def test_square_full_crop_is_the_eval_view():
    """Why crop_scale=[1, 1] is safe: for square images it renders the whole image, as eval does."""
    import random

    from PIL import Image

    from sfclip.data import ImageTransform

    img = Image.open(__import__("io").BytesIO(image_bytes("PNG", size=(48, 48))))
    train = ImageTransform(32, MEAN, STD, train=True, crop_scale=[1.0, 1.0], ratio=[0.75, 1.33], teacher_sizes=[48])
    evals = ImageTransform(32, MEAN, STD, train=False, teacher_sizes=[48])
    for seed in range(5):
        a, b = train.views(img, random.Random(seed)), evals.views(img)
        assert all(np.array_equal(a[s], b[s]) for s in (32, 48))
    assert np.array_equal(train.views(img)[48], np.asarray(img))


def test_target_cache_pickles_without_its_maps(setup):
    import pickle

    cache = TargetCache(setup[-1])
    assert "0000000" in cache and len(cache) == 16
    cache.lookup(["0000000"], shared=False)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._arrays is None and clone._index is None
    torch.testing.assert_close(clone.lookup(["0010003"], shared=False)["dino"]["patch"],
                               cache.lookup(["0010003"], shared=False)["dino"]["patch"])


def run_config(tmp_path, spec, ocfg, scfg, **data_kw):
    from sfclip.config import RunConfig, TrainConfig
    from sfclip.train.logs import LogConfig
    from sfclip.train.optim import OptimConfig

    return RunConfig(name="cached", output_dir=str(tmp_path / "runs"), student=scfg, objective=ocfg,
                     data=data_cfg(spec, **data_kw), optim=OptimConfig(lr=1e-3, warmup_steps=1),
                     train=TrainConfig(steps=3, ckpt_every=100), log=LogConfig(every_steps=1, progress=False))


def test_trainer_reads_the_cache_and_loads_no_vision_teacher(setup, tmp_path):
    from sfclip.train.loop import Trainer

    spec, ocfg, scfg, obj, tok, cache = setup
    trainer = Trainer(run_config(tmp_path, spec, ocfg, scfg, targets=str(cache)))
    assert isinstance(trainer.objective.teachers["dino"], CachedVisionTeacher)
    assert not list(trainer.objective.teachers["dino"].parameters())
    assert trainer.data_cfg.teacher_sizes == []  # no teacher view is rendered: the targets replace it
    assert trainer.cfg.data == run_config(tmp_path, spec, ocfg, scfg, targets=str(cache)).data  # not edited
    summary = trainer.fit()
    assert summary["step"] == 3 and np.isfinite(summary["dino_loss"]) and np.isfinite(summary["bert_loss"])
    assert summary["skipped"].get(MISSING_TARGET) == 0

    with pytest.raises(TargetCacheError, match="context length 12 in the run"):
        Trainer(run_config(tmp_path, spec, ocfg, StudentConfig(model="test-tiny",
                                                               overrides={"text.context_length": 12}),
                           targets=str(cache)))
