"""Why does a language's colour zero-shot fail (issue 17: Russian is below chance for SF-CLIP on every seed)?
Not speed: for each of the demo's languages and for spelling variants of its colour words, how the words
tokenize, and two ceilings from the text teacher itself, multilingual-E5-small:

- `e5`: the teacher's own pooled embedding (with its "query: " prefix), each word matched to the closest of
  the eight English colour words: how well the full teacher maps the word onto English;
- `table`: the mean of the word's rows of E5's input embedding table, which SF-CLIP's student inherits
  (it keeps the table, not E5's layers), matched the same way;
- `student` (with `--checkpoint`): the trained student's own text embedding, matched the same way.

Accuracy is over the eight colours (chance 0.125).

    python benchmarks/demo_colour_words.py
    python benchmarks/demo_colour_words.py --checkpoint demo_arms_out/seed0/runs/sfclip_s0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfclip.demo import vocab

# Russian variants: "е" for "ё" (as most Russian text is typed), and the feminine / neuter / plural forms,
# which the captions' nouns would need (футболка, платье, брюки).
RU = vocab.COLOUR_NAMES["ru"]
VARIANTS = {
    "ru (ё spellings, before issue 17)": ["красный", "зелёный", "синий", "жёлтый", "оранжевый", "фиолетовый",
                                          "белый", "розовый"],
    "ru feminine": ["красная", "зелёная", "синяя", "жёлтая", "оранжевая", "фиолетовая", "белая", "розовая"],
    "ru neuter": ["красное", "зелёное", "синее", "жёлтое", "оранжевое", "фиолетовое", "белое", "розовое"],
    "ru plural": ["красные", "зелёные", "синие", "жёлтые", "оранжевые", "фиолетовые", "белые", "розовые"],
    "ru 'цвет' (colour of ...)": [f"{w} цвет" for w in RU],
}


def accuracy(query: torch.Tensor, keys: torch.Tensor) -> float:
    """Each row of `query` (8, E) matched to the closest row of `keys` (8, E); fraction matched to itself."""
    sim = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T  # (8, 8)
    return float((sim.argmax(1) == torch.arange(len(sim))).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a trained demo student (run or checkpoint folder)")
    ap.add_argument("--out", default="benchmarks/results/demo_colour_words.json")
    args = ap.parse_args()
    from transformers import AutoModel, AutoTokenizer

    from sfclip.teachers.offline import resolve

    folder = resolve("multilingual-e5-small")
    tok = AutoTokenizer.from_pretrained(folder)
    e5 = AutoModel.from_pretrained(folder).eval()
    table = e5.get_input_embeddings().weight.detach()  # (V, D)
    student = None
    if args.checkpoint:
        from sfclip.checkpoint import load

        student, stok, _ = load(args.checkpoint)
        student.eval()

    @torch.no_grad()
    def e5_embed(words: list[str]) -> torch.Tensor:
        enc = tok([f"query: {w}" for w in words], padding=True, return_tensors="pt")
        h = e5(**enc).last_hidden_state
        m = enc["attention_mask"][..., None].float()
        return (h * m).sum(1) / m.sum(1)  # (8, D)

    def table_embed(words: list[str]) -> torch.Tensor:
        return torch.stack([table[tok(w, add_special_tokens=False)["input_ids"]].mean(0) for w in words])

    @torch.no_grad()
    def student_embed(words: list[str]) -> torch.Tensor:
        enc = stok(words)
        return student.encode_text(enc["input_ids"], enc["attention_mask"])

    sets = {lang: vocab.COLOUR_NAMES[lang] for lang in vocab.LANGUAGES} | VARIANTS
    en = vocab.COLOUR_NAMES["en"]
    ref = {"e5": e5_embed(en), "table": table_embed(en)}
    if student is not None:
        ref["student"] = student_embed(en)
    rows = []
    for name, words in sets.items():
        row = {"words": name, "pieces": " | ".join(" ".join(tok.tokenize(w)) for w in words[:4]) + " ...",
               "e5": accuracy(e5_embed(words), ref["e5"]), "table": accuracy(table_embed(words), ref["table"])}
        if student is not None:
            row["student"] = accuracy(student_embed(words), ref["student"])
        rows.append(row)
    cols = ["words", "e5", "table", *(["student"] if student is not None else []), "pieces"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
