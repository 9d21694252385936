"""SSA-GAN (Liao et al., "Text to Image Generation with Semantic-Spatial Aware GAN", CVPR 2022): models and losses.

Module and parameter names follow the official code (wtliao/text2image `model.py`) so that its released `netG_*.pth`
(saved from DataParallel, every key prefixed with `module.`) loads strictly. Differences from the original:

* Channel plans are computed from `ngf`/`ndf` and `imsize` (the original hard-codes 256 px in seven copy-pasted
  stages); at 256 px the plan, the names and every shape equal the original's.
* The sentence dimension is `cond_dim` (the original hard-codes 256), so a BERT encoder can drive the model.
* `NetD.COND_DNET` returns logits of shape [B] (the original returns [B, 1, 1, 1]; every loss takes a mean, so the
  values are the same).
* Plain `nn.BatchNorm2d` replaces the vendored SyncBatchNorm; it has the same state-dict keys. Convert with
  `nn.SyncBatchNorm.convert_sync_batchnorm` for multi-GPU training.
* Ours, off by default (the original's keys unchanged): NetD's `word_layers` lets its head read a map of the words
  instead of the sentence code (`NetD.text_condition`); NetG's `word_grid` = g adds a g×g map of the words
  (`models.text_grid.WordGrid`, through a 1×1 conv `word_proj`) to the features at g×g (4: the stem, before the
  first mask); with `word_affine` every block's SSCBN reads the sentence code plus that map (through a zero-initialised
  1×1 conv `word_cond`) per place instead of the sentence code alone; with `grid_noise` the first g·g noise entries
  move the map's per-place queries (`word_grid.noise_query`), so the noise says where an object goes whose caption
  names no place; `mask_hidden` sets the mask predictors' hidden width (the original's 100). SSA-GAN reads the
  sentence code only, which cannot say which colour goes where in a two-object caption (README, "Why SSA-GAN,
  DF-GAN and GAN-INT-CLS as published fall short").
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.checkpoint import load_checkpoint, load_state_dict_strict
from miscc.errors import InputError
from models.text_grid import WordGrid

# Width of the hidden layer of the SSCBN condition MLPs (`affine.fc_gamma/fc_beta.linear1`), fixed in the original.
AFFINE_HIDDEN = 256
# Channels of the hidden layer of every mask predictor (`conv_mask.0`), fixed in the original (NetG's `mask_hidden`,
# SSA.MASK_HIDDEN, ours, makes it a choice: a third of NetG's convolution work at NF 16 and 32 px).
MASK_HIDDEN = 100


def _check_imsize(imsize: int, what: str) -> int:
    """Number of ×2 steps from the 4×4 stem to `imsize`; `imsize` must be a power of two ≥ 8."""
    if not isinstance(imsize, int) or imsize < 8 or imsize & (imsize - 1):
        raise InputError(f"{what}: imsize must be a power of two >= 8 (64, 128, 256, ...), got {imsize!r}")
    return int(math.log2(imsize // 4))


def generator_channel_plan(ngf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of `block0..blockK` of NetG; block i runs at 4·2^i px, K = log2(imsize/4).

    The plan is anchored at the output end, as in the original: the last block ends at `ngf`, the two before it at
    2·ngf and 4·ngf, and every earlier block keeps 8·ngf (the width of the `fc` stem). 256 px gives the original's
    (8,8)×4, (8,4), (4,2), (2,1)·ngf; 128 px drops one 8→8 block, 64 px two.
    """
    last = _check_imsize(imsize, "NetG")
    outs = [ngf * min(8, 2 ** (last - i)) for i in range(last + 1)]
    ins = [ngf * 8] + outs[:-1]
    return list(zip(ins, outs))


def discriminator_channel_plan(ndf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of `block0..blockN` of NetD; each block halves the resolution, down to 4×4.

    Anchored at the input end, as in the original: ndf doubles per block up to 16·ndf and then stays (256 px gives
    the original's 1→2→4→8→16→16→16 ·ndf).
    """
    n = _check_imsize(imsize, "NetD")
    chans = [ndf * min(16, 2 ** i) for i in range(n + 1)]
    return list(zip(chans[:-1], chans[1:]))


def _mask_predictor(in_ch: int, hidden: int = MASK_HIDDEN) -> nn.Sequential:
    """Conv3×3(C,hidden) → BN → ReLU → Conv1×1(hidden,1): mask logits (keys `.0`, `.1`, `.3` as in the original,
    whose hidden width is 100)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, hidden, 3, 1, 1),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
        nn.Conv2d(hidden, 1, 1, 1, 0),
    )


def _condition_mlp(cond_dim: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(cond_dim, AFFINE_HIDDEN)),
        ("relu1", nn.ReLU(inplace=True)),
        ("linear2", nn.Linear(AFFINE_HIDDEN, out_ch)),
    ]))


class affine(nn.Module):
    """Semantic-condition batch norm (SSCBN, paper Eq. 4): `(γ(s)·m + 1) ⊙ BN(x) + β(s)·m`.

    BN has no affine parameters; γ and β are MLPs of the sentence `s`, and the spatial mask `m` ∈ [0,1] gates the
    text-dependent deviation from plain BN. `linear2` of both MLPs is zero-initialised, so a fresh layer is plain BN.
    """

    def __init__(self, num_features: int, cond_dim: int = 256):
        super().__init__()
        self.batch_norm2d = nn.BatchNorm2d(num_features, affine=False)
        self.fc_gamma = _condition_mlp(cond_dim, num_features)
        self.fc_beta = _condition_mlp(cond_dim, num_features)
        for mlp in (self.fc_gamma, self.fc_beta):
            nn.init.zeros_(mlp.linear2.weight)
            nn.init.zeros_(mlp.linear2.bias)

    def forward(self, x: torch.Tensor, sent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`sent`: the sentence code [B, cond_dim], or a condition map [B, cond_dim, g, g] (NetG's `word_affine`,
        ours), whose γ and β are computed per place and resized (bilinear) to x's size."""
        if sent.dim() == 4:
            cond = sent.permute(0, 2, 3, 1)
            weight, bias = (F.interpolate(mlp(cond).permute(0, 3, 1, 2), size=x.shape[2:], mode="bilinear",
                                          align_corners=False) for mlp in (self.fc_gamma, self.fc_beta))
        else:
            weight = self.fc_gamma(sent)[:, :, None, None]
            bias = self.fc_beta(sent)[:, :, None, None]
        return (weight * mask + 1) * self.batch_norm2d(x) + bias * mask


class G_Block(nn.Module):
    """Semantic-spatial aware conv block (SSACN): `shortcut(x) + gamma·[SSCBN→ReLU→c1→SSCBN→ReLU→c2](x)`.

    `gamma` starts at 0 (the block starts as its shortcut). `c_sc` (1×1) exists only when the width changes. With
    `predict_mask`, `conv_mask` predicts the next stage's mask logits from this block's output.
    """

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int = 256, predict_mask: bool = True,
                 mask_hidden: int = MASK_HIDDEN):
        super().__init__()
        self.learnable_sc = in_ch != out_ch
        self.predict_mask = predict_mask
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.affine0 = affine(in_ch, cond_dim)
        self.affine2 = affine(out_ch, cond_dim)
        self.gamma = nn.Parameter(torch.zeros(1))
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)
        if predict_mask:
            self.conv_mask = _mask_predictor(out_ch, mask_hidden)

    def residual(self, x: torch.Tensor, sent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.relu(self.affine0(x, sent, mask)))
        return self.c2(F.relu(self.affine2(h, sent, mask)))

    def forward(self, x: torch.Tensor, sent: torch.Tensor, mask: torch.Tensor):
        """Returns `(features, next-stage mask logits or None)`."""
        shortcut = self.c_sc(x) if self.learnable_sc else x
        out = shortcut + self.gamma * self.residual(x, sent, mask)
        return out, (self.conv_mask(out) if self.predict_mask else None)


class NetG(nn.Module):
    """SSA-GAN generator: noise → `fc` → 8ngf×4×4 → `block0..blockK` (×2 per stage) → `conv_img` → tanh
    image.

    The NetG-level `conv_mask` predicts the first mask from the stem; each block but the last predicts the next
    stage's mask logits. Between stages features are upsampled nearest ×2 and mask logits bilinearly
    (`align_corners=True`) before the sigmoid, as in the original.
    """

    def __init__(self, ngf: int = 64, nz: int = 100, cond_dim: int = 256, imsize: int = 256, word_grid: int = 0,
                 word_layers: int = 1, word_affine: bool = False, grid_noise: bool = False,
                 mask_hidden: int = MASK_HIDDEN):
        super().__init__()
        if not isinstance(mask_hidden, int) or mask_hidden < 1:
            raise InputError(f"NetG's mask_hidden (SSA.MASK_HIDDEN) is the mask predictors' hidden width: a positive "
                             f"integer (the original's 100), got {mask_hidden!r}")
        plan = generator_channel_plan(ngf, imsize)
        sizes = [4 * 2 ** i for i in range(len(plan))]
        if word_grid and word_grid not in sizes:
            raise InputError(f"GAN.WORD_GRID must be one of NetG's block sizes {sizes} (or 0), got {word_grid}")
        self.ngf, self.nz, self.cond_dim, self.imsize = ngf, nz, cond_dim, imsize
        self.num_blocks = len(plan)
        # Registration order as in the original (conv_mask before fc), so parameter order, and with it any
        # optimiser state, lines up.
        self.conv_mask = _mask_predictor(ngf * 8, mask_hidden)
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        for i, (cin, cout) in enumerate(plan):
            self.add_module(f"block{i}", G_Block(cin, cout, cond_dim, predict_mask=i < len(plan) - 1,
                                                 mask_hidden=mask_hidden))
        self.conv_img = nn.Sequential(
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, 3, 3, 1, 1),
            nn.Tanh(),
        )
        if word_affine and not word_grid:
            raise InputError("NetG's word_affine (GAN.WORD_AFFINE) conditions the blocks on the word map: it needs "
                             "word_grid (GAN.WORD_GRID) > 0")
        if grid_noise and not word_grid:
            raise InputError("NetG's grid_noise (GAN.GRID_NOISE) moves the word map's queries by a noise map: it "
                             "needs word_grid (GAN.WORD_GRID) > 0")
        if grid_noise and nz < word_grid ** 2:
            raise InputError(f"GAN.GRID_NOISE lays out {word_grid}x{word_grid} noise entries: GAN.Z_DIM must be at "
                             f"least {word_grid ** 2}, got {nz}")
        self.word_level = sizes.index(word_grid) if word_grid else None
        self.word_affine, self.grid_noise = word_affine, grid_noise
        if word_grid:
            self.word_grid = WordGrid(cond_dim, word_layers, word_grid, noise=grid_noise)
            self.word_proj = nn.Conv2d(cond_dim, plan[self.word_level][0], 1)
        if word_affine:  # zero-initialised: a fresh G conditions every place on the sentence alone, as SSA-GAN
            self.word_cond = nn.Conv2d(cond_dim, cond_dim, 1)
            nn.init.zeros_(self.word_cond.weight)
            nn.init.zeros_(self.word_cond.bias)

    def blocks(self) -> list[G_Block]:
        return [getattr(self, f"block{i}") for i in range(self.num_blocks)]

    def forward(self, noise: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor | None = None,
                mask: torch.Tensor | None = None):
        """`noise` [B, nz], `sentence` [B, cond_dim] → (image [B,3,imsize,imsize] in [-1,1], masks).

        `masks` lists the sigmoid masks used by each block, [B,1,4,4] up to [B,1,imsize,imsize]. With `word_grid`
        the word features `words` [B, cond_dim, T] (and their padding `mask`, bool [B, T]) are needed too.
        """
        if noise.dim() != 2 or noise.size(1) != self.nz:
            raise ValueError(f"NetG: noise must be [B, {self.nz}] (nz), got {list(noise.shape)}")
        if sentence.dim() != 2 or sentence.shape != (noise.size(0), self.cond_dim):
            raise ValueError(f"NetG: sentence must be [{noise.size(0)}, {self.cond_dim}] (batch, cond_dim), "
                             f"got {list(sentence.shape)}")
        out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        if self.word_level is not None:
            if words is None or words.dim() != 3 or words.shape[:2] != (noise.size(0), self.cond_dim):
                raise ValueError(f"NetG with word_grid needs words [{noise.size(0)}, {self.cond_dim}, T], got "
                                 f"{None if words is None else list(words.shape)}")
            g = self.word_grid.size
            grid = self.word_grid(words.to(out.dtype), mask, noise[:, :g * g] if self.grid_noise else None)
            text_map = self.word_proj(grid)
            if self.word_level == 0:  # the stem: the first mask sees the words too
                out = out + text_map
            if self.word_affine:  # every block's γ and β read the text at each place
                sentence = sentence[:, :, None, None] + self.word_cond(grid)
        logits = self.conv_mask(out)
        masks = []
        for i, block in enumerate(self.blocks()):
            if i > 0:
                out = F.interpolate(out, scale_factor=2, mode="nearest")
                logits = F.interpolate(logits, size=out.shape[2:], mode="bilinear", align_corners=True)
            if i and i == self.word_level:
                out = out + text_map
            mask = torch.sigmoid(logits)
            masks.append(mask)
            out, logits = block(out, sentence, mask)
        return self.conv_img(out), masks


class resD(nn.Module):
    """Discriminator residual block: `avgpool2(shortcut(x)) + gamma·[Conv4×4s2→LReLU→Conv3×3→LReLU](x)`.

    `conv_s` (1×1) is created even when fin == fout, because the released state dicts contain it; it is applied only
    when the width changes, as in the original.
    """

    def __init__(self, fin: int, fout: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1, 1, 0)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(x) if self.learned_shortcut else x
        return F.avg_pool2d(shortcut, 2) + self.gamma * self.conv_r(x)


class D_GET_LOGITS(nn.Module):
    """Conditional logit: the sentence tiled to 4×4, concatenated with the 4×4 features, `joint_conv` → [B]. A text
    map [B, cond_dim, 4, 4] (`NetD.text_condition` with `word_layers`, ours) is concatenated as it is instead."""

    def __init__(self, ndf: int, in_ch: int, cond_dim: int = 256):
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(in_ch + cond_dim, ndf * 2, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        b, h, w = features.size(0), features.size(2), features.size(3)
        if sentence.shape not in ((b, self.cond_dim), (b, self.cond_dim, h, w)):
            raise ValueError(f"COND_DNET: sentence must be [{b}, {self.cond_dim}] (batch, cond_dim) or a text map "
                             f"[{b}, {self.cond_dim}, {h}, {w}], got {list(sentence.shape)}")
        text = sentence if sentence.dim() == 4 else sentence[:, :, None, None].expand(-1, -1, h, w)
        return self.joint_conv(torch.cat((features, text), 1)).view(-1)


class NetD(nn.Module):
    """SSA-GAN / DF-GAN discriminator: `conv_img` then `resD` blocks down to 4×4; `COND_DNET` gives the logit.

    Ours, off by default: with `word_layers` > 0 (GAN.D_WORD_CONTEXT_LAYERS) the conditional head reads a 4×4 map of
    the words (`word_grid`, `models.text_grid.WordGrid`) instead of the tiled sentence code, so D can tell "a red
    circle on the left and a blue square on the right" from its swap; `text_condition` makes what COND_DNET reads.
    """

    def __init__(self, ndf: int = 64, cond_dim: int = 256, imsize: int = 256, word_layers: int = 0):
        super().__init__()
        plan = discriminator_channel_plan(ndf, imsize)
        self.imsize = imsize
        self.conv_img = nn.Conv2d(3, ndf, 3, 1, 1)
        for i, (cin, cout) in enumerate(plan):
            self.add_module(f"block{i}", resD(cin, cout))
        self.num_blocks = len(plan)
        self.COND_DNET = D_GET_LOGITS(ndf, plan[-1][1], cond_dim)
        self.word_grid = WordGrid(cond_dim, word_layers, 4) if word_layers else None

    def text_condition(self, sentence: torch.Tensor, words: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
        """What COND_DNET reads of the captions: the sentence code [B, cond_dim], or with `word_layers` the word map
        [B, cond_dim, 4, 4] of `words` [B, cond_dim, T] (padding `mask`), made with D's own parameters."""
        if self.word_grid is None:
            return sentence
        if words is None:
            raise ValueError("NetD with word_layers reads the words: text_condition needs words [B, cond_dim, T]")
        return self.word_grid(words.to(sentence.dtype), mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B,3,imsize,imsize] → features [B, C, 4, 4] (C = 16·ndf at 64 px and above)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.imsize, self.imsize):
            raise ValueError(f"NetD: images must be [B, 3, {self.imsize}, {self.imsize}], got {list(x.shape)}")
        out = self.conv_img(x)
        for i in range(self.num_blocks):
            out = getattr(self, f"block{i}")(out)
        return out


def load_ssagan_generator(model: NetG, path: str) -> NetG:
    """Load a released or trained `netG_*.pth` into `model` strictly (a DataParallel `module.` prefix is removed)."""
    state = load_checkpoint(path, "SSA-GAN generator")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a NetG state dict (parameter name -> tensor), got {type(state).__name__}")
    load_state_dict_strict(model, state, source=path)
    return model
