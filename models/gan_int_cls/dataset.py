"""GAN-INT-CLS inputs: the wrong-image dataset over `TextDataset`, Reed's hd5 split, the batch a step takes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from datasets import CorruptImageError
from miscc.config import resolve_path
from miscc.errors import InputError, MissingFileError
from miscc.reed_hd5 import ReedHd5Dataset

TEXT_SOURCES = ("encoder", "hd5")
IMAGE_SIZE = 64  # the port's (and Reed's) resolution; `build_gan_int_cls` builds 64-px nets


class WrongImageDataset(Dataset):
    """A `TextDataset` whose items also carry CLS's mismatched image: `wrong_img` (the last branch, [3, 64, 64],
    cropped and flipped like the right image) of a random image of a different class, and its `wrong_index`.

    The pick uses `TextDataset.wrong_image_index` (torch's global generator, like the dataset's other draws). With
    DATA.SKIP_CORRUPT an unreadable wrong image is replaced by another pick.
    """

    MAX_TRIES = 10

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        for attempt in range(self.MAX_TRIES):
            j = self.base.wrong_image_index(item["index"])
            try:
                wrong = self.base.get_imgs(j)[-1]
                break
            except CorruptImageError:
                if not self.base.skip_corrupt or attempt == self.MAX_TRIES - 1:
                    raise
        item["wrong_img"], item["wrong_index"] = wrong, j
        return item


@dataclass
class IntClsBatch:
    """What one GAN-INT-CLS step needs, whatever the text source. `embed` is None for unconditional types,
    `wrong_images` None without CLS; `captions` (text) only for the fixed visualisation batch."""
    images: torch.Tensor  # [B, 3, 64, 64] in [-1, 1]
    embed: torch.Tensor | None  # [B, D] float32
    wrong_images: torch.Tensor | None
    captions: list | None = None

    def __len__(self) -> int:
        return self.images.size(0)


def text_source(cfg) -> str:
    source = cfg.INTCLS.TEXT_SOURCE
    if source not in TEXT_SOURCES:
        raise InputError(f"INTCLS.TEXT_SOURCE must be one of {TEXT_SOURCES}, got {source!r}")
    return source


def open_hd5(cfg, split: str = "train") -> ReedHd5Dataset:
    """The INTCLS.HD5_PATH split as a `ReedHd5Dataset` of 64-px images."""
    if not cfg.INTCLS.HD5_PATH:
        raise MissingFileError("INTCLS.TEXT_SOURCE is 'hd5' but INTCLS.HD5_PATH is empty: set it to Reed's "
                                "birds.hdf5 / flowers.hdf5 or a file made by `python -m tools.convert_hd5`")
    path = resolve_path(cfg.INTCLS.HD5_PATH)
    if not os.path.isfile(path):
        raise MissingFileError(f"INTCLS.HD5_PATH not found: {path} (Reed's hd5 file, e.g. birds.hdf5 from the "
                                "GAN-INT-CLS port's README, or one made by `python -m tools.convert_hd5`)")
    return ReedHd5Dataset(path, split, image_size=IMAGE_SIZE)


def check_image_size(dataset) -> None:
    if dataset.imsize != IMAGE_SIZE:
        raise InputError(f"GAN-INT-CLS trains {IMAGE_SIZE}x{IMAGE_SIZE} images, but the dataset gives "
                         f"{dataset.imsize}x{dataset.imsize} (TREE.BASE_SIZE={dataset.base_size}, "
                         f"TREE.BRANCH_NUM={dataset.branch_num}); set TREE.BRANCH_NUM: 1 and TREE.BASE_SIZE: 64")


def check_embed_dim(embed: torch.Tensor | None, expected: int, source: str) -> None:
    if embed is not None and embed.size(1) != expected:
        raise InputError(f"{source} gives {embed.size(1)}-d text embeddings but the model expects {expected} "
                         "(INTCLS.EMBED_DIM for TEXT_SOURCE hd5, TEXT.EMBEDDING_DIM for TEXT_SOURCE encoder)")
