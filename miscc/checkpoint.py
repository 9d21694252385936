"""Checkpoint files: atomic writes, data-only loads, and the originals' state-dict quirks.

Every `.pth` is loaded with `torch.load(..., weights_only=True)`: a checkpoint is data, never code. Writes go to a
temporary file `.tmp_<8 random characters>.pth` in the same folder, flushed to disk, and are renamed into place, so an
interrupted save never leaves a truncated file under the real name; `remove_stale_temporaries` deletes the
temporary files a killed process left behind.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections import OrderedDict

import torch


TMP_PREFIX, TMP_SUFFIX = ".tmp_", ".pth"
# exactly what `tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX)` names a file: 8 of [a-z0-9_]
TMP_PATTERN = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}" + re.escape(TMP_SUFFIX))


def _fsync_folder(folder: str) -> None:
    """Flush a folder's entries (the rename) to disk where the OS allows opening a folder (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj, path: str) -> None:
    """`torch.save` to `path` via a temporary file (flushed and fsync'ed) and `os.replace` (atomic on POSIX and
    Windows), then an fsync of the folder so that the rename survives a power cut."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the temporary files of `atomic_save` that a killed process left in `folder` (only names matching
    `TMP_PATTERN`, only plain files); returns their paths. Call it before this process writes there."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if TMP_PATTERN.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed.append(path)
    return removed


def load_checkpoint(path: str, what: str = "checkpoint", map_location="cpu"):
    """Load a `.pth` file as data (`weights_only=True`); a missing file is an error naming it and `what` it is."""
    if not path:
        raise FileNotFoundError(f"no path given for the {what}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot load the {what} as a weights-only checkpoint ({e})") from e


def strip_module_prefix(state_dict: dict) -> OrderedDict:
    """Remove the `module.` prefix that (Distributed)DataParallel adds to every key (SSA-GAN, GAN-INT-CLS)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict, source: str = "state dict") -> None:
    """`load_state_dict(strict=True)` after removing a `module.` prefix; errors name `source`.

    Torch-0.3-era checkpoints (the released AttnGAN files) lack BatchNorm `num_batches_tracked`; current PyTorch
    fills those in itself, so they load strictly.
    """
    state_dict = strip_module_prefix(state_dict)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{source} does not fit {type(module).__name__}: {e}") from e
