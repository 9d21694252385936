"""Atomic file writes, written once: a temporary file in the target's folder, renamed into place when complete, so
an interrupted write never leaves a truncated file under the real name."""
from __future__ import annotations

import contextlib
import os
import tempfile

TMP_PREFIX = ".tmp_"


def fsync_folder(folder: str) -> None:
    """Flush a folder's entries (a rename) to disk where the OS allows opening a folder (not on Windows)."""
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


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None, durable: bool = False):
    """Yield a temporary path `.tmp_<8 characters><suffix>` (default: `path`'s extension) in `path`'s folder; when
    the block ends it is renamed onto `path` (`os.replace`, atomic on POSIX and Windows), on an error removed.
    `durable`: the file and then the folder are fsync'ed, so the new file survives a power cut."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.splitext(path)[1] if suffix is None else suffix,
                               dir=folder)
    os.close(fd)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
        fsync_folder(folder)
