"""Class names, prompt templates and the zero-shot text classifier built from them.

A class-name or template spec is one of: the name of a built-in set (`imagenet1k`; `openai_imagenet` =
CLIP's 80 templates, `simple_imagenet` = its 7-template subset, `plain` = "a photo of a {c}."), a path to
a `.txt` (one item a line) or `.json` file (a list, `{"classnames": [...]}` / `{"templates": [...]}`, or
a dict language -> list), a list, or a dict language -> list. `language` picks from per-language sets.
Templates hold `{c}` where the class name goes.

The classifier is CLIP's: for each class, the mean of the normalized embeddings of its prompts,
renormalized. `class_prompts` replaces the templates for chosen classes (e.g. "background").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sfclip.eval.inference import encode_texts

__all__ = ["BUILTIN_CLASSNAMES", "BUILTIN_TEMPLATES", "load_classnames", "load_templates", "fill",
           "text_classifier"]

BUILTIN_CLASSNAMES = {"imagenet1k": "imagenet1k_classnames.json"}
BUILTIN_TEMPLATES = {"openai_imagenet": "openai_imagenet_templates.json",
                     "simple_imagenet": "simple_imagenet_templates.json"}
_INLINE_TEMPLATES = {"plain": ["a photo of a {c}."]}

ListSpec = str | Path | Sequence[str] | Mapping[str, Sequence[str]]


def _describe(value) -> str:
    if isinstance(value, list):
        odd = next((x for x in value if not isinstance(x, str)), None)
        return f"a list holding {odd!r:.40} ({type(odd).__name__})" if odd is not None else "a list"
    return f"{value!r:.40} ({type(value).__name__})"


def _strings(value, what: str, key: str, origin: str) -> list[str]:
    """`value` as a list of strings, or a ValueError naming where it came from and the accepted shapes."""
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return list(value)
    raise ValueError(f"{what} {origin}: expected a list of strings, got {_describe(value)}; give a list, "
                     f'{{"{key}": [...]}} or {{"<language>": [...]}}')


def _pick_language(table: Mapping, language: str | None, what: str, key: str, origin: str) -> list[str]:
    if not table:
        raise ValueError(f"{what} {origin} is empty")
    if language is None:
        if len(table) == 1:
            return _strings(next(iter(table.values())), what, key, origin)
        language = "en"
    if language not in table:
        raise ValueError(f"{what} {origin} have no language {language!r}; available: {sorted(table)}")
    return _strings(table[language], what, key, f"{origin} [{language}]")


def _load_list(spec: ListSpec, language: str | None, what: str, key: str,
               builtins: dict[str, str]) -> list[str]:
    if isinstance(spec, Mapping):
        return _pick_language(spec, language, what, key, "(given as a dict)")
    if not isinstance(spec, (str, Path)):
        return _strings(list(spec), what, key, "(given as a list)")
    if isinstance(spec, str) and spec in _INLINE_TEMPLATES and key == "templates":
        return list(_INLINE_TEMPLATES[spec])
    if isinstance(spec, str) and spec in builtins:
        data = json.loads(resources.files("sfclip.eval").joinpath("data", builtins[spec]).read_text("utf-8"))
        return list(data[key])
    path = Path(spec)
    if not path.is_file():
        known = sorted(builtins) + (sorted(_INLINE_TEMPLATES) if key == "templates" else [])
        raise FileNotFoundError(f"{what} {spec!r} is neither a built-in set ({known}) nor a file")
    if path.suffix.lower() != ".json":
        return [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} file {path} is not valid JSON ({e})") from None
    if isinstance(data, Mapping) and key in data:
        data = data[key]
    if isinstance(data, Mapping):
        return _pick_language(data, language, what, key, str(path))
    return _strings(data, what, key, str(path))


def load_classnames(spec: ListSpec, language: str | None = None) -> list[str]:
    """Resolve a class-name spec (see the module docstring) to a list."""
    names = _load_list(spec, language, "class names", "classnames", BUILTIN_CLASSNAMES)
    if not names:
        raise ValueError(f"class-name spec {spec!r} is empty")
    return names


def load_templates(spec: ListSpec, language: str | None = None) -> list[str]:
    """Resolve a template spec to a list; every template must contain `{c}` (or the positional `{}`)."""
    loaded = _load_list(spec, language, "templates", "templates", BUILTIN_TEMPLATES)
    templates = [t.replace("{}", "{c}") for t in loaded]
    bad = [t for t in templates if "{c}" not in t]
    if not templates or bad:
        raise ValueError(f"templates must be non-empty and each contain '{{c}}' or '{{}}'; offending: {bad[:3]}")
    return templates


def fill(template: str, classname: str) -> str:
    """Put a class name into a template (plain replace: class names may contain braces)."""
    return template.replace("{c}", classname)


def text_classifier(model: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                    device: torch.device, class_prompts: Mapping[str, Sequence[str]] | None = None,
                    batch_size: int = 256, progress: bool = True) -> Tensor:
    """(C, E) zero-shot weights: per class, the renormalized mean of its normalized prompt embeddings.

    Call inside `evaluating(model)`. `class_prompts[name]`, when given, are the full prompts for that
    class instead of the templates.
    """
    class_prompts = class_prompts or {}
    prompts, owner = [], []
    for c, name in enumerate(classnames):
        these = class_prompts.get(name) or [fill(t, name) for t in templates]
        prompts.extend(these)
        owner.extend([c] * len(these))
    emb = encode_texts(model, tokenizer, prompts, device, batch_size, progress, desc="prompts")  # (P, E)
    owner_t = torch.tensor(owner, device=emb.device)
    sums = torch.zeros(len(classnames), emb.shape[1], device=emb.device).index_add_(0, owner_t, emb)  # (C, E)
    return F.normalize(sums, dim=-1)  # renormalizing the sum == renormalizing the mean
