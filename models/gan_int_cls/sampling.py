"""GAN-INT-CLS sampling: the generator `main.py` samples with (optionally with SRCNN), its calls for the shared
samplers, and sampling from an hd5 split's stored embeddings (no text encoder)."""
from __future__ import annotations

import json
import os

import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader

from miscc.config import resolve_path
from miscc.errors import InputError, MissingFileError
from miscc.reed_hd5 import ReedHd5Dataset
from miscc.vis import save_png
from models.gan_int_cls.build import build_gan_int_cls
from models.gan_int_cls.networks import generator, load_gan_int_cls
from models.srcnn import SRCNN, load_srcnn, upscale


class UpscalingGenerator(nn.Module):
    """A GAN-INT-CLS `generator` plus an SRCNN (INTCLS.SRCNN_WEIGHTS) for sampling: `forward` is the generator's;
    `generate` also returns the `scale`-times SRCNN-upscaled images, which `save_extras` writes.

    SRCNN is applied as `models.srcnn.upscale` does (bicubic x scale, then SRCNN on Y): real 64 -> 192 px
    super-resolution, not the kmeagle1515/T2I fork's downscale-and-restore to 63 px (reference notes A4).
    """

    def __init__(self, netG: generator, srcnn: SRCNN, scale: int):
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise InputError(f"INTCLS.SRCNN_SCALE must be a positive integer, got {scale!r}")
        self.netG, self.srcnn, self.scale = netG, srcnn, scale

    @property
    def embed_dim(self) -> int:
        return self.netG.embed_dim

    def forward(self, embed, z):
        return self.netG(embed, z)


def build_sampling_generator(cfg) -> nn.Module:
    """The generator `main.py` samples with: a `generator`, or an `UpscalingGenerator` when INTCLS.SRCNN_WEIGHTS
    names yjn870 SRCNN weights (e.g. srcnn_x3.pth; the scale is INTCLS.SRCNN_SCALE)."""
    netG = build_gan_int_cls(cfg)[0]
    if not cfg.INTCLS.SRCNN_WEIGHTS:
        return netG
    path = resolve_path(cfg.INTCLS.SRCNN_WEIGHTS)
    if not os.path.isfile(path):
        raise MissingFileError(f"INTCLS.SRCNN_WEIGHTS not found: {path} (yjn870/SRCNN-pytorch weights, e.g. "
                                "srcnn_x3.pth; leave the key empty to sample without super-resolution)")
    return UpscalingGenerator(netG, load_srcnn(path), cfg.INTCLS.SRCNN_SCALE)


def load_sampling_generator(net: nn.Module, path: str) -> nn.Module:
    """Load `gen_<e>.pth` / `netG_epoch_<e>.pth` (ours or the port's, `module.` or not) strictly into the G."""
    load_gan_int_cls(net.netG if isinstance(net, UpscalingGenerator) else net, path)
    return net


def _text_input(net: nn.Module, sent_emb: torch.Tensor | None) -> torch.Tensor | None:
    """The generator's text input: None for unconditional models, else `sent_emb` of the size it was trained on."""
    dim = net.embed_dim
    if not dim:
        return None
    if sent_emb is None or sent_emb.dim() != 2 or sent_emb.size(1) != dim:
        got = None if sent_emb is None else tuple(sent_emb.shape)
        raise InputError(
            f"this GAN-INT-CLS generator takes {dim}-d text embeddings, but the text encoder gave {got}: new "
            "sentences cannot be encoded for it. A generator trained from an hd5 file (INTCLS.TEXT_SOURCE hd5, e.g. "
            "Reed's 1024-d char-CNN-RNN vectors) can only be sampled from that file's embeddings: run "
            "`python -m tools.sample_hd5 --cfg <config> --net_g <gen_N.pth>`")
    return sent_emb


def generate(net, noise, sent_emb, words_emb=None, mask=None):
    """(images [B, 3, 64, 64] in [-1, 1], extras). The generator takes the sentence embedding only; `extras` is None,
    or for an `UpscalingGenerator` {'images': uint8 [B, 3, 64s, 64s], 'scale': s} for `save_extras`."""
    images = net(_text_input(net, sent_emb), noise)
    if not isinstance(net, UpscalingGenerator):
        return images, None
    return images, {"images": upscale(images.float(), net.srcnn, net.scale), "scale": net.scale}


def generate_stages(net, noise, sent_emb, words_emb=None, mask=None):
    """([64-px images] + [the SRCNN-upscaled images, as a second 'stage', when there is an SRCNN], no attention)."""
    images, extras = generate(net, noise, sent_emb, words_emb, mask)
    stages = [images]
    if extras is not None:
        stages.append(extras["images"].float() / 127.5 - 1.0)
    return stages, []


def save_extras(extras, row: int, path_stem: str) -> None:
    """Write the SRCNN copy of image `row` as `<path_stem>_x<scale>.png` (nothing without SRCNN).

    The copies lie beside the 64-px images (the convention of `tools.srcnn_upscale`); metrics over a folder must
    skip `*_x<scale>.png` or read the file list from captions.json.
    """
    if extras is None:
        return
    img = extras["images"][row].permute(1, 2, 0).cpu().numpy()
    path = f"{path_stem}_x{extras['scale']}.png"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(img).save(path)


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


@torch.no_grad()
def sample_hd5(net, dataset: ReedHd5Dataset, out_dir: str, *, z_dim: int, device, batch_size: int = 64,
               seed: int = 0, limit: int | None = None, workers: int = 0) -> dict:
    """The port's `predict()` for an hd5 split: one image per example from its stored embedding, written as
    `<out_dir>/single/<example>.png` (the hd5 group name, e.g. `image_03001_2`; plus `_x<s>.png` with SRCNN), and
    `captions.json` with each file's caption, example name and class, as `trainers.sampling.sample_test_set`.

    The port named files by the caption's first 100 characters (duplicates overwrote each other) and truncated
    when converting to uint8; we name by example and round.
    """
    single = os.path.join(out_dir, "single")
    os.makedirs(single, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    target = len(dataset) if limit is None else min(limit, len(dataset))
    records, index = [], 0
    for raw in loader:
        b = min(raw["right_embed"].size(0), target - index)
        noise = torch.randn(b, z_dim, generator=g).to(device)
        images, extras = generate(net, noise, raw["right_embed"][:b].to(device).float())
        for i in range(b):
            key = dataset.keys[index]
            rel = f"{_safe_name(key)}.png"
            save_png(images[i], os.path.join(single, rel))
            save_extras(extras, i, os.path.join(single, _safe_name(key)))
            records.append({"file": rel, "key": key, "caption": raw["txt"][i], "class": raw["class"][i]})
            index += 1
        if index >= target:
            break
    path = os.path.join(out_dir, "captions.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=0)
    return {"n": len(records), "captions": path, "folder": single}
