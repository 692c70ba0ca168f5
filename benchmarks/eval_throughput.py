"""Evaluation embedding throughput of the `sfclip.eval` paths: images/s and texts/s.

Times, round by round in one process, the paths every evaluator runs (`sfclip.eval.inference`):

- images, full path: JPEG files -> `image_transform` (decode, bicubic resize, centre crop, normalize)
  -> `make_loader` -> `encode_image` under `evaluating` (what retrieval and zero-shot run);
- images, model only: `encode_image` on ready tensors, to show what the input side costs;
- dense: `encode_patches` on ready tensors (the segmentation path's model call);
- texts, full path: `encode_texts` (tokenize, encode, normalize);
- texts, model only: `encode_text` on ready token ids.

    python benchmarks/eval_throughput.py                          # CPU: vit-t-16, 256 images, 1280 captions
    python benchmarks/eval_throughput.py --device cuda --model vit-b-16 --images 2048 --batch 256 --workers 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import VOCAB, filler_tokenizer
from benchmarks.harness import interleaved, machine_state, markdown_table, median, set_threads, write_json
from sfclip.eval.images import image_transform
from sfclip.eval.inference import encode_texts, evaluating, make_loader
from sfclip.eval.retrieval_data import CaptionedImages
from sfclip.models import create_model
from sfclip.tokenizer import Tokenizer


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """JPEGs of mixed sizes and aspect ratios, smooth colour fields plus noise (photo-like file sizes)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(240, 500)), int(rng.integers(240, 500))
        base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(base, dtype=np.int16) + rng.integers(-20, 20, (h, w, 3), dtype=np.int16)
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def captions(n: int, per_image: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[" ".join(f"w{j}" for j in rng.integers(0, VOCAB - 10, rng.integers(8, 20))) for _ in range(per_image)]
            for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-t-16")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--captions-per-image", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the image path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; default 1 on a CPU, see harness")
    ap.add_argument("--out", default="benchmarks/results/eval_throughput.json")
    args = ap.parse_args()
    args.threads = set_threads(args.threads, args.device)
    device = torch.device(args.device)
    state_before = machine_state()
    model = create_model(args.model, text={"vocab_size": VOCAB}).to(device)
    tok = Tokenizer(filler_tokenizer(), context_length=model.cfg.text.context_length)
    S = model.cfg.vision.image_size
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        caps = captions(args.images, args.captions_per_image)
        dataset = CaptionedImages(paths, caps, transform=image_transform(S))
        texts, _ = dataset.flat_captions()
        ready_images = torch.randn(args.batch, 3, S, S, device=device)
        ready_text = {k: v.to(device) for k, v in tok(texts[:args.text_batch]).items()}
        n_img_batches = -(-args.images // args.batch)
        n_txt_batches = -(-len(texts) // args.text_batch)

        def image_path() -> None:
            for images, _ in make_loader(dataset, args.batch, args.workers):
                F.normalize(model.encode_image(images.to(device), normalize=True).float(), dim=-1)

        def image_model() -> None:
            for _ in range(n_img_batches):
                model.encode_image(ready_images, normalize=True)

        def dense_model() -> None:
            for _ in range(n_img_batches):
                model.encode_patches(ready_images, normalize=True)

        def text_path() -> None:
            encode_texts(model, tok, texts, device, args.text_batch, progress=False)

        def text_model() -> None:
            for _ in range(n_txt_batches):
                model.encode_text(ready_text["input_ids"], ready_text["attention_mask"], normalize=True)

        fns = {"images: files -> transform -> encode_image": image_path, "images: encode_image only": image_model,
               "images: encode_patches only": dense_model, "texts: encode_texts (tokenize + encode)": text_path,
               "texts: encode_text only": text_model}
        counts = {k: (n_img_batches * args.batch if "only" in k and k.startswith("images") else args.images)
                  for k in fns if k.startswith("images")}
        counts.update({k: (n_txt_batches * args.text_batch if "only" in k else len(texts))
                       for k in fns if k.startswith("texts")})
        with evaluating(model):
            times = interleaved(fns, args.rounds, device)
    main_t = times.primary(device)
    rows = [{"path": k, "items_per_s": round(counts[k] / median(main_t[k]), 1),
             "items_per_s_wall": round(counts[k] / median(times.wall[k]), 1), "items": counts[k]} for k in fns]
    print(f"model {args.model} ({S} px), {args.images} images x {args.captions_per_image} captions, image batch "
          f"{args.batch}, text batch {args.text_batch}, workers {args.workers}, {args.device}, {args.rounds} "
          f"interleaved rounds, threads {args.threads}; items_per_s from {'CPU' if device.type == 'cpu' else 'wall'} "
          f"time (one thread, workers 0: every cost is in this process); machine {state_before}")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "machine_before": state_before, "machine_after": machine_state(),
                          "rows": rows, "wall_s": times.wall, "cpu_s": times.cpu})


if __name__ == "__main__":
    main()
