"""Running a model over evaluation data: eval mode in and out, batched text and image encoding.

Every runner wraps its model calls in `evaluating(model)`, which switches to eval mode and inference mode
and afterwards restores each submodule's own train/eval flag (teachers stay in eval mode whatever their
parent says, so a single `model.train(was_training)` would be wrong).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

__all__ = ["evaluating", "check_device", "encode_texts", "make_loader"]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode + `torch.inference_mode()` inside; every module's previous mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, training in modes:
            m.training = training


def check_device(model: nn.Module, device: str | torch.device) -> torch.device:
    """The runner moves inputs, never the model: fail early, with a message, when they disagree."""
    device = torch.device(device)
    param = next(iter(model.parameters()), None)
    if param is not None and param.device.type != device.type:
        raise ValueError(f"the model is on {param.device} but device={device}; move the model first "
                         "(runners do not move it) or pass its device")
    return device


def encode_texts(model: nn.Module, tokenizer, texts: Sequence[str], device: torch.device,
                 batch_size: int = 256, progress: bool = True, desc: str = "text") -> Tensor:
    """Normalized text embeddings (N, E), float32 on `device`, encoded in batches."""
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, leave=False):
        tok = tokenizer(list(texts[start:start + batch_size]))
        emb = model.encode_text(tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device),
                                normalize=True)  # (b, E)
        out.append(F.normalize(emb.float(), dim=-1))
    if not out:
        raise ValueError("no texts to encode")
    return torch.cat(out)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, collate_fn=None) -> DataLoader:
    """An in-order loader (evaluation never shuffles)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_fn, persistent_workers=False)
