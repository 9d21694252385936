"""DF-GAN 2022 and 2021 networks (Tao et al., "DF-GAN: A Simple and Effective Baseline for Text-to-Image Synthesis",
CVPR 2022).

Written after tobran/DF-GAN `code/models/GAN.py` (the code of the CVPR paper and of the released
`state_epoch_*.pth`): the module names, registration order and every parameter shape are the original's, so a
released checkpoint loads strictly (`models.dfgan.checkpoint`). The channel plans are the original's
`get_G_in_out_chs` / `get_D_in_out_chs`, computed from `nf` and `imsize` (32 px and up; 64, 128, 256 and 512 have
been checked).

- `NetG(ngf, nz, cond_dim, imsize, ch_size)`: noise → `fc` → 8ngf×4×4 → `GBlocks` (each upsamples ×2 nearest first)
  → `to_rgb` (LReLU, conv, tanh). The condition of every affine layer is `cat(noise, sentence)` (nz + cond_dim).
- `G_Block` = `fuse1` (DFBLK) → `c1` → `fuse2` → `c2`, plus the shortcut (1×1 `c_sc` when the width changes); no gamma.
- `DFBLK` = Affine → LReLU(0.2) → Affine → LReLU(0.2); `Affine`: x·γ(c) + β(c), γ/β = Linear(cond, C) → ReLU →
  Linear(C, C), `fc_gamma.linear2` starting at weight 0 / bias 1, `fc_beta.linear2` at 0 (identity start).
- `NetD(ndf, imsize, ch_size)`: `conv_img` then `DBlocks` down to 4×4 (the residual block of DF-GAN 2021 / SSA-GAN,
  `models.ssagan.resD`); `NetC(ndf, cond_dim)`: the sentence tiled 4×4, `joint_conv` → one logit.

DF-GAN 2021 (arXiv 2104.00567 v1–v3; tobran/DF-GAN at `9015356`, `code/model.py`), the classes suffixed `2021`:

- `NetG2021(ngf, nz, cond_dim, imsize)`: `fc` → 8ngf×4×4 → `block0..blockK` (block i at 4·2^i px; nearest ×2 before
  every block but the first) → `conv_img` (LReLU, conv, tanh). The channel plan is SSA-GAN's (which copied this
  generator and added masks), `models.ssagan.generator_channel_plan`: (8,8)×4, (8,4), (4,2), (2,1)·ngf at 256 px.
- `G_Block2021`: `shortcut(x) + gamma·[affine0 → LReLU → affine1 → LReLU → c1 → affine2 → LReLU → affine3 → LReLU →
  c2]`, `gamma` a learnable scalar starting at 0; the affines (`affine`) are conditioned on the sentence only (no
  noise) through MLPs with a fixed 256-wide hidden layer.
- `NetD2021`: SSA-GAN's `NetD` (with `resD` and `D_GET_LOGITS`), which is this code's.

Differences from the originals: `NetC` returns logits of shape [B] (the original [B, 1, 1, 1]; every loss takes a
mean, so values are equal); the 2021 sentence width is `cond_dim` (hard-coded 256 there) and its image size any
power of two ≥ 8 (hard-coded 256); at 256 px with cond_dim 256 every key and shape is the original's. Inputs are
checked and a wrong shape is an error naming the expected one.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.errors import InputError
from models.ssagan import NetD as NetD2021  # noqa: F401  (DF-GAN 2021's discriminator)
from models.ssagan import generator_channel_plan, resD

MIN_IMSIZE = 32  # below this NetD would end narrower than the 8·ndf NetC reads


def _layer_num(imsize: int, what: str) -> int:
    if not isinstance(imsize, int) or isinstance(imsize, bool) or imsize < MIN_IMSIZE or imsize & (imsize - 1):
        raise InputError(f"{what}: imsize must be a power of two >= {MIN_IMSIZE} (64, 128, 256, 512), got {imsize!r}")
    return imsize.bit_length() - 2  # int(np.log2(imsize)) - 1 of the original


def _channels(nf: int, imsize: int, what: str) -> list[int]:
    return [nf * min(2 ** i, 8) for i in range(_layer_num(imsize, what))]


def get_G_in_out_chs(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of NetG's GBlocks: nf·[8, 8, …, 8, 4, 2, 1] pairwise, one block per ×2 from 4 px.
    256 px: (8,8)(8,8)(8,8)(8,4)(4,2)(2,1)·nf."""
    chs = _channels(nf, imsize, "NetG")[::-1]
    return list(zip(chs[:-1], chs[1:]))


def get_D_in_out_chs(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of NetD's DBlocks: nf·[1, 2, 4, 8, 8, …] pairwise, one block per /2 down to 4 px.
    256 px: (1,2)(2,4)(4,8)(8,8)(8,8)(8,8)·nf."""
    chs = _channels(nf, imsize, "NetD")
    return list(zip(chs[:-1], chs[1:]))


def condition_mlp(cond_dim: int, hidden: int, out_ch: int) -> nn.Sequential:
    """Linear(cond_dim, hidden) → ReLU → Linear(hidden, out_ch), keys `linear1` / `linear2` as in the originals."""
    return nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(cond_dim, hidden)),
        ("relu1", nn.ReLU(inplace=True)),
        ("linear2", nn.Linear(hidden, out_ch)),
    ]))


class Affine(nn.Module):
    """Text-conditioned channel affine `γ(c) ⊙ x + β(c)` (no normalisation). `hidden` is the MLPs' width: the
    layer's own width in DF-GAN 2022 (default), a fixed 256 in DF-GAN 2021 (`affine`)."""

    def __init__(self, cond_dim: int, num_features: int, hidden: int | None = None):
        super().__init__()
        hidden = num_features if hidden is None else hidden
        self.fc_gamma = condition_mlp(cond_dim, hidden, num_features)
        self.fc_beta = condition_mlp(cond_dim, hidden, num_features)
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        weight = self.fc_gamma(cond)[:, :, None, None]
        bias = self.fc_beta(cond)[:, :, None, None]
        return weight * x + bias


class DFBLK(nn.Module):
    """Deep fusion block: Affine → LReLU(0.2) → Affine → LReLU(0.2)."""

    def __init__(self, cond_dim: int, in_ch: int):
        super().__init__()
        self.affine0 = Affine(cond_dim, in_ch)
        self.affine1 = Affine(cond_dim, in_ch)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.affine0(x, cond), 0.2)
        return F.leaky_relu(self.affine1(h, cond), 0.2)


class G_Block(nn.Module):
    """Upsample ×2 (nearest, when `upsample`), then `shortcut(x) + [fuse1 → c1 → fuse2 → c2](x)`."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBLK(cond_dim, in_ch)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        shortcut = self.c_sc(x) if self.learnable_sc else x
        h = self.c2(self.fuse2(self.c1(self.fuse1(x, cond)), cond))
        return shortcut + h


class NetG(nn.Module):
    """DF-GAN 2022 generator; `forward(noise [B, nz], sentence [B, cond_dim]) -> image [B, ch_size, imsize, imsize]`."""

    def __init__(self, ngf: int = 32, nz: int = 100, cond_dim: int = 256, imsize: int = 256, ch_size: int = 3):
        super().__init__()
        self.ngf, self.nz, self.cond_dim, self.imsize = ngf, nz, cond_dim, imsize
        plan = get_G_in_out_chs(ngf, imsize)
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        self.GBlocks = nn.ModuleList([G_Block(cond_dim + nz, cin, cout, upsample=True) for cin, cout in plan])
        self.to_rgb = nn.Sequential(
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(plan[-1][1], ch_size, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        check_inputs("NetG", noise, sentence, self.nz, self.cond_dim)
        out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        cond = torch.cat((noise, sentence), dim=1)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


def check_inputs(what: str, noise: torch.Tensor, sentence: torch.Tensor, nz: int, cond_dim: int) -> None:
    if noise.dim() != 2 or noise.size(1) != nz:
        raise ValueError(f"{what}: noise must be [B, {nz}] (GAN.Z_DIM), got {list(noise.shape)}")
    if sentence.dim() != 2 or tuple(sentence.shape) != (noise.size(0), cond_dim):
        raise ValueError(f"{what}: sentence must be [{noise.size(0)}, {cond_dim}] (batch, TEXT.EMBEDDING_DIM), "
                         f"got {list(sentence.shape)}")


class D_Block(resD):
    """DF-GAN 2022's name for the 2021 / SSA-GAN discriminator block (`models.ssagan.resD`, same keys and forward):
    `avgpool2(shortcut(x)) + gamma·[Conv4×4s2 → LReLU → Conv3×3 → LReLU](x)`, `conv_s` always created."""


class NetD(nn.Module):
    """DF-GAN 2022 discriminator trunk: images [B, ch_size, imsize, imsize] → features [B, 8·ndf, 4, 4]."""

    def __init__(self, ndf: int = 32, imsize: int = 256, ch_size: int = 3):
        super().__init__()
        self.imsize, self.ch_size = imsize, ch_size
        self.conv_img = nn.Conv2d(ch_size, ndf, 3, 1, 1)
        self.DBlocks = nn.ModuleList([D_Block(cin, cout) for cin, cout in get_D_in_out_chs(ndf, imsize)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.ch_size, self.imsize, self.imsize):
            raise ValueError(f"NetD: images must be [B, {self.ch_size}, {self.imsize}, {self.imsize}], "
                             f"got {list(x.shape)}")
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(nn.Module):
    """DF-GAN 2022 conditional head: `joint_conv(cat(features, sentence tiled 4×4))` → logits [B]."""

    def __init__(self, ndf: int = 32, cond_dim: int = 256):
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        if sentence.dim() != 2 or tuple(sentence.shape) != (features.size(0), self.cond_dim):
            raise ValueError(f"NetC: sentence must be [{features.size(0)}, {self.cond_dim}] (batch, cond_dim), "
                             f"got {list(sentence.shape)}")
        tiled = sentence[:, :, None, None].expand(-1, -1, features.size(2), features.size(3))
        return self.joint_conv(torch.cat((features, tiled), 1)).view(-1)


# ---- DF-GAN 2021 ----------------------------------------------------------------------------------------------------
AFFINE_HIDDEN_2021 = 256  # width of the 2021 condition MLPs' hidden layer, fixed in the original


class affine(Affine):
    """The 2021 affine layer: `Affine` with the fixed 256-wide hidden layer (`fc_gamma`/`fc_beta.linear1/2`)."""

    def __init__(self, num_features: int, cond_dim: int = 256):
        super().__init__(cond_dim, num_features, hidden=AFFINE_HIDDEN_2021)


class G_Block2021(nn.Module):
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


class NetG2021(nn.Module):
    """DF-GAN 2021 generator; `forward(noise [B, nz], sentence [B, cond_dim]) -> image [B, 3, imsize, imsize]`."""

    def __init__(self, ngf: int = 64, nz: int = 100, cond_dim: int = 256, imsize: int = 256):
        super().__init__()
        self.ngf, self.nz, self.cond_dim, self.imsize = ngf, nz, cond_dim, imsize
        plan = generator_channel_plan(ngf, imsize)
        self.num_blocks = len(plan)
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        for i, (cin, cout) in enumerate(plan):
            self.add_module(f"block{i}", G_Block2021(cin, cout, cond_dim))
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
