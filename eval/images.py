"""Image inputs for evaluation: folders of files, tensors and iterables of batches, all turned into uint8 batches.

torch-fidelity's extractors take uint8 [B, 3, H, W]. Generator output (float in [-1, 1]) is converted with
`clamp(round((x + 1) * 127.5))`; GAN-INT-CLS (aelnouby) and several originals truncated instead (`.astype(uint8)` of
`x * 127.5 + 127.5`), which shifts every pixel down by half a level on average, so their files and our tensors can
differ by one grey level.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from miscc.errors import MissingFileError, UnreadableFileError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")  # torch-fidelity's samples_find_ext


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] from uint8 (returned as is) or float in [-1, 1] (`clamp(round((x + 1) * 127.5))`).

    A single image [3, H, W] gets a batch dimension. Rounding is round-half-to-even (`torch.round`).
    """
    if not torch.is_tensor(images):
        raise TypeError(f"expected a torch.Tensor of images, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 or float images in [-1, 1], got dtype {images.dtype}")
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] in [-1, 1] from uint8 (x / 127.5 - 1) or float (returned as is)."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """Image files (png/jpg/jpeg, any case) directly inside `folder`, sorted by real path as torch-fidelity does.

    The order matters: IS splits follow it.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise MissingFileError(f"image folder not found: {folder}")
    files = sorted(
        os.path.realpath(os.path.join(folder, name))
        for name in os.listdir(folder)
        if os.path.splitext(name)[1].lower().lstrip(".") in IMAGE_EXTENSIONS
        and os.path.isfile(os.path.join(folder, name))
    )
    if not files:
        raise MissingFileError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return files


def load_image_uint8(path: str, resize: int | None = None) -> torch.Tensor:
    """One image file as uint8 [3, H, W] RGB; `resize` (pixels) first resizes with PIL bicubic to resize x resize."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if resize:
                img = img.resize((resize, resize), Image.BICUBIC)
            return pil_to_tensor(img)
    except OSError as e:
        raise UnreadableFileError(f"{path}: cannot read image ({e})") from e


def iter_file_batches(files: list[str], batch_size: int = 64, resize: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 batches of the given files, in order; a batch is cut early where the image size changes."""
    batch: list[torch.Tensor] = []
    for path in files:
        img = load_image_uint8(path, resize)
        if batch and (img.shape != batch[0].shape or len(batch) == batch_size):
            yield torch.stack(batch)
            batch = []
        batch.append(img)
    if batch:
        yield torch.stack(batch)


def iter_uint8_batches(source, batch_size: int = 64, limit: int | None = None,
                       resize: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 [B, 3, H, W] batches, at most `limit` images in all, from any supported source.

    `source`: a folder path (files sorted as in `list_image_files`), a list of image file paths, one tensor
    [N, 3, H, W], or an iterable of tensors (uint8, or float in [-1, 1]). `resize` applies to files only (PIL
    bicubic, before the extractor's own resize to 299).
    """
    is_file_list = isinstance(source, (list, tuple)) and source and isinstance(source[0], (str, os.PathLike))
    if isinstance(source, (str, os.PathLike)) or is_file_list:
        files = list(map(os.fspath, source)) if is_file_list else list_image_files(source)
        batches: Iterable = iter_file_batches(files[:limit] if limit is not None else files, batch_size, resize)
    elif torch.is_tensor(source):
        batches = source.split(batch_size) if source.dim() == 4 else [source]
    else:
        batches = source
    seen = 0
    for batch in batches:
        batch = to_uint8(batch)
        if limit is not None:
            if seen >= limit:
                return
            batch = batch[: limit - seen]
        seen += batch.shape[0]
        yield batch
