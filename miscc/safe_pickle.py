"""Load pickles from untrusted sources without executing code.

AttnGAN's metadata (`captions.pickle`, `filenames.pickle`, `class_info.pickle`) is pickled, some of it by Python 2
(protocol 0/2, numpy int64 scalars in the official `train/class_info.pickle`). `pickle.load` would run any callable a
file names; `safe_load_pickle` allows only plain containers, strings, numbers and numpy scalars/arrays, and refuses
everything else with an error that names the file and the forbidden global.
"""
from __future__ import annotations

import io
import os
import pickle

from miscc.errors import MissingFileError, UserError

# (module, name) pairs a data pickle may reference. numpy moved `core` to `_core` in 2.0; pickles name either.
_ALLOWED_GLOBALS = {
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "str"), ("builtins", "bytes"), ("builtins", "bytearray"),
    ("builtins", "int"), ("builtins", "float"), ("builtins", "complex"), ("builtins", "bool"),
    ("__builtin__", "list"), ("__builtin__", "dict"), ("__builtin__", "tuple"), ("__builtin__", "set"),
    ("__builtin__", "frozenset"), ("__builtin__", "unicode"), ("__builtin__", "str"), ("__builtin__", "long"),
    ("__builtin__", "int"), ("__builtin__", "float"), ("__builtin__", "bool"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how Python 3 pickles `bytes` under protocol 2
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
}
_PY2_NAMES = {("__builtin__", "unicode"): "str", ("__builtin__", "long"): "int"}


class PickleFileError(UserError, pickle.UnpicklingError):
    """A data pickle that cannot be read."""


class UnsafePickleError(PickleFileError):
    """A pickle referenced a global outside the data-only allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self._source}: refusing to load '{module}.{name}': this pickle wants to call code, but data "
                "pickles may only hold lists, dicts, tuples, strings, numbers and numpy arrays/scalars"
            )
        if module == "__builtin__":
            module, name = "builtins", _PY2_NAMES.get((module, name), name)
        return super().find_class(module, name)


def safe_loads(data: bytes, source: str = "<bytes>"):
    """Unpickle `data` with the restricted allow-list; Python 2 strings are decoded as latin1."""
    return _RestrictedUnpickler(io.BytesIO(data), source, encoding="latin1").load()


def safe_load_pickle(path: str | os.PathLike):
    """Load a data pickle from `path`, refusing code. Errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"pickle file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return safe_loads(data, source=path)
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or corrupt file
        raise PickleFileError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
