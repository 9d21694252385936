"""Differentiable augmentation of the discriminator's inputs (Zhao et al., "Differentiable Augmentation for
Data-Efficient GAN Training", NeurIPS 2020), written so that it can keep what a caption says.

The same random transform family is applied to real and generated images before every discriminator call (in D's
and in G's step), so D cannot overfit a small training set and G still gets gradients through the transform.
Policies, comma-separated (`TRAIN.DIFFAUGMENT`):

- `color`: brightness (±0.25) and contrast (×0.75–1.25) only. DiffAugment's saturation jitter is left out: it
  changes hue relations and so the colour words a conditional D must check.
- `translation`: integer shifts of up to `translation` × size (zero padding). The paper's 1/8 moves an object by
  a third of a `shapes` grid cell; 1/16 (the default here) keeps objects in their cell.
- `cutout`: one zero square of `cutout` × size (paper: 1/2, which can erase a described object; default 1/4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from miscc.errors import InputError

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' -> (); unknown names fail naming the valid ones."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise InputError(f"TRAIN.DIFFAUGMENT: unknown policy {bad} in {policy!r}; valid: {', '.join(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], translation: float = 1 / 16,
                 cutout: float = 1 / 4) -> torch.Tensor:
    """x [B, C, H, W] in [-1, 1], augmented per sample by every transform of `policy` (in the order given)."""
    for name in policy:
        if name == "color":
            x = _brightness_contrast(x)
        elif name == "translation":
            x = _translation(x, translation)
        elif name == "cutout":
            x = _cutout(x, cutout)
    return x


def _brightness_contrast(x: torch.Tensor) -> torch.Tensor:
    b = x.size(0)
    x = x + (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5) * 0.5
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 0.5 + 0.75) + mean


def _translation(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Shift each image by (dy, dx) in [-ratio·H, ratio·H] pixels, filling with zeros (one gather)."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sy == 0 and sx == 0:
        return x
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1) + dy + 1  # +1: index into the zero-padded image
    gx = torch.arange(w, device=x.device).view(1, 1, w) + dx + 1
    gy, gx = gy.clamp(0, h + 1).expand(b, h, w), gx.clamp(0, w + 1).expand(b, h, w)
    padded = F.pad(x, (1, 1, 1, 1))
    flat = padded.permute(0, 2, 3, 1).reshape(b, (h + 2) * (w + 2), -1)
    index = (gy * (w + 2) + gx).reshape(b, h * w, 1).expand(-1, -1, x.size(1))
    return flat.gather(1, index).reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


def _cutout(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero one square of side ratio·size per image, centred anywhere in the image (it may be clipped)."""
    b, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    oy, ox = ys - cy + ch // 2, xs - cx + cw // 2  # the square spans [c - side//2, c - side//2 + side)
    inside = (oy >= 0) & (oy < ch) & (ox >= 0) & (ox < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)
