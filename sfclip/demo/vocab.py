"""Words of the demo dataset: class names and zero-shot prompts in eight languages, colours, caption wording.

The student learns from English captions only; the other languages measure how much multilingual
zero-shot transfer it inherits from its multilingual text teacher (multilingual-E5).

Zero-shot prompts. Gendered languages need the article to agree with the noun ("ein Mantel", "eine
Hose"), so a template's `{}` takes a *prompt name* (`prompt_names`), which for Fashion-MNIST carries its
indefinite article ("a pair of trousers", "une robe"), not the bare class name (`classnames`, for labels
and display). `prompts(lang, source)` does the filling and is what evaluators should call:

    prompts("de")[1] == ["Auf dem Foto ist eine Hose zu sehen.", "Das ist eine Hose.", ...]

English templates are lower case, as CLIP's are; the others are written in sentence case.
`source` is "fashion" (Fashion-MNIST, the default) or "digits" (the MNIST fallback), optionally with the
label ids a scene set keeps ("fashion:0,1,3,5,8,9": six classes, relabelled 0..5; see `parse_source`).
"""

from __future__ import annotations

import random

__all__ = ["CAPTION_TEMPLATES", "CLASSNAMES", "COLOURS", "COLOUR_NAMES", "DIGIT_CLASSNAMES",
           "DIGIT_TEMPLATES", "FASHION_MNIST_LABELS", "LANGUAGES", "POSITION_PHRASES", "TEMPLATES",
           "caption", "classnames", "object_phrase", "parse_source", "position_word", "prompt_names", "prompts",
           "templates"]

LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "ru", "zh", "ja")

# The dataset's own label names, in label order (kept for reference and metadata).
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                        "Bag", "Ankle boot"]

CLASSNAMES: dict[str, list[str]] = {
    "en": ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot"],
    "de": ["T-Shirt", "Hose", "Pullover", "Kleid", "Mantel", "Sandale", "Hemd", "Turnschuh", "Tasche",
           "Stiefelette"],
    "fr": ["t-shirt", "pantalon", "pull", "robe", "manteau", "sandale", "chemise", "basket", "sac",
           "bottine"],
    "es": ["camiseta", "pantalón", "jersey", "vestido", "abrigo", "sandalia", "camisa", "zapatilla", "bolso",
           "botín"],
    "it": ["maglietta", "pantaloni", "maglione", "vestito", "cappotto", "sandalo", "camicia",
           "scarpa da ginnastica", "borsa", "stivaletto"],
    "ru": ["футболка", "брюки", "пуловер", "платье", "пальто", "сандалия", "рубашка", "кроссовок", "сумка",
           "ботинок"],
    "zh": ["T恤", "裤子", "套头衫", "连衣裙", "外套", "凉鞋", "衬衫", "运动鞋", "手提包", "短靴"],
    "ja": ["Tシャツ", "ズボン", "プルオーバー", "ワンピース", "コート", "サンダル", "シャツ", "スニーカー",
           "バッグ", "アンクルブーツ"],
}

# Fashion-MNIST names as they fill a template: with the indefinite article where the language has one.
_FASHION_PROMPT_NAMES: dict[str, list[str]] = {
    "en": ["a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt",
           "a sneaker", "a bag", "an ankle boot"],
    "de": ["ein T-Shirt", "eine Hose", "ein Pullover", "ein Kleid", "ein Mantel", "eine Sandale", "ein Hemd",
           "ein Turnschuh", "eine Tasche", "eine Stiefelette"],
    "fr": ["un t-shirt", "un pantalon", "un pull", "une robe", "un manteau", "une sandale", "une chemise",
           "une basket", "un sac", "une bottine"],
    "es": ["una camiseta", "un pantalón", "un jersey", "un vestido", "un abrigo", "una sandalia",
           "una camisa", "una zapatilla", "un bolso", "un botín"],
    "it": ["una maglietta", "un paio di pantaloni", "un maglione", "un vestito", "un cappotto", "un sandalo",
           "una camicia", "una scarpa da ginnastica", "una borsa", "uno stivaletto"],
    "ru": CLASSNAMES["ru"],
    "zh": CLASSNAMES["zh"],
    "ja": CLASSNAMES["ja"],
}

# Templates only use the name in a case that equals its dictionary form (nominative, or after "d'"),
# so one name per class fits every template of its language.
TEMPLATES: dict[str, list[str]] = {
    "en": ["a photo of {}.", "a picture of {}.", "{} on a background.", "a photo showing {}.",
           "there is {} in the picture."],
    "de": ["Auf dem Foto ist {} zu sehen.", "Das ist {}.", "{} vor einem Hintergrund.",
           "Ein Bild, auf dem {} zu sehen ist.", "Hier ist {} abgebildet."],
    "fr": ["Une photo d'{}.", "Une image d'{}.", "{} sur un fond.", "On voit {} sur la photo.", "C'est {}."],
    "es": ["Una foto de {}.", "Una imagen de {}.", "{} sobre un fondo.", "En la foto se ve {}.",
           "Esto es {}."],
    "it": ["Una foto di {}.", "Un'immagine di {}.", "{} su uno sfondo.", "Nella foto si vede {}.",
           "Ecco {}."],
    "ru": ["На фото {}.", "Это {}.", "На изображении {}.", "{} на картинке.", "На снимке {}."],
    "zh": ["一张{}的照片。", "{}的图片。", "背景上的{}。", "这是{}。", "照片里有{}。"],
    "ja": ["{}の写真。", "{}の画像。", "背景の上の{}。", "これは{}です。", "写真に写っている{}。"],
}

DIGIT_CLASSNAMES: dict[str, list[str]] = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "de": ["Null", "Eins", "Zwei", "Drei", "Vier", "Fünf", "Sechs", "Sieben", "Acht", "Neun"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
    "it": ["zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"],
    "ru": ["ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"],
    "zh": ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"],
    "ja": ["ゼロ", "一", "二", "三", "四", "五", "六", "七", "八", "九"],
}

# Digit names follow "the number/digit", so they need no article.
DIGIT_TEMPLATES: dict[str, list[str]] = {
    "en": ["a photo of the number {}.", "the digit {}.", "a picture of the number {}.",
           "the number {} on a background."],
    "de": ["Ein Foto der Ziffer {}.", "Die Ziffer {}.", "Das ist die Ziffer {}.",
           "Die Ziffer {} vor einem Hintergrund."],
    "fr": ["Une photo du chiffre {}.", "Le chiffre {}.", "C'est le chiffre {}.",
           "Le chiffre {} sur un fond."],
    "es": ["Una foto del número {}.", "El número {}.", "Este es el número {}.",
           "El número {} sobre un fondo."],
    "it": ["Una foto del numero {}.", "Il numero {}.", "Questo è il numero {}.",
           "Il numero {} su uno sfondo."],
    "ru": ["Фотография цифры {}.", "Цифра {}.", "Это цифра {}.", "Цифра {} на картинке."],
    "zh": ["数字{}的照片。", "数字{}。", "这是数字{}。", "背景上的数字{}。"],
    "ja": ["数字の{}の写真。", "数字の{}。", "これは数字の{}です。", "背景の上の数字の{}。"],
}

# Tints for the objects: saturated and far apart in hue, so each name is unambiguous at 64 px.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (40, 175, 60),
    "blue": (40, 90, 235),
    "yellow": (250, 215, 40),
    "orange": (250, 130, 20),
    "purple": (140, 60, 195),
    "white": (245, 245, 245),
    "pink": (250, 125, 190),
}

COLOUR_NAMES: dict[str, list[str]] = {
    "en": list(COLOURS),
    "de": ["rot", "grün", "blau", "gelb", "orange", "lila", "weiß", "rosa"],
    "fr": ["rouge", "vert", "bleu", "jaune", "orange", "violet", "blanc", "rose"],
    "es": ["rojo", "verde", "azul", "amarillo", "naranja", "morado", "blanco", "rosa"],
    "it": ["rosso", "verde", "blu", "giallo", "arancione", "viola", "bianco", "rosa"],
    # "е" for "ё", as most Russian text is typed: E5's tokenizer splits the "ё" spellings into rare pieces
    # ("▁ зе лё ный"), and E5 itself then maps 2 of 8 words onto the English colour against 3 of 8
    # (`python benchmarks/demo_colour_words.py`, docs/demo.md)
    "ru": ["красный", "зеленый", "синий", "желтый", "оранжевый", "фиолетовый", "белый", "розовый"],
    "zh": ["红色", "绿色", "蓝色", "黄色", "橙色", "紫色", "白色", "粉色"],
    "ja": ["赤", "緑", "青", "黄色", "オレンジ", "紫", "白", "ピンク"],
}

# English caption wording for where an object is (a 3x3 grid of the image), several ways each.
POSITION_PHRASES: dict[str, list[str]] = {
    "top left": ["in the top left corner", "at the top left", "in the upper left"],
    "top": ["at the top", "near the top", "at the top of the image"],
    "top right": ["in the top right corner", "at the top right", "in the upper right"],
    "left": ["on the left", "to the left", "on the left side"],
    "center": ["in the center", "in the middle", "at the center"],
    "right": ["on the right", "to the right", "on the right side"],
    "bottom left": ["in the bottom left corner", "at the bottom left", "in the lower left"],
    "bottom": ["at the bottom", "near the bottom", "at the bottom of the image"],
    "bottom right": ["in the bottom right corner", "at the bottom right", "in the lower right"],
}


# English scene captions: `{objs}` lists every object with colour and place, `{bg}` names the background,
# `{be}` is "is" or "are" to agree with the number of objects.
CAPTION_TEMPLATES: list[str] = [
    "{objs}, on {bg}.",
    "a photo of {objs} on {bg}.",
    "{objs} in front of {bg}.",
    "there {be} {objs}, with {bg} in the background.",
    "a picture showing {objs} against {bg}.",
    "{bg} with {objs}.",
    "an image of {objs}; the background is {bg}.",
]


def parse_source(source: str) -> tuple[str, tuple[int, ...] | None]:
    """A vocabulary name -> (glyph set, kept label ids or None for all). "fashion" and "digits" name all ten
    classes; "fashion:0,1,3,5,8,9" keeps those labels of the set, relabelled 0..k-1 in that order."""
    base, sep, keep = source.partition(":")
    if base not in ("fashion", "digits"):
        raise ValueError(f"source must be 'fashion' or 'digits' (optionally ':<label ids>'), got {source!r}")
    if not sep:
        return base, None
    try:
        ids = tuple(int(k) for k in keep.split(","))
    except ValueError:
        raise ValueError(f"source {source!r}: the kept labels must be integers, e.g. 'fashion:0,1,3'") from None
    if len(ids) < 2 or len(set(ids)) != len(ids) or not all(0 <= i < 10 for i in ids):
        raise ValueError(f"source {source!r}: keep at least two distinct labels in [0, 10)")
    return base, ids


def _check(lang: str, source: str) -> tuple[str, tuple[int, ...] | None]:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; choose from {LANGUAGES}")
    return parse_source(source)


def _kept(rows: list[str], keep: tuple[int, ...] | None) -> list[str]:
    return list(rows) if keep is None else [rows[i] for i in keep]


def classnames(lang: str = "en", source: str = "fashion") -> list[str]:
    """Bare class names in label order (label i is class i)."""
    base, keep = _check(lang, source)
    return _kept((CLASSNAMES if base == "fashion" else DIGIT_CLASSNAMES)[lang], keep)


def prompt_names(lang: str = "en", source: str = "fashion") -> list[str]:
    """Class names as they fill `templates(lang, source)`: with the indefinite article where needed."""
    base, keep = _check(lang, source)
    return _kept((_FASHION_PROMPT_NAMES if base == "fashion" else DIGIT_CLASSNAMES)[lang], keep)


def templates(lang: str = "en", source: str = "fashion") -> list[str]:
    """Zero-shot prompt templates (format strings with one `{}` for a prompt name)."""
    base, _ = _check(lang, source)
    return list((TEMPLATES if base == "fashion" else DIGIT_TEMPLATES)[lang])


def prompts(lang: str = "en", source: str = "fashion") -> list[list[str]]:
    """Filled zero-shot prompts: one list per class, one prompt per template."""
    out = []
    for name in prompt_names(lang, source):
        row = []
        for t in templates(lang, source):
            text = t.format(name)
            # A name that opens a sentence is capitalised, except in CLIP-style lower-case English.
            if t.startswith("{}") and lang != "en":
                text = text[:1].upper() + text[1:]
            row.append(text)
        out.append(row)
    return out


def object_phrase(class_id: int, colour: str, source: str = "fashion") -> str:
    """English noun phrase for a tinted object in a caption: 'a red t-shirt', 'a pair of red trousers'."""
    noun = classnames("en", source)[class_id]
    if parse_source(source)[0] == "digits":
        noun = f"number {noun}"
    if noun == "trousers":  # plural-only noun: "a red trousers" is wrong
        return f"a pair of {colour} trousers"
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {noun}"


def position_word(box, size: int) -> str:
    """Where a box (x0, y0, x1, y1) sits in a 3x3 grid of the image: "top left", "top", ..., "center"."""
    cx, cy = (box[0] + box[2]) / (2 * size), (box[1] + box[3]) / (2 * size)
    v = "top" if cy < 0.4 else "bottom" if cy > 0.6 else ""
    h = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    return f"{v} {h}".strip() or "center"


def caption(objects: list[dict], background: str, template: str, kind: str, rnd: random.Random,
            places: bool = True) -> str:
    """One English caption naming every object (colour, class and, with `places`, where it is) and the
    background."""
    objs = list(objects)
    rnd.shuffle(objs)  # the caption's order of objects is free; varying it varies the wording
    parts = [object_phrase(o["class_id"], o["colour"], kind)
             + (f" {rnd.choice(POSITION_PHRASES[o['position']])}" if places else "") for o in objs]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return template.format(objs=listed, bg=background, be="is" if len(objs) == 1 else "are")
