"""SSA-GAN's extra pictures: the per-stage masks of generated images, for grids, evaluation sets and examples."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from miscc.vis import image_grid
from trainers.sampling import example_entries, sample_sentences


def _display_size(images: torch.Tensor, min_size: int = 128) -> torch.Tensor:
    """Small images upscaled (nearest) so that their captions fit underneath."""
    h = images.size(-1)
    if h >= min_size:
        return images
    return F.interpolate(images.float(), scale_factor=-(-min_size // h), mode="nearest")


def mask_figure(images: torch.Tensor, masks: list[torch.Tensor], captions: list[str] | None = None,
                min_tile: int = 128) -> Image.Image:
    """The paper's mask figure: one row per sample, the image then the mask of every stage (4×4 up to the image
    size, black 0 to white 1), each scaled (nearest) to one tile size, captioned with the sentence and the stage
    sizes. `images` [B, 3, H, W] in [-1, 1]; `masks` as NetG returns them, [B, 1, h, w] in [0, 1] per stage."""
    images = _display_size(images.detach().float().cpu(), min_tile)
    b, _, size, _ = images.shape
    tiles, labels = [], []
    for i in range(b):
        tiles.append(images[i])
        labels.append(captions[i] if captions else "")
        for m in masks:
            side = m.size(-1)
            m = F.interpolate(m[i:i + 1].detach().float().cpu(), size=(size, size), mode="nearest")[0]
            tiles.append((m * 2 - 1).expand(3, -1, -1))
            labels.append(f"mask {side}x{side}")
    return image_grid(torch.stack(tiles), labels, ncol=len(masks) + 1, min_tile=min_tile)


def save_last_mask(masks: list[torch.Tensor], row: int, path_stem: str) -> None:
    """The registry's `save_extras` for SSA-GAN: the last (full-size) mask of sample `row` as `<stem>_mask.png`
    (8-bit grey, rounded; wt wrote it as `fm_<idx>.png`)."""
    m = masks[-1][row, 0].detach().float().clamp(0, 1).cpu().numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
    Image.fromarray(np.round(m * 255).astype(np.uint8)).save(path_stem + "_mask.png")


def write_example_masks(net, text_encoder, dataset, sentences: list[str], out_dir: str, *, z_dim: int, device,
                        seed: int = 100, source: str = "<command line>", prefix: str = "0") -> list[str]:
    """`<prefix>_s_<j>_masks.png` (image + mask of every stage, `mask_figure`) for each sentence j, with the noise
    `trainers.sampling.generate_sentences` draws for the same sentences and seed, so the pictures show the masks of
    its `<prefix>_s_<j>_g0.png` images. `net`: a NetG in eval mode."""
    (images, masks), _ = sample_sentences(net, text_encoder, dataset, sentences, z_dim=z_dim, device=device,
                                          seed=seed, source=source)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for j, sentence in enumerate(sentences):
        path = os.path.join(out_dir, f"{prefix}_s_{j}_masks.png")
        mask_figure(images[j:j + 1], [m[j:j + 1] for m in masks], [sentence]).save(path)
        written.append(path)
    return written


def gen_example_masks(net, text_encoder, dataset, out_root: str, *, z_dim: int, device, seed: int = 100) -> list[str]:
    """`write_example_masks` for every entry of `<DATA_DIR>/example_filenames.txt`, into the folders
    `trainers.sampling.gen_example` writes (`<out_root>/<entry basename>/`)."""
    written = []
    for entry, sentences, source in example_entries(dataset.data_dir):
        written += write_example_masks(net, text_encoder, dataset, sentences,
                                       os.path.join(out_root, os.path.basename(entry)), z_dim=z_dim,
                                       device=device, seed=seed, source=source)
    return written
