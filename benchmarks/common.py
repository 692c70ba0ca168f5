"""Shared pieces of the benchmark scripts: in-memory teachers, objectives, synthetic batches, tables."""

from __future__ import annotations

import resource

import torch

from sfclip.build import StudentConfig, build_objective
from sfclip.masking import ImageMaskConfig
from sfclip.models import model_config
from sfclip.objective import ObjectiveConfig
from sfclip.teachers import TeacherConfig
from sfclip.teachers.hf import HFTextTeacher, HFVisionTeacher
from sfclip.tokenizer import Tokenizer
from sfclip.train.optim import OptimConfig, build_optimizer

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
VOCAB = 30522  # BERT's


def filler_tokenizer(vocab: int = VOCAB):
    """A fast WordLevel tokenizer with BERT's specials and `vocab` entries (ids are what matters here)."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = specials + [f"w{i}" for i in range(vocab - len(specials))]
    tok = HFTok(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def make_teachers(model_name: str, device: torch.device) -> dict:
    """Randomly initialised teachers as wide and deep as the student's towers (DINOv2 /14, BERT)."""
    from transformers import BertConfig, BertModel, Dinov2Config, Dinov2Model

    cfg = model_config(model_name)
    v, t = cfg.vision, cfg.text
    grid = v.image_size // v.patch_size
    torch.manual_seed(0)
    dino = Dinov2Model(Dinov2Config(hidden_size=v.width, num_hidden_layers=v.layers, num_attention_heads=v.heads,
                                    intermediate_size=4 * v.width, patch_size=14, image_size=grid * 14))
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=t.width, num_hidden_layers=t.layers,
                                num_attention_heads=t.heads, intermediate_size=4 * t.width,
                                max_position_embeddings=max(512, t.context_length)), add_pooling_layer=False)
    vt = HFVisionTeacher("dino", dino, grid * 14, MEAN, STD)
    tt = HFTextTeacher("text", bert, filler_tokenizer())
    return {"dino": vt.to(device), "text": tt.to(device)}


def build_setting(model_name: str, teachers: dict, device: torch.device, p: float = 0.25, mode: str = "replace",
                  view: str = "separate", ratio: float = 0.4, cached: bool = False, teachers_on: bool = True):
    """(objective, tokenizer, optimizer, cached) for one benchmark setting."""
    tcfgs = [TeacherConfig(name="dino", kind="vision", source="in-memory"),
             TeacherConfig(name="text", kind="text", source="in-memory")]
    ocfg = ObjectiveConfig(distill_fraction=p, image_view=view, teachers=tcfgs if teachers_on else [],
                           image_mask=ImageMaskConfig(kind="random" if mode == "drop" else "block", ratio=ratio, mode=mode))
    if teachers_on:
        obj, tok = build_objective(ocfg, StudentConfig(model=model_name), MEAN, STD, teachers=dict(teachers))
    else:
        from sfclip.build import build_student
        from sfclip.objective import Objective

        tok = Tokenizer(teachers["text"].tokenizer, model_config(model_name).text.context_length)
        student = build_student(StudentConfig(model=model_name, text_embedding="own"), {}, tok)
        obj = Objective(ocfg, student, {}, tok.special_ids, tok.mask_id, MEAN, STD)
    obj = obj.to(device).train()
    opt = build_optimizer(obj.student, OptimConfig(warmup_steps=0))
    return obj, tok, opt, cached


def make_batch(tok, model_name: str, batch: int, device: torch.device, teachers: dict) -> dict:
    """Random images and captions (half the context length, padded), the teacher view, cached targets."""
    cfg = model_config(model_name)
    g = torch.Generator().manual_seed(0)
    S, T = cfg.vision.image_size, cfg.text.context_length
    ids = torch.randint(5, VOCAB, (batch, T), generator=g)
    lengths = torch.randint(T // 4, T // 2, (batch,), generator=g)
    am = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[:, 0] = tok.bos_id
    ids[torch.arange(batch), lengths - 1] = tok.eos_id
    ids[am == 0] = tok.pad_id
    ts = teachers["dino"].image_size
    out = {"image": torch.randn(batch, 3, S, S, generator=g), "input_ids": ids, "attention_mask": am,
           "teacher_image": {ts: torch.rand(batch, 3, ts, ts, generator=g)}}
    out = {k: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in out.items()}
    with torch.no_grad():
        out["targets"] = {
            "dino": {"patch": teachers["dino"](out["teacher_image"][ts])["patch"].half()},
            "text": {"tokens": teachers["text"](out["input_ids"], out["attention_mask"])["tokens"].half()},
        }
    return out


def step_fn(obj, opt, batch: dict, cached: bool, precision: str) -> float:
    b = batch if cached else {k: v for k, v in batch.items() if k != "targets"}
    dev = batch["image"].device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = obj(b)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocated; on CPU the process's peak RSS (monotone, so only the first reading is clean)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
