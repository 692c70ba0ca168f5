"""Transforms: crop geometry, multi-size consistency, eval parity with a hand-computed reference, modes."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sfclip.data.transforms import (
    ImageTransform,
    decode_image,
    eval_transform,
    random_resized_crop_box,
    to_rgb,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def smooth_image(width: int = 300, height: int = 200) -> Image.Image:
    """Low-frequency content: resampling to two sizes then matching is meaningful."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127 + 120 * np.sin(x / 37.0)
    g = 127 + 120 * np.cos(y / 23.0)
    b = 127 + 120 * np.sin((x + y) / 51.0)
    return Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8), "RGB")


def test_train_views_show_the_same_crop_at_every_size():
    img = smooth_image()
    tf = ImageTransform(32, mean=(0, 0, 0), std=(1, 1, 1), train=True, crop_scale=(0.2, 0.5), teacher_sizes=[64])
    out = tf(img, random.Random(3))
    assert out["image"].shape == (3, 32, 32) and out["teacher_image"][64].shape == (3, 64, 64)
    down = F.avg_pool2d(out["teacher_image"][64][None].float() / 255, 2)[0]  # (3, 32, 32)
    assert (down - out["image"]).abs().mean() < 0.01
    # The check can fail: a different crop of the same image does not match.
    other = tf(img, random.Random(4))["image"]
    assert (down - other).abs().mean() > 0.05


def test_teacher_views_are_unnormalized_uint8():
    out = ImageTransform(16, MEAN, STD, train=True, teacher_sizes=[24, 8])(smooth_image(), random.Random(0))
    assert sorted(out["teacher_image"]) == [8, 24]
    for view in out["teacher_image"].values():
        assert view.dtype == torch.uint8 and view.max() > 100
    assert out["image"].min() < 0.0  # the student view is normalized


def test_seeded_generator_makes_train_views_reproducible():
    tf = ImageTransform(24, MEAN, STD, train=True, teacher_sizes=[40])
    img = smooth_image()
    a, b, c = tf(img, random.Random(7)), tf(img, random.Random(7)), tf(img, random.Random(8))
    torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
    torch.testing.assert_close(a["teacher_image"][40], b["teacher_image"][40], rtol=0, atol=0)
    assert not torch.equal(a["image"], c["image"])


def test_hflip_mirrors_the_same_crop():
    img = smooth_image()
    plain = ImageTransform(24, MEAN, STD, train=True, hflip=False)
    flip = ImageTransform(24, MEAN, STD, train=True, hflip=True)
    flipped = 0
    for seed in range(8):
        a, b = plain(img, random.Random(seed))["image"], flip(img, random.Random(seed))["image"]
        if torch.equal(a, b):
            continue
        torch.testing.assert_close(b, torch.flip(a, dims=[2]))
        flipped += 1
    assert 0 < flipped < 8


@pytest.mark.parametrize("size", [(50, 30), (30, 50), (24, 24)])
def test_eval_transform_matches_hand_computed_resize_and_centre_crop(size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    s = 24
    w, h = size
    new = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    resized = img.resize(new, Image.Resampling.BICUBIC)
    left, top = round((new[0] - s) / 2), round((new[1] - s) / 2)
    ref = np.asarray(resized.crop((left, top, left + s, top + s)), dtype=np.float32) / 255.0
    ref = (torch.from_numpy(ref).permute(2, 0, 1) - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    got = eval_transform(s, MEAN, STD)(img)
    assert got.shape == (3, s, s)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    # The train=False ImageTransform gives the same student view.
    torch.testing.assert_close(ImageTransform(s, MEAN, STD, train=False)(img)["image"], got)


def test_crop_box_stays_inside_and_respects_scale_and_ratio():
    rng = random.Random(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(300, 200, (0.3, 0.9), (0.75, 4 / 3), rng)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
        assert 0.28 <= w * h / (300 * 200) <= 0.92
        assert 0.7 <= w / h <= 1.4


def test_crop_box_falls_back_to_a_centre_crop_with_clamped_aspect():
    # No box with >= half the area and aspect <= 4/3 fits a 100x2 strip.
    assert random_resized_crop_box(100, 2, (0.5, 1.0), (0.75, 4 / 3), random.Random(0)) == (48, 0, 51, 2)


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_to_rgb_handles_palette_alpha_cmyk_and_16_bit():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # transparent black pixel
    out = decode_image(_encode(rgba))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (10, 20, 30)

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.info["transparency"] = 0
    out = decode_image(_encode(pal))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((2, 2)) == (200, 100, 50)

    assert decode_image(_encode(Image.new("L", (3, 3), 77))).getpixel((1, 1)) == (77, 77, 77)
    assert decode_image(_encode(Image.new("LA", (3, 3), (77, 255)))).getpixel((1, 1)) == (77, 77, 77)
    cmyk = decode_image(_encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"))
    assert cmyk.mode == "RGB" and min(cmyk.getpixel((4, 4))) > 240

    deep = Image.fromarray(np.full((3, 3), 32768, dtype=np.uint16))  # mid-grey in 16 bits
    grey = to_rgb(Image.open(io.BytesIO(_encode(deep)))).getpixel((1, 1))
    assert grey[0] == grey[1] == grey[2] and 120 <= grey[0] <= 135  # not clipped to white


def test_decode_image_rejects_truncated_and_garbage_bytes():
    jpeg = _encode(smooth_image(64, 64), "JPEG")
    assert decode_image(jpeg).size == (64, 64)
    with pytest.raises(OSError):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(OSError):
        decode_image(b"\x00not an image at all" * 10)


def test_batched_conversion_matches_a_per_image_reference():
    tf = ImageTransform(16, MEAN, STD, train=True, teacher_sizes=[20])
    views = [tf.views(smooth_image(60 + 10 * i, 50), random.Random(i)) for i in range(3)]
    out = tf.batch(views)
    assert out["image"].shape == (3, 3, 16, 16) and out["teacher_image"][20].shape == (3, 3, 20, 20)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for i, v in enumerate(views):
        unit = torch.from_numpy(v[16].astype(np.float32) / 255.0).permute(2, 0, 1)
        torch.testing.assert_close(out["image"][i], (unit - mean) / std, rtol=0, atol=1e-5)
        torch.testing.assert_close(out["teacher_image"][20][i], torch.from_numpy(v[20].copy()).permute(2, 0, 1))


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated by 90 degrees
    buf = io.BytesIO()
    smooth_image(40, 20).save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).size == (20, 40)
