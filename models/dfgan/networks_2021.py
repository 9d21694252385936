"""DF-GAN 2021 networks (Tao et al., DF-GAN, arXiv 2104.00567 v1–v3): tobran/DF-GAN at `9015356`, `code/model.py`.

- `NetG(ngf, nz, cond_dim, imsize)`: `fc` → 8ngf×4×4 → `block0..blockK` (block i at 4·2^i px; nearest ×2 before
  every block but the first) → `conv_img` (LReLU, conv, tanh). The channel plan is SSA-GAN's (which copied this
  generator and added masks), `models.ssagan.generator_channel_plan`: (8,8)×4, (8,4), (4,2), (2,1)·ngf at 256 px.
- `G_Block`: `shortcut(x) + gamma·[affine0 → LReLU → affine1 → LReLU → c1 → affine2 → LReLU → affine3 → LReLU → c2]`,
  `gamma` a learnable scalar starting at 0; the affines are conditioned on the sentence only (no noise) through
  MLPs with a fixed 256-wide hidden layer.
- `NetD` / `resD` / `D_GET_LOGITS`: SSA-GAN's, which are this code's (imported from `models.ssagan`).

Differences from the original: the sentence width is `cond_dim` (hard-coded 256 there) and the image size any
power of two ≥ 8 (hard-coded 256); at 256 px with cond_dim 256 every key and shape is the original's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.dfgan.networks import Affine, check_inputs
from models.ssagan import D_GET_LOGITS, NetD, generator_channel_plan, resD

__all__ = ["NetG", "G_Block", "affine", "NetD", "resD", "D_GET_LOGITS", "AFFINE_HIDDEN"]

AFFINE_HIDDEN = 256  # width of the condition MLPs' hidden layer, fixed in the original


class affine(Affine):
    """The 2021 affine layer: `Affine` with the fixed 256-wide hidden layer (`fc_gamma`/`fc_beta.linear1/2`)."""

    def __init__(self, num_features: int, cond_dim: int = 256):
        super().__init__(cond_dim, num_features, hidden=AFFINE_HIDDEN)


class G_Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_dim: int = 256):
        super().__init__()
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.affine0 = affine(in_ch, cond_dim)
        self.affine1 = affine(in_ch, cond_dim)
        self.affine2 = affine(out_ch, cond_dim)
        self.affine3 = affine(out_ch, cond_dim)
        self.gamma = nn.Parameter(torch.zeros(1))
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def residual(self, x: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.affine0(x, sent), 0.2)
        h = F.leaky_relu(self.affine1(h, sent), 0.2)
        h = self.c1(h)
        h = F.leaky_relu(self.affine2(h, sent), 0.2)
        h = F.leaky_relu(self.affine3(h, sent), 0.2)
        return self.c2(h)

    def forward(self, x: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        shortcut = self.c_sc(x) if self.learnable_sc else x
        return shortcut + self.gamma * self.residual(x, sent)


class NetG(nn.Module):
    """DF-GAN 2021 generator; `forward(noise [B, nz], sentence [B, cond_dim]) -> image [B, 3, imsize, imsize]`."""

    def __init__(self, ngf: int = 64, nz: int = 100, cond_dim: int = 256, imsize: int = 256):
        super().__init__()
        self.ngf, self.nz, self.cond_dim, self.imsize = ngf, nz, cond_dim, imsize
        plan = generator_channel_plan(ngf, imsize)
        self.num_blocks = len(plan)
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        for i, (cin, cout) in enumerate(plan):
            self.add_module(f"block{i}", G_Block(cin, cout, cond_dim))
        self.conv_img = nn.Sequential(
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, 3, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        check_inputs("NetG (DF-GAN 2021)", noise, sentence, self.nz, self.cond_dim)
        out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        for i in range(self.num_blocks):
            if i > 0:
                out = F.interpolate(out, scale_factor=2, mode="nearest")
            out = getattr(self, f"block{i}")(out, sentence)
        return self.conv_img(out)
