"""Shared pieces of the benchmark scripts: in-memory teachers, objectives, synthetic batches, tables."""

from __future__ import annotations

import torch

from sfclip.build import StudentConfig, build_objective
from sfclip.masking import ImageMaskConfig
from sfclip.models import resolve_model_config
from sfclip.models.flops import EncoderShape, step_flops
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


def model_config(model_name: str, overrides: dict | None = None):
    """The student's model config: a registry preset with `StudentConfig.overrides`-style overrides."""
    return resolve_model_config(model_name, overrides)


def make_teachers(model_name: str, device: torch.device, dtype: torch.dtype = torch.float32,
                  overrides: dict | None = None) -> dict:
    """Randomly initialised teachers as wide and deep as the student's towers (DINOv2 /14, BERT), computing
    in `dtype` (bf16 on a GPU, as a real run would configure them)."""
    from transformers import BertConfig, BertModel, Dinov2Config, Dinov2Model

    cfg = model_config(model_name, overrides)
    v, t = cfg.vision, cfg.text
    grid = v.image_size // v.patch_size
    torch.manual_seed(0)
    dino = Dinov2Model(Dinov2Config(hidden_size=v.width, num_hidden_layers=v.layers, num_attention_heads=v.heads,
                                    intermediate_size=4 * v.width, patch_size=14, image_size=grid * 14))
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=t.width, num_hidden_layers=t.layers,
                                num_attention_heads=t.heads, intermediate_size=4 * t.width,
                                max_position_embeddings=max(512, t.context_length)), add_pooling_layer=False)
    vt = HFVisionTeacher("dino", dino, grid * 14, MEAN, STD, dtype=dtype)
    tt = HFTextTeacher("text", bert, filler_tokenizer(), dtype=dtype)
    return {"dino": vt.to(device), "text": tt.to(device)}


def with_dtype(teachers: dict, dtype: torch.dtype) -> dict:
    """The same teacher models behind wrappers computing in `dtype` (no weights copied)."""
    out = {}
    for name, t in teachers.items():
        if t.kind == "vision":
            out[name] = HFVisionTeacher(name, t.model, t.image_size, t.mean.flatten().tolist(),
                                        t.std.flatten().tolist(), dtype=dtype)
        else:
            out[name] = HFTextTeacher(name, t.model, t.tokenizer, dtype=dtype)
        out[name].to(next(t.parameters()).device)
    return out


def build_setting(model_name: str, teachers: dict, device: torch.device, p: float = 0.25, mode: str = "replace",
                  view: str = "separate", ratio: float = 0.4, cached: bool = False, teachers_on: bool = True,
                  overrides: dict | None = None, summary_weight: float = 0.0):
    """(objective, tokenizer, optimizer, cached) for one benchmark setting."""
    tcfgs = [TeacherConfig(name="dino", kind="vision", source="in-memory", summary_weight=summary_weight),
             TeacherConfig(name="text", kind="text", source="in-memory")]
    ocfg = ObjectiveConfig(distill_fraction=p, image_view=view, teachers=tcfgs if teachers_on else [],
                           image_mask=ImageMaskConfig(kind="random" if mode == "drop" else "block", ratio=ratio,
                                                      mode=mode))
    if teachers_on:
        obj, tok = build_objective(ocfg, StudentConfig(model=model_name, overrides=dict(overrides or {})), MEAN, STD,
                                   teachers=dict(teachers))
    else:
        from sfclip.build import build_student
        from sfclip.objective import Objective

        tok = Tokenizer(teachers["text"].tokenizer, model_config(model_name, overrides).text.context_length)
        student = build_student(StudentConfig(model=model_name, text_embedding="own",
                                              overrides=dict(overrides or {})), {}, tok)
        obj = Objective(ocfg, student, {}, tok.special_ids, tok.mask_id, MEAN, STD)
    obj = obj.to(device).train()
    opt = build_optimizer(obj.student, OptimConfig(warmup_steps=0))
    return obj, tok, opt, cached


def teacher_shape(teacher, text_length: int = 0) -> EncoderShape:
    """A transformers teacher's shapes for FLOP counting (DINOv2 / ViT layouts, BERT layouts)."""
    c = teacher.model.config
    mlp = int(c.hidden_size * c.mlp_ratio) if hasattr(c, "mlp_ratio") else c.intermediate_size
    if teacher.kind == "text":
        return EncoderShape(c.hidden_size, c.num_hidden_layers, mlp, text_length)
    patches = (teacher.image_size // teacher.patch_size) ** 2
    prefix = 1 + getattr(c, "num_register_tokens", 0)
    return EncoderShape(c.hidden_size, c.num_hidden_layers, mlp, prefix + patches, 3 * teacher.patch_size**2, patches)


def objective_flops(obj, batch: int, cached: bool, text_length: int) -> dict[str, int]:
    """Model FLOPs of one step of `obj` on `batch` rows (see `sfclip.models.flops.step_flops`)."""
    cfg, mcfg = obj.cfg, obj.cfg.image_mask
    n = obj.student.cfg.vision.grid ** 2
    k = obj.num_distill(batch)
    shared = cfg.image_view == "shared"
    kept = n - mcfg.num_masked(n) if mcfg.mode == "drop" else None  # replace keeps every position
    teachers = () if cached else tuple(teacher_shape(t, text_length) for t in obj.teachers.values())
    return step_flops(obj.student.cfg, batch, distill_rows=k, masked_kept_patches=kept, shared_view=shared,
                      text_length=text_length, distill_text=bool(obj.text_teachers), teachers=teachers)


def make_batch(tok, model_name: str, batch: int, device: torch.device, teachers: dict,
               overrides: dict | None = None) -> dict:
    """Random images and captions (half the context length, padded), the teacher view, cached targets."""
    cfg = model_config(model_name, overrides)
    g = torch.Generator().manual_seed(0)
    S, T = cfg.vision.image_size, cfg.text.context_length
    ids = torch.randint(5, VOCAB, (batch, T), generator=g)
    lengths = torch.randint(T // 4, T // 2, (batch,), generator=g)
    am = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[:, 0] = tok.bos_id
    ids[torch.arange(batch), lengths - 1] = tok.eos_id
    ids[am == 0] = tok.pad_id
    ts = teachers["dino"].image_size
    # The teacher view travels as uint8, as the data pipeline sends it.
    out = {"image": torch.randn(batch, 3, S, S, generator=g), "input_ids": ids, "attention_mask": am,
           "teacher_image": {ts: torch.randint(0, 256, (batch, 3, ts, ts), generator=g, dtype=torch.uint8)}}
    out = {k: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v.to(device))
           for k, v in out.items()}
    with torch.no_grad():
        dino = teachers["dino"](out["teacher_image"][ts].float() / 255)
        out["targets"] = {
            "dino": {"patch": dino["patch"].half(), "cls": dino["cls"].half()},
            "text": {"tokens": teachers["text"](out["input_ids"], out["attention_mask"])["tokens"].half()},
        }
    return out


def step_fn(obj, opt, batch: dict, cached: bool, precision: str) -> float:
    """One training step; with `cached`, the batch carries teacher targets instead of teacher views."""
    drop = "teacher_image" if cached else "targets"
    b = {k: v for k, v in batch.items() if k != drop}
    dev = batch["image"].device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = obj(b)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())
