"""Zero-shot image-text retrieval in both directions, several captions per image.

`i2t` = image queries retrieving captions (a hit at k if any of the image's captions is in the top k);
`t2i` = caption queries retrieving images (a hit if the caption's own image is in the top k). Metrics:
`i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10` and `mean_recall` (their mean). Similarities are
computed `chunk_size` queries at a time, so 100k x 100k sets fit in memory; ties count against the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from sfclip.eval import metrics
from sfclip.eval.inference import check_device, encode_texts, evaluating, make_loader
from sfclip.eval.retrieval_data import CaptionedImages, retrieval_dataset

__all__ = ["run", "retrieval_metrics"]


def retrieval_metrics(image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor, chunk_size: int = 1024,
                      ks: Sequence[int] = (1, 5, 10), texts: Sequence[str] | None = None) -> dict[str, float]:
    """Recall@k both ways plus their mean, from normalized embeddings (positives by index, as CLIP_benchmark).

    With the caption `texts`, also `i2t_r{k}_text` / `t2i_r{k}_text`, where a caption with the same text as a
    positive is a positive too, and `oracle_i2t_r{k}` / `oracle_t2i_r{k}`: the best any model reaches under
    the index rule on this set (`metrics.oracle_retrieval_ranks`; it depends on the captions alone).
    """
    i2t, t2i = metrics.retrieval_ranks(image_emb, text_emb, text_to_image, chunk_size)
    out = {f"i2t_r{k}": v for k, v in metrics.recall_at_k(i2t, ks).items()}
    out.update({f"t2i_r{k}": v for k, v in metrics.recall_at_k(t2i, ks).items()})
    out["mean_recall"] = sum(out.values()) / len(out)
    if texts is not None:
        groups = metrics.text_groups(texts)
        i2t, t2i = metrics.retrieval_ranks(image_emb, text_emb, text_to_image, chunk_size, groups)
        out.update({f"i2t_r{k}_text": v for k, v in metrics.recall_at_k(i2t, ks).items()})
        out.update({f"t2i_r{k}_text": v for k, v in metrics.recall_at_k(t2i, ks).items()})
        i2t, t2i = metrics.oracle_retrieval_ranks(text_to_image, groups)
        out.update({f"oracle_i2t_r{k}": v for k, v in metrics.recall_at_k(i2t, ks).items()})
        out.update({f"oracle_t2i_r{k}": v for k, v in metrics.recall_at_k(t2i, ks).items()})
    return out


def _encode_images(model: nn.Module, loader, device: torch.device, progress: bool) -> Tensor:
    out = []
    for images, _ in tqdm(loader, desc="images", disable=not progress, leave=False):
        emb = model.encode_image(images.to(device), normalize=True)  # (B, E)
        out.append(F.normalize(emb.float(), dim=-1))
    return torch.cat(out)


def run(model: nn.Module, tokenizer, data: str | Path | Sequence[str] | CaptionedImages, *,
        transform: Callable[[Image.Image], Tensor], data_format: str = "auto", split: str | None = "test",
        language: str | None = None, image_root: str | Path | None = None, device: str | torch.device = "cpu",
        batch_size: int = 64, text_batch_size: int = 256, chunk_size: int = 1024, num_workers: int = 0,
        progress: bool = True, pictures_dir: str | Path | None = None, num_pictures: int = 4,
        ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval recall@k of `model` on `data` (a `retrieval_data` layout or a prepared `CaptionedImages`).

    Returns i2t_r{k}, t2i_r{k} for k in `ks` and mean_recall. With `pictures_dir`, writes the top-5
    images for the first `num_pictures` captions, the correct one outlined.
    """
    dev = check_device(model, device)
    dataset = data if isinstance(data, CaptionedImages) else retrieval_dataset(
        data, data_format, split=split, language=language, image_root=image_root)
    dataset.transform = transform
    texts, owners = dataset.flat_captions()
    text_to_image = torch.tensor(owners)
    with evaluating(model):
        loader = make_loader(dataset, batch_size, num_workers)
        image_emb = _encode_images(model, loader, dev, progress)  # (Ni, E)
        text_emb = encode_texts(model, tokenizer, texts, dev, text_batch_size, progress,
                                desc="captions")  # (Nt, E)
        result = retrieval_metrics(image_emb, text_emb, text_to_image, chunk_size, ks, texts)
        if pictures_dir is not None:
            from sfclip.eval.pictures import save_retrieval_example

            k = min(5, len(dataset))
            top = (text_emb[:num_pictures] @ image_emb.T).topk(k, dim=1).indices.cpu()  # (q, k)
            for q in range(top.shape[0]):
                hits = [int(i) == owners[q] for i in top[q]]
                save_retrieval_example(Path(pictures_dir) / f"retrieval_{q:02d}.png", texts[q],
                                       [dataset.image(int(i)) for i in top[q]], hits)
    return result
