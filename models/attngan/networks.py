"""AttnGAN and BERT-AttnGAN generators and discriminators, with the adversarial losses that need no DAMSM.

Names, module order and state_dict keys follow `taoxugit/AttnGAN` `code/model.py` and `GlobalAttention.py`, so the
released torch-0.3 checkpoints (`bird_AttnGAN2.pth`, `coco_AttnGAN2.pth`, `netD%d.pth`) load with `strict=True`
(current BatchNorm fills in the missing `num_batches_tracked` itself). BERT-AttnGAN (`HeAinorrt/BERT-AttnGAN-hes`)
adds word attention at the end of stage 1 (`init_attention=True`) and bilinear upsampling (`upsample_mode`).

Every constructor takes explicit sizes; `models.attngan.build` makes them from a config tree. Stages and
discriminator trunks are built in loops from the channel plan, under the
original attribute names (`h_net2`, `img_code_s64_1`, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.errors import InputError
from miscc.modules import float_softmax
from models.text_grid import WordContext, WordGrid, attendable as _attendable, repeat_batch  # noqa: F401  (shared)

UPSAMPLE_MODES = ("nearest", "bilinear")


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half) (AttnGAN's `GLU`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nc = x.size(1)
        if nc % 2:
            raise ValueError(f"GLU needs an even number of channels, got {nc} (input shape {tuple(x.shape)})")
        return F.glu(x, dim=1)  # x[:, :nc/2] * sigmoid(x[:, nc/2:]) in one op


def conv1x1(in_planes: int, out_planes: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=bias)


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def _check_upsample_mode(mode: str) -> None:
    if mode not in UPSAMPLE_MODES:
        raise InputError(f"upsample_mode must be one of {UPSAMPLE_MODES}, got {mode!r}")


# one axis of "nearest ×2 upsampling, then a 3-tap convolution (padding 1)" as a stride-2 transposed convolution with
# 4 taps: output 2m reads x[m-1]·w0 + x[m]·(w1 + w2), output 2m+1 reads x[m]·(w0 + w1) + x[m+1]·w2
_NEAREST_UP_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
# inputs at least this wide take the transposed convolution (for 1-px inputs the plain path measured faster)
SUBPIXEL_MIN_SIZE = 2


class UpBlock(nn.Sequential):
    """×2 upsampling, conv3x3 to 2·out, BN, GLU (AttnGAN's `upBlock`); keys `1.weight`, `2.*`.

    AttnGAN upsamples with 'nearest'; BERT-AttnGAN with 'bilinear' and align_corners=True. Nearest upsampling
    followed by the 3×3 convolution is computed (ours) as one stride-2 transposed convolution whose 4×4 kernel is
    derived from the 3×3 weights at each call: the same map (equal to rounding), 16 instead of 36 multiply-adds per
    input pixel and channel pair, and no upsampled intermediate (PyTorch's CPU nearest upsampling of NCHW tensors is
    slow). The weights, their keys and what a checkpoint holds are AttnGAN's.
    """

    def __init__(self, in_planes: int, out_planes: int, mode: str = "nearest"):
        _check_upsample_mode(mode)
        up = (nn.Upsample(scale_factor=2, mode="nearest") if mode == "nearest"
              else nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True))
        super().__init__(up, conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), GLU())
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, conv, bn, glu = self
        if self.mode == "nearest" and min(x.shape[-2:]) >= SUBPIXEL_MIN_SIZE:
            taps = _NEAREST_UP_TAPS.to(conv.weight)
            kernel = torch.einsum("ka,oiab,lb->iokl", taps, conv.weight, taps)  # [in, out, 4, 4]
            x = F.conv_transpose2d(x, kernel, stride=2, padding=1)
        else:
            x = conv(up(x))
        return glu(bn(x))


def upBlock(in_planes: int, out_planes: int, mode: str = "nearest") -> UpBlock:
    """AttnGAN's name for `UpBlock`."""
    return UpBlock(in_planes, out_planes, mode)


class ResBlock(nn.Module):
    """x + [conv3x3(c, 2c), BN, GLU, conv3x3(c, c), BN](x); keys `block.{0,1,3,4}.*`."""

    def __init__(self, channel_num: int):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2), nn.BatchNorm2d(channel_num * 2), GLU(),
            conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


def Block3x3_leakRelu(in_planes: int, out_planes: int) -> nn.Sequential:
    """conv3x3, BN, LeakyReLU(0.2): keeps the spatial size."""
    return nn.Sequential(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True))


def downBlock(in_planes: int, out_planes: int) -> nn.Sequential:
    """conv4x4 stride 2 (no bias), BN, LeakyReLU(0.2): halves the spatial size."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False), nn.BatchNorm2d(out_planes),
                         nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times(ndf: int, n_stride1: int = 0) -> nn.Sequential:
    """3 → ndf → 2ndf → 4ndf → 8ndf with four stride-2 convs; BN on all but the first (keys 0, 2, 3, 5, 6, 8, 9).

    With `n_stride1` (ours; 0 = AttnGAN) the last that many convs are 3×3 stride-1 instead of 4×4 stride-2: 1
    downsamples by 8, for 32-pixel images, 2 by 4, for 16-pixel ones."""
    if not 0 <= n_stride1 <= 2:
        raise ValueError(f"n_stride1 must be 0, 1 or 2, got {n_stride1}")
    layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for i in range(3):
        cin, cout = ndf * 2 ** i, ndf * 2 ** (i + 1)
        conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=False) if i < 3 - n_stride1 else \
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        layers += [conv, nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------------
# Conditioning augmentation and word attention
# ----------------------------------------------------------------------------------------------------------------
class CA_NET(nn.Module):
    """Conditioning augmentation (StackGAN): fc → GLU → (mu, logvar); c = mu + eps·exp(logvar / 2).

    As in the original, c is sampled in eval mode too (the released samples are drawn that way). `eps` (ours) gives
    the standard normal draw instead of sampling it (TRAIN.PAIRED_CANDIDATES re-renders a chosen candidate).
    """

    def __init__(self, t_dim: int, c_dim: int):
        super().__init__()
        self.t_dim, self.c_dim = t_dim, c_dim
        self.fc = nn.Linear(t_dim, c_dim * 4, bias=True)
        self.glu = GLU()

    def encode(self, text_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if text_embedding.dim() != 2 or text_embedding.size(1) != self.t_dim:
            raise ValueError(f"CA_NET expects a sentence embedding [B, {self.t_dim}], "
                             f"got {tuple(text_embedding.shape)}")
        x = self.glu(self.fc(text_embedding))
        return x[:, :self.c_dim], x[:, self.c_dim:]

    def forward(self, text_embedding: torch.Tensor, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(text_embedding)
        if eps is None:
            eps = torch.randn_like(mu)
        elif eps.shape != mu.shape:
            raise ValueError(f"CA_NET eps must be {tuple(mu.shape)}, got {tuple(eps.shape)}")
        c_code = mu + eps * torch.exp(0.5 * logvar)
        return c_code, mu, logvar


class GlobalAttentionGeneral(nn.Module):
    """Word-context attention of the generator (AttnGAN Eq. 2): each pixel attends over the words.

    `forward(input [B, idf, H, W], context [B, cdf, T], mask bool [B, T] or None, True at padding)` returns the
    word-context feature [B, idf, H, W] and the attention [B, T, H, W] (softmax over words per pixel).

    Bug fixes against the originals:
    - AttnGAN expands the mask with `mask.repeat(queryL, 1)`, which applies mask row `r mod B` to attention row
      `b·HW + q`, so for B > 1 pixels of one sample are masked by other samples' padding (taoxugit/AttnGAN#93).
      Here every sample is masked by its own padding.
    - BERT-AttnGAN's non-in-place `masked_fill` dropped the mask altogether; here it is applied.
    - A sample whose words are all padding would give NaN (softmax over -inf only); it gets zero attention and a zero
      context instead.
    The softmax runs in float32 (`float_softmax`: under CPU bf16 autocast it is several times faster).
    """

    def __init__(self, idf: int, cdf: int):
        super().__init__()
        self.idf, self.cdf = idf, cdf
        self.conv_context = conv1x1(cdf, idf)

    def forward(self, input: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, _, ih, iw = input.shape
        if input.size(1) != self.idf:
            raise ValueError(f"attention query must have {self.idf} channels, got {tuple(input.shape)}")
        if context.dim() != 3 or context.size(0) != batch_size or context.size(1) != self.cdf:
            raise ValueError(f"word features must be [B={batch_size}, {self.cdf}, T], got {tuple(context.shape)}")
        source_len = context.size(2)
        target_t = input.reshape(batch_size, self.idf, ih * iw).transpose(1, 2)  # B x HW x idf
        source = self.conv_context(context.unsqueeze(3)).squeeze(3)  # B x idf x T
        attn = torch.bmm(target_t, source)  # B x HW x T
        if mask is not None:
            if mask.dtype != torch.bool:
                raise TypeError(f"word mask must be a bool tensor (True at padding), got dtype {mask.dtype}")
            if tuple(mask.shape) != (batch_size, source_len):
                raise ValueError(f"word mask must be [B, T] = [{batch_size}, {source_len}] to match the word "
                                 f"features, got {tuple(mask.shape)}; cut it to words_embs.size(2)")
            all_padding = mask.all(dim=1, keepdim=True)  # B x 1
            attn = attn.masked_fill((mask & ~all_padding).unsqueeze(1), float("-inf"))
            attn = float_softmax(attn, 2) * (~all_padding).unsqueeze(2)
        else:
            attn = float_softmax(attn, 2)
        attn = attn.to(source.dtype).transpose(1, 2)  # B x T x HW
        weighted = torch.bmm(source, attn)  # B x idf x HW
        return weighted.reshape(batch_size, self.idf, ih, iw), attn.reshape(batch_size, source_len, ih, iw)


class GridWordAttention(nn.Module):
    """Multi-head word attention for stage 1's grid (ours, GAN.GRID_HEADS): scaled dot-product attention with
    separate query, key and value projections (`nn.MultiheadAttention`), where AttnGAN's `GlobalAttentionGeneral`
    uses one projection of the words as both key and value, one head and unscaled logits. A place then matches the
    word naming it with one part of the word's feature and reads what the word carries ("red circle", put there by
    the word-context layer) from another.

    `forward(input [B, idf, H, W], context [B, cdf, T], mask bool [B, T] or None, True at padding)` returns the
    context [B, idf, H, W] and the attention averaged over heads [B, T, H, W], as `GlobalAttentionGeneral`.
    """

    def __init__(self, idf: int, cdf: int, heads: int):
        super().__init__()
        if heads < 1 or idf % heads:
            raise InputError(f"GAN.GRID_HEADS must divide stage 1's channels at the grid ({idf}), got {heads}")
        self.idf, self.cdf = idf, cdf
        self.mha = nn.MultiheadAttention(idf, heads, kdim=cdf, vdim=cdf, batch_first=True)

    def forward(self, input: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = input.shape
        if context.dim() != 3 or context.size(0) != b or context.size(1) != self.cdf:
            raise ValueError(f"word features must be [B={b}, {self.cdf}, T], got {tuple(context.shape)}")
        query = input.flatten(2).transpose(1, 2)  # B x HW x idf
        words = context.transpose(1, 2).to(query.dtype)  # B x T x cdf
        out, att = self._attend(query, words, _attendable(mask))
        return out.transpose(1, 2).reshape(b, self.idf, h, w), att.transpose(1, 2).reshape(b, -1, h, w)

    def _attend(self, query, words, padding):
        """`nn.MultiheadAttention(query, words, words, key_padding_mask=padding)`'s maths with its weights, the
        weights averaged over heads returned as well, and the softmax in float32 (`float_softmax`): PyTorch's own
        path there runs it in bf16 under CPU autocast, 4x slower ([1280, 16, 30] in the IMLE previews)."""
        mha = self.mha
        e, heads = mha.embed_dim, mha.num_heads
        weights = (mha.in_proj_weight.chunk(3) if mha._qkv_same_embed_dim
                   else (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight))
        biases = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
        q, k, v = (F.linear(x, w, bias) for x, w, bias in zip((query, words, words), weights, biases))
        b, n_q = q.size(0), q.size(1)
        q, k, v = (t.reshape(b, t.size(1), heads, e // heads).transpose(1, 2) for t in (q, k, v))
        logits = (q * (e // heads) ** -0.5) @ k.transpose(2, 3)  # B x heads x HW x T
        if padding is not None:
            logits = logits.masked_fill(padding[:, None, None, :], float("-inf"))
        att = float_softmax(logits, 3)
        out = (att.to(v.dtype) @ v).transpose(1, 2).reshape(b, n_q, e)
        return mha.out_proj(out), att.mean(1)


# ----------------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------------
def _residual_stack(channels: int, r_num: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels) for _ in range(r_num)])


class INIT_STAGE_G(nn.Module):
    """Stage 1: cat(c_code, z) → fc → (ngf, 4, 4) → four upBlocks → (ngf/16, 64, 64).

    `base_size` 32 or 16 (ours, for small CPU configurations) starts the same four upBlocks from 2×2 or 1×1; only
    the `fc` shape differs from AttnGAN's 64-pixel layout.

    With `init_attention` (BERT-AttnGAN) the 64² features then attend over the words, are concatenated with the
    word context, go through `r_num` ResBlocks, are upsampled to 128² and average-pooled back to 64². BERT-AttnGAN
    hard-codes 32 channels there (GF_DIM 32 only); here they are ngf/16 for any GF_DIM.

    With `grid_attention` = g (ours, GAN.GRID_ATTENTION; 0 = off as in the originals) the features at g×g attend
    over the words with queries that add a learned per-position embedding (`grid_pos`), and the word context is added
    to them. Stage 1 otherwise sees the sentence only, so "a red circle at the top and a blue square at the bottom"
    reaches it as one vector in which colours and places are not bound to each other; a query that knows where it is
    can pick the words naming its place.

    With `grid_noise` as well (ours, GAN.GRID_NOISE) the first g·g entries of the noise, laid out as a g×g map, are
    added there through a learned 1×1 conv (`grid_noise`) before the queries are formed: a place the caption leaves
    open ("a red circle") needs a draw that says where, and a map of independent draws gives every place its own.
    With `grid_heads` (ours, GAN.GRID_HEADS) that attention is `GridWordAttention` (several heads, separate
    projections) instead of AttnGAN's. With `grid_place` (ours, GAN.GRID_PLACE_FEATURES) the per-position embedding
    (then `grid_place`) is added to the features themselves, which form the queries: the layers after the grid
    know where they are too. Stage 1 starts from a 1x1 code here (BASE_SIZE 16), so its features carry no place
    but what zero padding leaves; on `shapes` G drew no object for its first ~800 steps without it.

    `forward(z_code, c_code, word_embs=None, mask=None) -> (h [B, ngf/16, 64, 64], attention [B, T, 64, 64] or None)`.
    """

    def __init__(self, ngf: int, ncf: int, z_dim: int, nef: int | None = None, r_num: int = 0,
                 init_attention: bool = False, upsample_mode: str = "nearest", base_size: int = 64,
                 grid_attention: int = 0, grid_noise: bool = False, grid_heads: int = 0, grid_place: bool = False):
        super().__init__()
        if base_size not in (16, 32, 64):
            raise InputError(f"TREE.BASE_SIZE must be 64 (AttnGAN), 32 or 16, got {base_size}")
        if ngf % 16:
            raise InputError(f"INIT_STAGE_G needs ngf divisible by 16 (ngf = 16·GF_DIM), got {ngf}")
        if (init_attention or grid_attention) and nef is None:
            raise ValueError("INIT_STAGE_G with word attention needs nef (the word feature size)")
        self.gf_dim, self.in_dim = ngf, ncf + z_dim
        self.c_dim, self.z_dim = ncf, z_dim
        self.init_attention = init_attention
        self.start = base_size // 16
        self.fc = nn.Sequential(nn.Linear(self.in_dim, ngf * self.start ** 2 * 2, bias=False),
                                nn.BatchNorm1d(ngf * self.start ** 2 * 2), GLU())
        for i in range(1, 5):
            self.add_module(f"upsample{i}", upBlock(ngf // 2 ** (i - 1), ngf // 2 ** i, upsample_mode))
        sizes = [self.start * 2 ** i for i in range(5)]  # after the fc, then after each upBlock
        self.grid_level, self.place_in_features = None, grid_place
        if grid_attention:
            if grid_attention not in sizes:
                raise InputError(f"GAN.GRID_ATTENTION must be one of stage 1's sizes {sizes} (or 0), "
                                 f"got {grid_attention}")
            self.grid_level = sizes.index(grid_attention)
            ch = ngf // 2 ** self.grid_level
            self.grid_att = GridWordAttention(ch, nef, grid_heads) if grid_heads else GlobalAttentionGeneral(ch, nef)
            embedding = nn.Parameter(torch.randn(1, ch, grid_attention, grid_attention))
            if grid_place:  # the same learned embedding, added to the features (which then form the queries)
                self.grid_place = embedding
            else:
                self.grid_pos = embedding
        if grid_place and not grid_attention:
            raise InputError("GAN.GRID_PLACE_FEATURES needs GAN.GRID_ATTENTION: it moves that attention's per-place "
                             "embedding into stage 1's features")
        if grid_heads and not grid_attention:
            raise InputError("GAN.GRID_HEADS needs GAN.GRID_ATTENTION: it sets that attention's heads")
        self.grid_size = grid_attention if grid_noise else 0
        if grid_noise:
            if not grid_attention:
                raise InputError("GAN.GRID_NOISE needs GAN.GRID_ATTENTION: the noise map joins its queries")
            if z_dim < grid_attention ** 2:
                raise InputError(f"GAN.GRID_NOISE lays out {grid_attention}x{grid_attention} noise entries: "
                                 f"GAN.Z_DIM must be at least {grid_attention ** 2}, got {z_dim}")
            self.grid_noise = nn.Conv2d(1, ch, kernel_size=1)
        if init_attention:
            out_ch = ngf // 16
            self.att = GlobalAttentionGeneral(out_ch, nef)
            self.residual = _residual_stack(out_ch * 2, r_num)
            self.upsample = upBlock(out_ch * 2, out_ch, upsample_mode)
            self.avgpooling = nn.AvgPool2d(2, stride=2)

    def forward(self, z_code: torch.Tensor, c_code: torch.Tensor, word_embs: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if z_code.dim() != 2 or z_code.size(1) != self.z_dim:
            raise ValueError(f"noise must be [B, Z_DIM={self.z_dim}], got {tuple(z_code.shape)}")
        out = self.fc(torch.cat((c_code, z_code), 1)).view(-1, self.gf_dim, self.start, self.start)
        for i in range(5):
            if i:
                out = getattr(self, f"upsample{i}")(out)
            if i == self.grid_level:
                if word_embs is None:
                    raise ValueError("INIT_STAGE_G with grid_attention needs word_embs")
                if self.grid_size:
                    g = self.grid_size
                    out = out + self.grid_noise(z_code[:, :g * g].reshape(-1, 1, g, g).to(out.dtype))
                if self.place_in_features:
                    out = out + self.grid_place
                    out = out + self.grid_att(out, word_embs, mask)[0]
                else:
                    out = out + self.grid_att(out + self.grid_pos, word_embs, mask)[0]
        if not self.init_attention:
            return out, None
        if word_embs is None:
            raise ValueError("INIT_STAGE_G with init_attention needs word_embs")
        context, att = self.att(out, word_embs, mask)
        out = self.upsample(self.residual(torch.cat((out, context), 1)))
        return self.avgpooling(out), att


class NEXT_STAGE_G(nn.Module):
    """Refinement stage: word attention, cat[h, context], `r_num` ResBlock(2ngf), upBlock(2ngf → ngf) (×2 size).

    The original also took the sentence code `c_code` and `ncf`, both unused; they are dropped here.
    With `pos_size` = H (ours, GAN.POSITION_QUERIES) a learned per-position embedding `pos` [1, ngf, H, H] is added
    to the attention queries, so an empty place can still ask for the words that name it.
    `forward(h_code, word_embs, mask) -> (h [B, ngf, 2H, 2W], attention [B, T, H, W])`.
    """

    def __init__(self, ngf: int, nef: int, r_num: int, upsample_mode: str = "nearest", pos_size: int = 0):
        super().__init__()
        self.gf_dim, self.ef_dim = ngf, nef
        self.att = GlobalAttentionGeneral(ngf, nef)
        self.residual = _residual_stack(ngf * 2, r_num)
        self.upsample = upBlock(ngf * 2, ngf, upsample_mode)
        self.pos = nn.Parameter(torch.randn(1, ngf, pos_size, pos_size)) if pos_size else None

    def forward(self, h_code: torch.Tensor, word_embs: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos is not None and self.pos.shape[2:] != h_code.shape[2:]:
            raise ValueError(f"position queries are {tuple(self.pos.shape[2:])}, features {tuple(h_code.shape[2:])}")
        context, att = self.att(h_code if self.pos is None else h_code + self.pos, word_embs, mask)
        return self.upsample(self.residual(torch.cat((h_code, context), 1))), att


class GET_IMAGE_G(nn.Module):
    """conv3x3(ngf → 3) + Tanh: an RGB image in [-1, 1]; key `img.0.weight`."""

    def __init__(self, ngf: int):
        super().__init__()
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code: torch.Tensor) -> torch.Tensor:
        return self.img(h_code)


class _AttnGANGenerator(nn.Module):
    """Shared body of G_NET and G_DCGAN: `ca_net`, `h_net1` (INIT_STAGE_G), `h_net2..N` (NEXT_STAGE_G)."""

    def __init__(self, gf_dim: int, ef_dim: int, condition_dim: int, z_dim: int, branch_num: int, r_num: int,
                 init_attention: bool, upsample_mode: str, image_heads: bool, base_size: int = 64,
                 grid_attention: int = 0, position_queries: bool = False, word_context_layers: int = 0,
                 grid_noise: bool = False, grid_heads: int = 0, grid_place: bool = False):
        super().__init__()
        if branch_num < 1:
            raise InputError(f"TREE.BRANCH_NUM must be at least 1, got {branch_num}")
        if r_num < 0:
            raise InputError(f"GAN.R_NUM must be >= 0, got {r_num}")
        _check_upsample_mode(upsample_mode)
        self.gf_dim, self.ef_dim, self.z_dim, self.branch_num = gf_dim, ef_dim, z_dim, branch_num
        self.ca_net = CA_NET(ef_dim, condition_dim)
        self.word_context = WordContext(ef_dim, word_context_layers) if word_context_layers else None
        for i in range(1, branch_num + 1):
            if i == 1:
                stage = INIT_STAGE_G(gf_dim * 16, condition_dim, z_dim, ef_dim, r_num, init_attention, upsample_mode,
                                     base_size, grid_attention, grid_noise, grid_heads, grid_place)
            else:
                stage = NEXT_STAGE_G(gf_dim, ef_dim, r_num, upsample_mode,
                                     base_size * 2 ** (i - 2) if position_queries else 0)
            self.add_module(f"h_net{i}", stage)
            if image_heads:
                self.add_module(f"img_net{i}", GET_IMAGE_G(gf_dim))

    def _check_text(self, sent_emb: torch.Tensor, word_embs: torch.Tensor) -> None:
        if word_embs.dim() != 3 or word_embs.size(1) != self.ef_dim:
            raise ValueError(f"word features must be [B, {self.ef_dim}, T], got {tuple(word_embs.shape)}")
        if word_embs.size(0) != sent_emb.size(0):
            raise ValueError(f"batch sizes differ: sentence {tuple(sent_emb.shape)}, words {tuple(word_embs.shape)}")

    @torch.no_grad()
    def preview(self, z_code, sent_emb, word_embs, mask=None, ca_eps=None, candidates: int = 1) -> torch.Tensor:
        """The first image the noise decides, cheaply: G_NET's stage-1 image (a fifth of a 2-stage forward on
        `shapes`), G_DCGAN's only image. What TRAIN.PAIRED_CANDIDATES compares against the real image.
        With `candidates` = k the text is given once per caption ([B, ...]) and the noise (and `ca_eps`) k times
        ([k·B, ...], candidate-major): the words pass GAN.WORD_CONTEXT_LAYERS once, not k times."""
        self._check_text(sent_emb, word_embs)
        if self.word_context is not None:
            word_embs = self.word_context(word_embs, mask)
        sent_emb, word_embs, mask = (repeat_batch(t, candidates) for t in (sent_emb, word_embs, mask))
        c_code = self.ca_net(sent_emb, ca_eps)[0]
        i, h, _ = next(self._stages(z_code, c_code, word_embs, mask, in_context=True))
        return getattr(self, f"img_net{i}")(h)

    def _stages(self, z_code, c_code, word_embs, mask, in_context: bool = False, full_rows: int | None = None,
                short_stages: int = 0):
        """Yield (stage index, hidden code, attention map or None) for each branch (`in_context`: the words have
        passed `word_context` already; with `full_rows` = n, the rows after the first n stop after `short_stages`
        stages)."""
        if self.word_context is not None and not in_context:
            word_embs = self.word_context(word_embs, mask)
        h, att = self.h_net1(z_code, c_code, word_embs, mask)
        yield 1, h, att
        for i in range(2, self.branch_num + 1):
            if full_rows is not None and i - 1 == short_stages:
                h, word_embs = h[:full_rows], word_embs[:full_rows]
                mask = None if mask is None else mask[:full_rows]
            h, att = getattr(self, f"h_net{i}")(h, word_embs, mask)
            yield i, h, att


class G_NET(_AttnGANGenerator):
    """AttnGAN generator: one image per branch, 64·2^i pixels.

    `forward(z_code [B, Z], sent_emb [B, E], word_embs [B, E, T], mask bool [B, T] True at padding, ca_eps [B, C]
    or None: the conditioning augmentation's normal draw) -> (fake_imgs list, att_maps list, mu, logvar)`; att_maps
    has one map per attention (BERT-AttnGAN: stage 1 too). With `full_rows` = n (ours, TRAIN.ANCHOR_STAGES) the rows
    after the first n stop after `short_stages` stages: the later images (and maps) hold the first n rows only.
    """

    def __init__(self, gf_dim: int, ef_dim: int, condition_dim: int, z_dim: int, branch_num: int = 3,
                 r_num: int = 2, init_attention: bool = False, upsample_mode: str = "nearest", base_size: int = 64,
                 grid_attention: int = 0, position_queries: bool = False, word_context_layers: int = 0,
                 grid_noise: bool = False, grid_heads: int = 0, grid_place: bool = False):
        super().__init__(gf_dim, ef_dim, condition_dim, z_dim, branch_num, r_num, init_attention, upsample_mode,
                         image_heads=True, base_size=base_size, grid_attention=grid_attention,
                         position_queries=position_queries, word_context_layers=word_context_layers,
                         grid_noise=grid_noise, grid_heads=grid_heads, grid_place=grid_place)

    def forward(self, z_code: torch.Tensor, sent_emb: torch.Tensor, word_embs: torch.Tensor,
                mask: torch.Tensor | None = None, ca_eps: torch.Tensor | None = None, full_rows: int | None = None,
                short_stages: int = 0):
        self._check_text(sent_emb, word_embs)
        c_code, mu, logvar = self.ca_net(sent_emb, ca_eps)
        fake_imgs, att_maps = [], []
        for i, h, att in self._stages(z_code, c_code, word_embs, mask, full_rows=full_rows, short_stages=short_stages):
            fake_imgs.append(getattr(self, f"img_net{i}")(h))
            if att is not None:
                att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar


class G_DCGAN(_AttnGANGenerator):
    """AttnGAN's single-output variant (`B_DCGAN`): the same stages, one `img_net` after the last; returns
    ([image], att_maps, mu, logvar)."""

    def __init__(self, gf_dim: int, ef_dim: int, condition_dim: int, z_dim: int, branch_num: int = 3,
                 r_num: int = 0, init_attention: bool = False, upsample_mode: str = "nearest", base_size: int = 64,
                 grid_attention: int = 0, position_queries: bool = False, word_context_layers: int = 0,
                 grid_noise: bool = False, grid_heads: int = 0, grid_place: bool = False):
        super().__init__(gf_dim, ef_dim, condition_dim, z_dim, branch_num, r_num, init_attention, upsample_mode,
                         image_heads=False, base_size=base_size, grid_attention=grid_attention,
                         position_queries=position_queries, word_context_layers=word_context_layers,
                         grid_noise=grid_noise, grid_heads=grid_heads, grid_place=grid_place)
        self.img_net = GET_IMAGE_G(gf_dim)

    def forward(self, z_code: torch.Tensor, sent_emb: torch.Tensor, word_embs: torch.Tensor,
                mask: torch.Tensor | None = None, ca_eps: torch.Tensor | None = None):
        self._check_text(sent_emb, word_embs)
        c_code, mu, logvar = self.ca_net(sent_emb, ca_eps)
        att_maps = []
        for _, h, att in self._stages(z_code, c_code, word_embs, mask):
            if att is not None:
                att_maps.append(att)
        return [self.img_net(h)], att_maps, mu, logvar

    @torch.no_grad()
    def preview(self, z_code, sent_emb, word_embs, mask=None, ca_eps=None, candidates: int = 1) -> torch.Tensor:
        sent_emb, word_embs, mask = (repeat_batch(t, candidates) for t in (sent_emb, word_embs, mask))
        return self(z_code, sent_emb, word_embs, mask, ca_eps)[0][-1]


# ----------------------------------------------------------------------------------------------------------------
# Discriminators
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextCondition:
    """What a conditional D head reads of the captions: the sentence code and, for GAN.D_WORD_CONTEXT_LAYERS, the
    word features and their padding mask. `cond[a:b]` slices all three (the mismatched pair shifts the batch)."""
    sent: torch.Tensor
    words: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __getitem__(self, index) -> "TextCondition":
        return TextCondition(self.sent[index], None if self.words is None else self.words[index],
                             None if self.mask is None else self.mask[index])


class D_GET_LOGITS(nn.Module):
    """Discriminator head on 8ndf×4×4 features; conditional heads first fuse the sentence (`jointConv`).

    `forward(h_code, c_code=None, logits=False)` returns [B] probabilities as the original (Sigmoid at
    `outlogits.1`), or raw logits with `logits=True` for `binary_cross_entropy_with_logits`, which is autocast-safe
    where BCE on probabilities is not. `c_code` is the sentence code [B, E] or a `TextCondition`.
    With `word_layers` > 0 (ours, GAN.D_WORD_CONTEXT_LAYERS) a `WordGrid` map of the words is added to the
    replicated sentence code before `jointConv` (same shapes, so the AttnGAN keys stay as they are).
    """

    def __init__(self, ndf: int, nef: int, bcondition: bool = False, word_layers: int = 0):
        super().__init__()
        self.df_dim, self.ef_dim, self.bcondition = ndf, nef, bcondition
        if bcondition:
            self.jointConv = Block3x3_leakRelu(ndf * 8 + nef, ndf * 8)
        self.word_grid = WordGrid(nef, word_layers) if bcondition and word_layers else None
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def forward(self, h_code: torch.Tensor, c_code=None, logits: bool = False) -> torch.Tensor:
        if self.bcondition:
            if c_code is None:
                raise ValueError("the conditional D head (COND_DNET) needs the sentence embedding c_code")
            text = c_code if isinstance(c_code, TextCondition) else TextCondition(c_code)
            sent = text.sent
            if sent.dim() != 2 or sent.size(1) != self.ef_dim or sent.size(0) != h_code.size(0):
                raise ValueError(f"sentence embedding must be [B={h_code.size(0)}, {self.ef_dim}], "
                                 f"got {tuple(sent.shape)}")
            cond = sent[:, :, None, None].expand(-1, -1, h_code.size(2), h_code.size(3))
            if self.word_grid is not None:
                if text.words is None:
                    raise ValueError("this D head reads the words (GAN.D_WORD_CONTEXT_LAYERS > 0): pass a "
                                     "TextCondition(sent, words, mask)")
                grid = self.word_grid(text.words, text.mask)
                if grid.shape[2:] != h_code.shape[2:]:
                    grid = F.interpolate(grid, size=h_code.shape[2:], mode="nearest")
                cond = cond + grid.to(cond.dtype)
            h_code = self.jointConv(torch.cat((h_code, cond.to(h_code.dtype)), 1))
        out = self.outlogits[0](h_code)
        if not logits:
            out = self.outlogits[1](out)
        return out.view(-1)


class D_NET(nn.Module):
    """AttnGAN discriminator trunk for `img_size` = 64·2^n images (and, ours, 32 or 16: `encode_image_by_16times`
    with one or two stride-1 convs), with its heads `UNCOND_DNET` / `COND_DNET`.

    Layer plan: `img_code_s16` (÷16, 8ndf), then n downBlocks `img_code_s32`, `img_code_s64`, ... doubling channels,
    then n Block3x3_leakRelu `<last>_1`, `<last>_2`, ... halving them back to 8ndf at 4×4. `forward(x)` returns the
    [B, 8ndf, 4, 4] features; the heads turn them into scores. Without `b_jcu` there is no unconditional head.
    """

    def __init__(self, ndf: int, nef: int, img_size: int, b_jcu: bool = True, word_layers: int = 0):
        super().__init__()
        n = int(round(math.log2(img_size / 64))) if img_size >= 16 else -3
        if n < -2 or 64 * 2 ** n != img_size:
            raise InputError(f"discriminator image size must be 16, 32 or 64·2^n, got {img_size}")
        self.df_dim, self.ef_dim, self.img_size = ndf, nef, img_size
        self.img_code_s16 = encode_image_by_16times(ndf, n_stride1=max(-n, 0))
        self._trunk = ["img_code_s16"]
        n = max(n, 0)
        for i in range(1, n + 1):
            name = f"img_code_s{16 * 2 ** i}"
            self.add_module(name, downBlock(ndf * 8 * 2 ** (i - 1), ndf * 8 * 2 ** i))
            self._trunk.append(name)
        last = self._trunk[-1]
        for j in range(1, n + 1):
            name = f"{last}_{j}"
            self.add_module(name, Block3x3_leakRelu(ndf * 8 * 2 ** (n - j + 1), ndf * 8 * 2 ** (n - j)))
            self._trunk.append(name)
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True, word_layers=word_layers)

    def forward(self, x_var: torch.Tensor) -> torch.Tensor:
        if x_var.dim() != 4 or x_var.size(1) != 3 or x_var.shape[2:] != (self.img_size, self.img_size):
            raise ValueError(f"{type(self).__name__} expects images [B, 3, {self.img_size}, {self.img_size}], "
                             f"got {tuple(x_var.shape)}")
        for name in self._trunk:
            x_var = getattr(self, name)(x_var)
        return x_var


class D_NET64(D_NET):
    def __init__(self, ndf: int, nef: int, b_jcu: bool = True, word_layers: int = 0):
        super().__init__(ndf, nef, 64, b_jcu, word_layers)


class D_NET128(D_NET):
    def __init__(self, ndf: int, nef: int, b_jcu: bool = True, word_layers: int = 0):
        super().__init__(ndf, nef, 128, b_jcu, word_layers)


class D_NET256(D_NET):
    def __init__(self, ndf: int, nef: int, b_jcu: bool = True, word_layers: int = 0):
        super().__init__(ndf, nef, 256, b_jcu, word_layers)


# ----------------------------------------------------------------------------------------------------------------
# Initialisation and factories
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def weights_init(m: nn.Module) -> None:
    """AttnGAN's init (`miscc/utils.py`), for `module.apply`: orthogonal conv and linear weights (gain 1), linear
    biases 0 (conv biases keep PyTorch's default), BatchNorm weight ~ N(1, 0.02) and bias 0."""
    if isinstance(m, nn.modules.conv._ConvNd):
        nn.init.orthogonal_(m.weight, 1.0)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.weight is not None:
            m.weight.normal_(1.0, 0.02)
            m.bias.zero_()
    elif isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight, 1.0)
        if m.bias is not None:
            m.bias.zero_()



def add_spectral_norm(net: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv and linear weight of `net` (GAN.D_SPECTRAL_NORM),
    except inside a `WordContext` (its attention reads `out_proj.weight` without calling the layer, so the norm's
    hook would never run and the weight would freeze). The state dict then holds `weight_orig` / `weight_u` /
    `weight_v` instead of `weight`."""
    skip = {id(m) for w in net.modules() if isinstance(w, WordContext) for m in w.modules()}
    for module in list(net.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)) and id(module) not in skip:
            nn.utils.spectral_norm(module)
    return net
