"""Student checkpoints on disk: the files, the write protocol, verification, recovery and loading.

A checkpoint folder holds `model.safetensors` (student weights only, never a teacher's), `config.yaml`
(the whole resolved run config, or at least `model:`), `tokenizer/`, for training checkpoints `state.pt`
(optimizer, scheduler, counters, RNG, data position; loaded with `weights_only=True`), and
`manifest.json`, written last: every other file's size and SHA-256. A checkpoint is trusted only once
it verifies against its manifest (one written without a manifest gets the file formats' own checks).

The write protocol (`atomic_dir`), with what a kill at each point leaves and what readers then do:

1. every file is written and fsynced into `.NAME.<random>.tmp`; killed here (`after_tmp_write`): the
   temporary folder is ignored by readers and removed at the next training start;
2. replacing an existing `NAME`: `NAME` -> `.NAME.old`, then the temporary folder -> `NAME`; killed
   between the two (`mid_replace`): readers use `.NAME.old` for `NAME`, and the next training start
   puts it back in place;
3. the parent folder is fsynced (`after_rename`): `NAME` is whole. Training checkpoints then write the
   `latest` pointer (`after_pointer`) and rotate. Readers take the newest step folder that verifies, not
   the pointer, so a kill before the pointer is written loses nothing.

`SFCLIP_FAULT=<point>` in the environment SIGKILLs the process at that point (fault-injection tests).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import zipfile
from pathlib import Path
from typing import cast

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .models import SFCLIP, ModelConfig
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["CheckpointError", "save_student", "load_student", "load", "image_stats", "atomic_dir",
           "atomic_write_text", "write_manifest", "verify_checkpoint", "list_checkpoints", "newest_checkpoint",
           "recover_checkpoints", "read_pointer", "checkpoint_step", "disk_full", "fault_point", "FAULT_POINTS",
           "HUB_PREFIX", "hub_snapshot", "resolve_checkpoint"]

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.yaml", "tokenizer"
STATE, MANIFEST = "state.pt", "manifest.json"
POINTER = "latest"
STEP_DIR = re.compile(r"^step_(\d+)$")
_OLD_DIR = re.compile(r"^\.(.+)\.old$")
FAULT_ENV = "SFCLIP_FAULT"
FAULT_POINTS = ("after_tmp_write", "mid_replace", "after_rename", "after_pointer")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or used; the message names the file and what to do."""


def fault_point(name: str) -> None:
    """Die here, as a kill would, when `SFCLIP_FAULT` names this point of the write protocol."""
    if os.environ.get(FAULT_ENV) == name:
        log.error("%s=%s: killing this process", FAULT_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: the only other way to read it is to set it
    os.umask(mask)
    return mask


class atomic_dir:
    """`with atomic_dir(final) as tmp:` write into `tmp`; on success it takes the place of `final`."""

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final)

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # mkdir, not mkdtemp: mkdtemp makes the folder 0700, which hides checkpoints from the other users
        # of a shared cluster; mkdir follows the umask.
        self.tmp = self.final.with_name(f".{self.final.name}.{secrets.token_hex(4)}.tmp")
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        mode = 0o666 & ~_umask()
        for f in self.tmp.rglob("*"):  # data reaches the disk before the rename makes it visible
            if f.is_file():
                # safetensors writes its files 0600: readable by the other users of a shared cluster only
                # if the umask allows it, as for any other file.
                f.chmod(mode)
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fault_point("after_tmp_write")
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.final, old)
            fault_point("mid_replace")
            os.replace(self.tmp, self.final)
            _fsync_dir(self.final.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)
            _fsync_dir(self.final.parent)
        fault_point("after_rename")


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# -- verification ---------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _check_formats(folder: Path, training: bool) -> None:
    """The file formats' own checks: a safetensors header that covers the file, a zip whose CRCs match."""
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt"):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure to parse means the file is unusable
        raise CheckpointError(f"{folder / WEIGHTS} is corrupt: {exc}") from None
    if not training:
        return
    path = folder / STATE
    try:
        with zipfile.ZipFile(path) as zf:  # torch.save writes a zip archive
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path} is corrupt ({path.stat().st_size} bytes): {exc}") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: member {bad} fails its CRC")


def write_manifest(folder: str | Path, training: bool = False) -> None:
    """Check the files just written, then record their sizes and SHA-256 in `manifest.json` (last)."""
    folder = Path(folder)
    _check_formats(folder, training)  # a short write that reported no error fails here, before it is trusted
    files = {str(f.relative_to(folder)): {"size": f.stat().st_size, "sha256": _sha256(f)}
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}
    with open(folder / MANIFEST, "w", encoding="utf-8") as fh:
        json.dump({"format": 1, "files": files}, fh, indent=1)


def verify_checkpoint(folder: str | Path, training: bool = False) -> None:
    """Raise `CheckpointError` naming the first missing or corrupt file; `training` also needs `state.pt`."""
    folder = Path(folder)
    for name in (WEIGHTS, CONFIG) + ((STATE,) if training else ()):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name} is missing: {folder} is not a complete "
                                  f"{'training ' if training else ''}checkpoint")
    manifest = folder / MANIFEST
    if not manifest.is_file():  # written by an older sfclip or by hand
        _check_formats(folder, training)
        return
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        entries = [(rel, int(meta["size"]), str(meta["sha256"])) for rel, meta in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{manifest} is corrupt: {type(exc).__name__}: {exc}") from None
    for rel, size, digest in entries:
        if rel == STATE and not training:
            continue  # inference never reads it
        path = folder / rel
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {MANIFEST})")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{path} is corrupt: {actual} bytes, {size} were written (truncated?)")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path} is corrupt: its SHA-256 differs from the one written with it")


# -- finding checkpoints in a run -----------------------------------------------------------------
def checkpoint_step(path: Path) -> int | None:
    """N for `step_N` (or `.step_N.old`), else None."""
    name = path.name
    if m := _OLD_DIR.match(name):
        name = m.group(1)
    m = STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def list_checkpoints(root: str | Path) -> list[Path]:
    """The step folders of a `checkpoints/` folder, newest first; `.step_N.old` (a replacement killed
    half-way) follows its `step_N`, or stands in for it when `step_N` is gone."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        step = checkpoint_step(p)
        if step is not None and p.is_dir():
            found.append((-step, p.name.startswith("."), p))
    return [p for *_, p in sorted(found)]


def read_pointer(root: str | Path) -> Path | None:
    """The folder `checkpoints/latest` names (None without a pointer); refuses one outside `root`."""
    root = Path(root)
    pointer = root / POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    target = root / name
    if not name or Path(name).name != name or name in (".", "..") or target.resolve().parent != root.resolve():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a folder inside {root}; a pointer names a "
                              "step_N folder next to it. Fix or delete it (readers then take the newest step folder)")
    return target


def newest_checkpoint(root: str | Path, training: bool = False) -> Path | None:
    """The newest checkpoint under `root` that verifies (None if there is none at all).

    Unusable ones are skipped with one warning naming the bad file; if every one is unusable, raises.
    """
    root = Path(root)
    pointer = read_pointer(root)  # refuse a pointer outside the folder even though the scan does not need it
    rejected = []
    for path in list_checkpoints(root):
        try:
            verify_checkpoint(path, training)
        except CheckpointError as exc:
            rejected.append(str(exc))
            continue
        if rejected:
            log.warning("skipped %d unusable checkpoint(s) (%s); using %s", len(rejected), "; ".join(rejected), path)
        elif pointer is not None and pointer.name != path.name:
            log.info("%s names %s, but %s is newer and complete (a kill before the pointer was written)",
                     root / POINTER, pointer.name, path.name)
        return path
    if rejected:
        raise CheckpointError(f"no usable checkpoint in {root}: {'; '.join(rejected)}")
    return None


def recover_checkpoints(root: str | Path) -> None:
    """Undo what a killed writer left in `root`: `.NAME.old` back in place of a missing `NAME` (else removed),
    leftover temporaries removed. For the one process that writes there, before it reads or writes."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if (m := _OLD_DIR.match(p.name)) and p.is_dir():
            final = root / m.group(1)
            if final.exists():
                shutil.rmtree(p, ignore_errors=True)
                log.info("removed %s (left by an interrupted replacement of %s)", p, final.name)
            else:
                os.replace(p, final)
                log.warning("restored %s from %s (its replacement was interrupted)", final, p.name)
        elif p.name.startswith(".") and p.name.endswith(".tmp"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            log.info("removed %s (left by an interrupted checkpoint write)", p)


# -- save and load --------------------------------------------------------------------------------
def disk_full(exc: BaseException) -> bool:
    """Whether an error (or one it came from) says the disk or quota is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(seen) for s in ("No space left", "StorageFull", "Disk quota exceeded")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _model_config_of(cfg) -> ModelConfig:
    """The ModelConfig inside a run config (or a bare model config) loaded from YAML."""
    node = cfg.model_config if "model_config" in cfg else cfg
    return cast(ModelConfig, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), node)))


def save_student(folder: str | Path, model: SFCLIP, tokenizer: Tokenizer | None, run_config=None) -> None:
    """Write weights, config and tokenizer into `folder` (the caller makes it atomic)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "sfclip": "student"})
    cfg = OmegaConf.create({"model_config": OmegaConf.structured(model.cfg)})
    if run_config is not None:
        run = OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(run_config)))
        OmegaConf.save(OmegaConf.merge(run, cfg), folder / CONFIG)
    else:
        OmegaConf.save(cfg, folder / CONFIG)
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER)


def load_student(folder: str | Path, map_location: str | torch.device = "cpu") -> SFCLIP:
    """Rebuild the student from its saved config and load its weights (no pickled code is ever run)."""
    folder = Path(folder)
    for name in (WEIGHTS, CONFIG):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not an sfclip checkpoint: {name} is missing")
    try:
        model_cfg = _model_config_of(OmegaConf.load(folder / CONFIG))
    except Exception as exc:  # noqa: BLE001 - YAML or schema errors alike mean an unusable config
        raise CheckpointError(f"{folder / CONFIG} cannot be read as a model config: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]}") from None
    model = SFCLIP(model_cfg)
    try:
        state = load_file(str(folder / WEIGHTS), device=str(map_location))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{folder / WEIGHTS} is corrupt: {exc}") from None
    expected = model.state_dict()
    wrong = [f"{k} is {tuple(v.shape)} in the file, {tuple(expected[k].shape)} in the model"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if wrong or missing or unexpected:
        detail = "; ".join(wrong[:3] + ([f"missing {missing[:3]}"] if missing else [])
                           + ([f"unexpected {unexpected[:3]}"] if unexpected else []))
        raise CheckpointError(f"{folder / WEIGHTS} does not hold the model {folder / CONFIG} describes "
                              f"(weights of another model size?): {detail}")
    model.load_state_dict(state)
    return model.to(map_location).eval()


HUB_PREFIX = "hf-hub:"


def hub_snapshot(spec: str) -> Path:
    """`hf-hub:org/name[@revision]` -> the local folder of that Hugging Face Hub repo's snapshot.

    huggingface_hub downloads it into its cache once (HF_HUB_CACHE, default ~/.cache/huggingface/hub) and reads
    it from there afterwards; with HF_HUB_OFFLINE=1 only the cache is read. `state.pt` is never fetched.
    """
    from huggingface_hub import snapshot_download

    repo_id, _, revision = spec.removeprefix(HUB_PREFIX).partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise CheckpointError(f"{spec!r} is not {HUB_PREFIX}<org>/<name>[@revision]")
    try:
        folder = snapshot_download(repo_id, revision=revision or None, ignore_patterns=[STATE])
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo and cache misses all end here
        raise CheckpointError(f"{spec}: cannot get it from the Hugging Face Hub ({type(exc).__name__}: "
                              f"{(str(exc).splitlines() or [''])[0]}); offline (HF_HUB_OFFLINE=1) it must already "
                              "be in the hub cache (HF_HUB_CACHE)") from None
    return Path(folder)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder (verified), a run / `checkpoints/` folder (its newest checkpoint that verifies), or
    `hf-hub:org/name` (the Hub repo's snapshot, verified)."""
    if str(path).startswith(HUB_PREFIX):
        folder = hub_snapshot(str(path))
        verify_checkpoint(folder)
        return folder
    path = Path(path)
    if any((path / name).exists() for name in (WEIGHTS, MANIFEST, STATE, TOKENIZER)):
        verify_checkpoint(path)
        return path
    for root in (path / "checkpoints", path):
        if (root / POINTER).is_file() or list_checkpoints(root):
            found = newest_checkpoint(root)
            if found is not None:
                return found
    raise FileNotFoundError(f"no sfclip checkpoint at {path}: expected {WEIGHTS} or a run folder with "
                            "checkpoints/step_N folders")


def load(path: str | Path, device: str | torch.device = "cpu"):
    """`model, tokenizer, transform = sfclip.load(path)`: ready for `encode_image` / `encode_text`.

    `path` is a checkpoint folder, a run folder (its newest complete checkpoint is used) or
    `hf-hub:org/name[@revision]` (a checkpoint pushed with `sfclip push`, fetched once into the Hugging Face
    cache). The transform maps a PIL image to the normalized (3, S, S) tensor the model expects. A checkpoint
    that cannot be used raises `CheckpointError` naming the file.
    """
    folder = resolve_checkpoint(path)
    model = load_student(folder, device)
    if not (folder / TOKENIZER).is_dir():
        raise CheckpointError(f"{folder / TOKENIZER} is missing: encode_text needs the tokenizer the student "
                              "was trained with; copy tokenizer/ from another checkpoint of the same run")
    try:
        tokenizer = load_tokenizer(folder / TOKENIZER)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a broken folder
        raise CheckpointError(f"{folder / TOKENIZER} cannot be loaded: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    from .data.transforms import eval_transform

    return model, tokenizer, eval_transform(model.cfg.vision.image_size, *image_stats(folder))


def image_stats(path: str | Path) -> tuple[list[float], list[float]]:
    """The (mean, std) the checkpoint's student was trained with (OpenAI CLIP's when not recorded)."""
    from .data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    cfg = OmegaConf.load(resolve_checkpoint(path) / CONFIG)
    if "data" in cfg:
        return list(cfg.data.mean), list(cfg.data.std)
    return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
