"""Reed-style hd5 datasets as used by GAN-INT-CLS (aelnouby/Text-to-Image-Synthesis): reader, writer, converter.

Layout (`convert_{flowers,cub}_to_hd5_script.py`): groups `/train`, `/valid`, `/test` (split 0/1/2); in each, one
group per (image, caption) pair named `<image name>_<c>`, c = 0..4, holding

* `name`: the image basename without extension (string); `class`: the class folder, e.g. `class_00001` (string);
* `img`: the raw bytes of the image file (the original JPEG) as one opaque `np.void` scalar;
* `embeddings`: float32 [D] (1024 for Reed's char-CNN-RNN), the embedding of that one caption;
* `txt`: the caption, variable-length string, with the trailing newline kept from `readlines()`.

Strings may be stored as variable-length str or bytes (h5py 3 reads both as bytes) or as fixed-length `|S` (files
from h5py 2 / Python 2); the reader accepts all of them and decodes UTF-8.

Differences from the port's `Text2ImageDataset`, each deliberate:

* The wrong image comes from a different class, comparing decoded class names (`wrong_indices`); the port compared
  h5py Dataset objects, which differ by identity, so its "wrong" image could be of the same class or the same photo.
* The resize filter is explicit (`resize_filter`, default BICUBIC). The port called `.resize((64, 64))` without
  one: NEAREST in Pillow < 7.0, BICUBIC since. Pass `Image.NEAREST` to reproduce images from old set-ups.
* RGBA, CMYK, palette and other modes are converted to RGB (alpha dropped, no compositing); the port handled only
  grayscale (stacked to 3 channels, which `convert('RGB')` also does).
* `txt` has its trailing newline (and a CR before it) stripped; the samples also carry `wrong_embed`, `class` and
  `name`. `inter_embed` is, as in the port, the embedding of a random example; Reed's INT texts are built from the
  batch by `models.gan_int_cls.networks.interpolate_embeddings`.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Callable, Iterable, Mapping, Sequence

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from miscc.classes import wrong_indices
from miscc.errors import InputError, MissingFileError, MissingKeyError, add_debug_argument, run_cli
from miscc.files import atomic_path

SPLITS = ("train", "valid", "test")
REQUIRED_FIELDS = ("img", "embeddings", "class", "txt")


def split_name(split) -> str:
    """'train'/'valid'/'test' from a name or the port's index 0/1/2."""
    if isinstance(split, (int, np.integer)) and not isinstance(split, bool) and 0 <= split < len(SPLITS):
        return SPLITS[int(split)]
    if isinstance(split, str) and split in SPLITS:
        return split
    raise ValueError(f"split must be one of {SPLITS} or 0/1/2, got {split!r}")


def decode_string(value, where: str = "value") -> str:
    """A str from what h5py returns for a string dataset: str, bytes, np.bytes_, or a 0-d/1-element array of them."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InputError(f"{where}: expected one string, got an array of shape {value.shape}")
        value = value.reshape(()).item()
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    if isinstance(value, str):
        return str(value)
    raise InputError(f"{where}: expected a string, got {type(value).__name__}")


def image_bytes(value, where: str = "img") -> bytes:
    """Encoded image bytes from an `img` dataset value: np.void (the port's layout) or a 1-D uint8 array."""
    if isinstance(value, np.void) or (isinstance(value, np.ndarray) and value.dtype.kind == "V" and value.size == 1):
        return value.tobytes()
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
        return value.tobytes()
    raise InputError(f"{where}: expected the image file's bytes (np.void or 1-D uint8), got "
                    f"{type(value).__name__} {getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}")


def decode_image(data: bytes, image_size: int = 64, resize_filter=Image.BICUBIC, where: str = "image") -> torch.Tensor:
    """Encoded image -> float32 [3, S, S] in [-1, 1] via (x - 127.5) / 127.5, any PIL mode converted to RGB."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:
        raise InputError(f"{where}: cannot decode the image bytes ({e})") from e
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), resample=resize_filter)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy())
    return (x - 127.5) / 127.5


class ReedHd5Dataset(Dataset):
    """A Reed/GAN-INT-CLS hd5 split as a Dataset of dicts (the port's `Text2ImageDataset` keys and more):

    `right_images`, `wrong_images` float32 [3, S, S] in [-1, 1]; `right_embed`, `wrong_embed`, `inter_embed` float32
    [D]; `txt` (caption without trailing newline), `class`, `name` (str).

    Examples are in `f[split].keys()` order (h5py's name order), as in the port. Keys and class names are read once
    here; the file itself is opened lazily, once per process (so DataLoader workers each get their own handle).
    Wrong and interpolation partners: with `seed` None (training), each item draws them from a numpy Generator
    seeded by torch's global generator, which DataLoader seeds per worker and epoch and the trainer saves and
    restores, so a resumed run draws the same pairs as an uninterrupted one. With a fixed `seed`, one stream per
    worker that starts afresh whenever the worker does (repeatable partners for evaluation and tests).
    """

    def __init__(self, path: str, split="train", image_size: int = 64, resize_filter=Image.BICUBIC,
                 seed: int | None = None):
        self.path = os.fspath(path)
        self.split = split_name(split)
        self.image_size, self.resize_filter, self.seed = image_size, resize_filter, seed
        if not os.path.isfile(self.path):
            raise MissingFileError(f"Reed hd5 dataset not found: {self.path}")
        with h5py.File(self.path, "r") as f:
            if self.split not in f:
                raise MissingKeyError(f"{self.path}: no '{self.split}' group (found {sorted(f.keys())}); "
                               f"expected groups {SPLITS}")
            group = f[self.split]
            self.keys = [str(k) for k in group.keys()]
            if not self.keys:
                raise InputError(f"{self.path}: split '{self.split}' is empty")
            classes = []
            for k in self.keys:
                if "class" not in group[k]:
                    raise MissingKeyError(f"{self.path}: example '{self.split}/{k}' has no 'class' dataset "
                                   f"(expected {REQUIRED_FIELDS})")
                classes.append(decode_string(group[k]["class"][()], f"{self.path}:{self.split}/{k}/class"))
        self.classes = np.asarray(classes)
        self.num_classes = len(set(classes))
        self._file = None
        self._pid = None
        self._rng = None
        self._rng_pid = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_file=None, _pid=None, _rng=None, _rng_pid=None)
        return state

    def close(self) -> None:
        """Close this process's file handle (it is reopened on the next item)."""
        if self._file is not None:
            self._file.close()
        self._file = self._pid = None

    def _group(self):
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.split]

    def _generator(self) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,))))
        if self._rng is None or self._rng_pid != os.getpid():  # forked workers must not share the parent's stream
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng([self.seed, 0 if info is None else info.id])
            self._rng_pid = os.getpid()
        return self._rng

    def _read(self, group, idx: int):
        key = self.keys[idx]
        where = f"{self.path}:{self.split}/{key}"
        ex = group[key]
        missing = [n for n in REQUIRED_FIELDS if n not in ex]
        if missing:
            raise MissingKeyError(f"{where}: missing dataset(s) {missing} (expected {REQUIRED_FIELDS})")
        embed = np.asarray(ex["embeddings"][()], dtype=np.float32)
        if embed.ndim != 1:
            raise InputError(f"{where}/embeddings: expected one caption's embedding [D], got shape {embed.shape}")
        image = decode_image(image_bytes(ex["img"][()], f"{where}/img"), self.image_size, self.resize_filter,
                             f"{where}/img")
        return ex, image, torch.from_numpy(embed)

    def __getitem__(self, idx: int) -> dict:
        group = self._group()
        rng = self._generator()
        ex, right_image, right_embed = self._read(group, idx)
        key = self.keys[idx]
        if self.num_classes < 2:
            raise InputError(f"{self.path}: every example of split '{self.split}' has class '{self.classes[0]}'; "
                             f"wrong images need at least two classes")
        wrong = int(wrong_indices(self.classes, rng, anchors=[idx])[0])
        _, wrong_image, wrong_embed = self._read(group, wrong)
        inter = int(rng.integers(0, len(self.keys)))
        inter_embed = np.asarray(group[self.keys[inter]]["embeddings"][()], dtype=np.float32)
        txt = decode_string(ex["txt"][()], f"{self.path}:{self.split}/{key}/txt").rstrip("\n").rstrip("\r")
        name = decode_string(ex["name"][()], f"{self.path}:{self.split}/{key}/name") if "name" in ex else key
        return {
            "right_images": right_image,
            "right_embed": right_embed,
            "wrong_images": wrong_image,
            "wrong_embed": wrong_embed,
            "inter_embed": torch.from_numpy(inter_embed),
            "txt": txt,
            "class": str(self.classes[idx]),
            "name": name,
        }


def _examples_with_group_names(split: str, examples: Iterable) -> Iterable[tuple]:
    """Yield (group, name, img, embedding, class, txt), naming each group `<name>_<k>` with k counting that name."""
    seen: dict[str, int] = {}
    for i, ex in enumerate(examples):
        try:
            name, img, embedding, cls, txt = ex
        except (TypeError, ValueError) as e:
            raise InputError(f"{split} example {i}: expected (name, image_bytes, embedding, class, txt)") from e
        k = seen.get(name, 0)
        seen[name] = k + 1
        yield f"{name}_{k}", name, img, embedding, cls, txt


def write_reed_hd5(path: str, split_examples: Mapping) -> dict[str, int]:
    """Write a Reed/GAN-INT-CLS hd5 file; returns the number of examples per split.

    `split_examples` maps a split ('train'/'valid'/'test' or 0/1/2) to an iterable of
    (name, image file bytes, embedding float [D], class name, caption). Each becomes the group `<name>_<k>` (k-th
    example with that name) holding `name`, `class`, `txt` (variable-length UTF-8 str; a trailing newline is added
    as in the original files), `img` (np.void of the bytes) and `embeddings` (float32 [D]). All three split groups
    are created, as in the originals. The file is written to a temporary name and renamed when complete.
    """
    splits = {split_name(s): v for s, v in split_examples.items()}
    path = os.fspath(path)
    str_dt = h5py.string_dtype("utf-8")
    counts = {s: 0 for s in SPLITS}
    dim = None
    with atomic_path(path, ".hdf5") as tmp:
        with h5py.File(tmp, "w") as f:
            for split in SPLITS:
                group = f.create_group(split)
                for gname, name, img, embedding, cls, txt in _examples_with_group_names(split, splits.get(split, ())):
                    emb = np.asarray(embedding, dtype=np.float32)
                    if emb.ndim != 1:
                        raise InputError(f"{split}/{gname}: embedding must be 1-D [D], got shape {emb.shape}")
                    if dim is None:
                        dim = emb.shape[0]
                    elif emb.shape[0] != dim:
                        raise InputError(f"{split}/{gname}: embedding has {emb.shape[0]} values, earlier ones {dim}")
                    if not isinstance(img, (bytes, bytearray)) or not img:
                        raise InputError(f"{split}/{gname}: image must be the non-empty bytes of an image file")
                    txt = str(txt)
                    ex = group.create_group(gname)
                    ex.create_dataset("name", data=str(name), dtype=str_dt)
                    ex.create_dataset("img", data=np.void(bytes(img)))
                    ex.create_dataset("embeddings", data=emb)
                    ex.create_dataset("class", data=str(cls), dtype=str_dt)
                    ex.create_dataset("txt", data=txt if txt.endswith("\n") else txt + "\n", dtype=str_dt)
                    counts[split] += 1
    return counts


def convert_to_reed_hd5(path: str, splits: Mapping, embed_fn: Callable[[list[str]], np.ndarray],
                        captions_per_image: int = 5, rng: np.random.Generator | None = None,
                        batch_images: int = 64) -> dict[str, int]:
    """Build a Reed hd5 file from our (AttnGAN-layout) data.

    `splits` maps a split to an iterable of (key, image_path, class_name, captions list[str]); `embed_fn` maps a
    list of N captions to float [N, D] (our text encoder's sentence vectors, or any other). As in the original
    converters, `captions_per_image` captions are drawn per image WITH replacement (`np.random.choice(10, 5)`), each
    becoming one example `<basename>_<c>` that stores the raw image file bytes. Captions are embedded in batches of
    `batch_images` images. Returns the number of examples per split.
    """
    rng = np.random.default_rng() if rng is None else rng

    def examples(split: str, items: Iterable):
        pending = []

        def flush():
            captions = [c for _, _, _, caps in pending for c in caps]
            emb = np.asarray(embed_fn(captions), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(captions):
                raise ValueError(f"embed_fn returned shape {emb.shape} for {len(captions)} captions; "
                                 f"expected [{len(captions)}, D]")
            row = 0
            for name, img, cls, caps in pending:
                for cap in caps:
                    yield name, img, emb[row], cls, cap
                    row += 1
            pending.clear()

        for key, image_path, class_name, captions in items:
            if not captions:
                raise InputError(f"{split}/{key}: no captions")
            try:
                with open(image_path, "rb") as fh:
                    img = fh.read()
            except OSError as e:
                raise MissingFileError(f"{split}/{key}: cannot read image {image_path} ({e})") from e
            picks = rng.choice(len(captions), captions_per_image, replace=True)
            name = os.path.splitext(os.path.basename(str(key)))[0]
            pending.append((name, img, str(class_name), [str(captions[p]) for p in picks]))
            if len(pending) >= batch_images:
                yield from flush()
        if pending:
            yield from flush()

    return write_reed_hd5(path, {s: examples(split_name(s), items) for s, items in splits.items()})


def _string_kind(dtype) -> str:
    info = h5py.check_string_dtype(dtype)
    if info is None:
        return f"not a string ({dtype})"
    return f"{'vlen' if info.length is None else f'fixed {info.length}'} {info.encoding}"


def describe_hd5(path: str) -> dict:
    """Per split: number of examples, classes, embedding shape and the storage kind of the strings of the first
    example (for checking a downloaded file)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"Reed hd5 dataset not found: {path}")
    out = {}
    with h5py.File(path, "r") as f:
        for split in SPLITS:
            if split not in f:
                continue
            group = f[split]
            keys = list(group.keys())
            info = {"examples": len(keys)}
            if keys:
                ex = group[keys[0]]
                info["first"] = keys[0]
                info["embedding_shape"] = tuple(ex["embeddings"].shape) if "embeddings" in ex else None
                info["strings"] = {n: _string_kind(ex[n].dtype) for n in ("name", "class", "txt") if n in ex}
                info["classes"] = len({decode_string(group[k]["class"][()]) for k in keys if "class" in group[k]})
            out[split] = info
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miscc.reed_hd5", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="summarise the splits of an hd5 file")
    p.add_argument("path")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    summary = describe_hd5(args.path)
    for split, info in summary.items():
        print(split, " ".join(f"{k}={v}" for k, v in info.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
