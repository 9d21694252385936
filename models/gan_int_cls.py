"""GAN-INT-CLS (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016): models and losses.

Module and parameter names follow aelnouby/Text-to-Image-Synthesis (`models/gan_cls.py`, `wgan_cls.py`, `gan.py`,
`utils.py:Concat_embed`), so that port's checkpoints (`gen_<epoch>.pth` / `disc_<epoch>.pth`, saved from
DataParallel with every key prefixed by `module.`) load strictly with `load_gan_int_cls`. Differences from the port,
each deliberate:

* Channel plans are computed from `ngf`/`ndf` and `image_size`; at 64 px they equal the port's layers and key indices.
* `embed_dim` (1024 for Reed's char-CNN-RNN vectors, or our text encoder's `TEXT.EMBEDDING_DIM`) and the projected
  dimension are constructor arguments; `embed_dim=0` builds the port's unconditional `vanilla_gan`/`vanilla_wgan`.
* The WGAN critic returns one value per sample [B]; the port returns the batch mean `x.mean(0).view(1)`. Every loss
  takes a mean, so `scores.mean()` gives the port's number.
* The sigmoid of the `gan` discriminator is applied in `forward` (not as `netD_2.1`; it has no parameters, so the
  state dict is the same) and the losses use `binary_cross_entropy_with_logits` on the logits: the same value as the
  port's `BCELoss(sigmoid(x))` without its log clamp at -100, and safe under autocast.
* Losses fix the port's bugs: the fake batch is detached in the D step, the gradient penalty takes the norm over
  all of a sample's pixels (the port's `compute_GP` took it over channels only), and CLS wrong images come from a
  different class (`wrong_indices`; the port compared h5py objects by identity).
* INT (Reed's `(t_a + t_b)/2` over the two batch halves, G loss only), which the port never implemented (issue #17).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.checkpoint import load_checkpoint, load_state_dict_strict
from miscc.errors import InputError

LOSS_TYPES = ("gan", "wgan", "wgan-gp")
# INTCLS.TYPE values (the port's `--type`, plus wgan-gp) -> (loss type, conditional).
MODEL_TYPES = {
    "gan": ("gan", True),
    "wgan": ("wgan", True),
    "wgan-gp": ("wgan-gp", True),
    "vanilla_gan": ("gan", False),
    "vanilla_wgan": ("wgan", False),
}


def _num_doublings(image_size: int, what: str) -> int:
    """Number of x2 steps between the 4x4 bottleneck and `image_size` (a power of two >= 8)."""
    if not isinstance(image_size, int) or image_size < 8 or image_size & (image_size - 1):
        raise InputError(f"{what}: image_size must be a power of two >= 8 (64 for GAN-INT-CLS), got {image_size!r}")
    return int(math.log2(image_size // 4))


class Concat_embed(nn.Module):
    """Project a text embedding (Linear -> BN1d -> LReLU 0.2) and tile it over a feature map, after its channels.

    The port's `utils.Concat_embed`; `projection.{0,1}` are the Linear and BatchNorm1d keys.
    """

    def __init__(self, embed_dim: int, projected_embed_dim: int):
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(embed_dim, projected_embed_dim),
            nn.BatchNorm1d(projected_embed_dim),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, inp: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        projected = self.projection(embed)[:, :, None, None].expand(-1, -1, inp.size(2), inp.size(3))
        return torch.cat([inp, projected], 1)


class minibatch_discriminator(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, sec. 3.2): o_b(x_i) = sum_j exp(-||M_i,b - M_j,b||_1).

    The port's `utils.minibatch_discriminator` (same `T_tensor` parameter, initialised randn * 0.1), which it never
    wired in. Here it returns only the [B, B_dim] similarity features; `discriminator` tiles them over the 4x4 map.
    As in the paper and the port, the sum includes j = i (a constant 1).
    """

    def __init__(self, in_features: int, B_dim: int = 128, C_dim: int = 16):
        super().__init__()
        self.B_dim, self.C_dim = B_dim, C_dim
        self.T_tensor = nn.Parameter(torch.randn(in_features, B_dim * C_dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mm(self.T_tensor).view(-1, self.B_dim, self.C_dim)
        l1 = (m.unsqueeze(3) - m.permute(1, 2, 0).unsqueeze(0)).abs().sum(2)  # [B, B_dim, B]
        return torch.exp(-l1).sum(2)


class generator(nn.Module):
    """DCGAN generator conditioned on a projected text embedding (the port's `gan_cls.generator`).

    `forward(embed [B, embed_dim], z [B, noise_dim] or [B, noise_dim, 1, 1]) -> images [B, 3, S, S]` in [-1, 1].
    The latent is [text (projected_embed_dim), noise] as in the port; `noise_first=True` gives Reed's Lua order
    [noise, text] (`main_cls_int.lua` joins {Z, txt}). With `embed_dim=0` the model is unconditional (the port's
    `gan.generator`): no `projection`, and `embed` must be None.
    """

    def __init__(self, embed_dim: int = 1024, projected_embed_dim: int = 128, noise_dim: int = 100, ngf: int = 64,
                 num_channels: int = 3, image_size: int = 64, noise_first: bool = False):
        super().__init__()
        n = _num_doublings(image_size, "generator")
        self.embed_dim, self.noise_dim, self.image_size = embed_dim, noise_dim, image_size
        self.projected_embed_dim = projected_embed_dim if embed_dim else 0
        self.noise_first = noise_first
        self.projection = None
        if embed_dim:
            self.projection = nn.Sequential(
                nn.Linear(embed_dim, projected_embed_dim),
                nn.BatchNorm1d(projected_embed_dim),
                nn.LeakyReLU(0.2, inplace=True),
            )
        # Widths ngf*2^(n-1) ... ngf: 512, 256, 128, 64 at 64 px (keys netG.{0,3,6,9,12}, BN netG.{1,4,7,10}).
        widths = [ngf * 2 ** (n - 1 - i) for i in range(n)]
        layers = [nn.ConvTranspose2d(noise_dim + self.projected_embed_dim, widths[0], 4, 1, 0, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], num_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.netG = nn.Sequential(*layers)

    def forward(self, embed_vector: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.dim() != 4 or z.size(1) != self.noise_dim or z.shape[2:] != (1, 1):
            raise ValueError(f"generator: noise must be [B, {self.noise_dim}] or [B, {self.noise_dim}, 1, 1], "
                             f"got {tuple(z.shape)}")
        if self.projection is None:
            if embed_vector is not None:
                raise ValueError("generator: this model is unconditional (embed_dim=0); pass embed_vector=None")
            return self.netG(z)
        _check_embed(embed_vector, self.embed_dim, z.size(0), "generator")
        text = self.projection(embed_vector)[:, :, None, None]
        latent = torch.cat([z, text] if self.noise_first else [text, z], 1)
        return self.netG(latent)


class discriminator(nn.Module):
    """DCGAN discriminator with the text projection tiled after the 4x4 image features (the port's
    `gan_cls.discriminator` / `wgan_cls.discriminator`).

    `forward(images [B, 3, S, S], embed [B, embed_dim]) -> (scores [B], features [B, 8*ndf, 4, 4])`; the features
    (`netD_1`'s output) feed the feature-matching loss. `wgan=False`: scores are probabilities (sigmoid); `wgan=True`:
    raw critic values, one per sample (the port returns their batch mean, shape [1]). `logits=True` returns the
    pre-sigmoid values for either kind (the losses use it).

    `batch_norm=False` is the port's `improved=True` WGAN critic (no BN in `netD_1`, keys `netD_1.{0,2,4,6}`); use it
    with a gradient penalty, which is per sample and so undefined across a BatchNorm batch. `minibatch=True` adds
    `minibatch_discriminator` features (B_dim channels, after the text channels); off by default as in the port.
    """

    def __init__(self, embed_dim: int = 1024, projected_embed_dim: int = 128, ndf: int = 64, num_channels: int = 3,
                 image_size: int = 64, wgan: bool = False, batch_norm: bool = True, minibatch: bool = False,
                 minibatch_B_dim: int = 128, minibatch_C_dim: int = 16):
        super().__init__()
        n = _num_doublings(image_size, "discriminator")
        self.embed_dim, self.image_size, self.wgan = embed_dim, image_size, wgan
        widths = [ndf * 2 ** i for i in range(n)]  # 64, 128, 256, 512 at 64 px
        layers = [nn.Conv2d(num_channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.netD_1 = nn.Sequential(*layers)
        self.feature_channels = widths[-1]
        head_in = widths[-1]
        self.projector = None
        if embed_dim:
            self.projector = Concat_embed(embed_dim, projected_embed_dim)
            head_in += projected_embed_dim
        self.minibatch = None
        if minibatch:
            self.minibatch = minibatch_discriminator(widths[-1] * 16, minibatch_B_dim, minibatch_C_dim)
            head_in += minibatch_B_dim
        self.netD_2 = nn.Sequential(nn.Conv2d(head_in, 1, 4, 1, 0, bias=False))

    def forward(self, inp: torch.Tensor, embed: torch.Tensor | None = None, logits: bool = False):
        feats = self.netD_1(inp)
        x = feats
        if self.projector is not None:
            _check_embed(embed, self.embed_dim, inp.size(0), "discriminator")
            x = self.projector(x, embed)
        elif embed is not None:
            raise ValueError("discriminator: this model is unconditional (embed_dim=0); pass embed=None")
        if self.minibatch is not None:
            mb = self.minibatch(feats)[:, :, None, None].expand(-1, -1, feats.size(2), feats.size(3))
            x = torch.cat([x, mb], 1)
        out = self.netD_2(x).view(-1)
        if not (self.wgan or logits):
            out = torch.sigmoid(out)
        return out, feats


def _check_embed(embed, embed_dim: int, batch: int, what: str) -> None:
    if embed is None or embed.dim() != 2 or embed.size(1) != embed_dim or embed.size(0) != batch:
        shape = None if embed is None else tuple(embed.shape)
        raise ValueError(f"{what}: expected text embeddings of shape [{batch}, {embed_dim}], got {shape}")


def weights_init(m: nn.Module) -> None:
    """The port's `Utils.weights_init`, for `model.apply`: (transposed) convolutions N(0, 0.02); BatchNorm (1d and
    2d) weight N(1, 0.02), bias 0. Linear layers and `T_tensor` keep their own initialisation, as in the port."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def load_gan_int_cls(model: nn.Module, path: str) -> nn.Module:
    """Load a port checkpoint (`gen_<epoch>.pth` into a `generator`, `disc_<epoch>.pth` into a `discriminator`)
    strictly, with or without the DataParallel `module.` prefix."""
    what = "GAN-INT-CLS generator" if isinstance(model, generator) else "GAN-INT-CLS discriminator"
    state = load_checkpoint(path, what)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    load_state_dict_strict(model, state, source=path)
    return model


def build_gan_int_cls(cfg) -> tuple[generator, discriminator]:
    """G and D from the config tree (INTCLS.*, GAN.Z_DIM, TEXT.EMBEDDING_DIM), initialised with `weights_init`.

    The embedding size is INTCLS.EMBED_DIM when INTCLS.TEXT_SOURCE is `hd5` (Reed's 1024-d vectors), else our text
    encoder's TEXT.EMBEDDING_DIM. `vanilla_*` types are unconditional; `wgan-gp` uses the BN-free critic.
    """
    kind = cfg.INTCLS.TYPE
    if kind not in MODEL_TYPES:
        raise InputError(f"INTCLS.TYPE must be one of {sorted(MODEL_TYPES)}, got '{kind}'")
    if cfg.INTCLS.TEXT_SOURCE not in ("encoder", "hd5"):
        raise InputError(f"INTCLS.TEXT_SOURCE must be 'encoder' or 'hd5', got '{cfg.INTCLS.TEXT_SOURCE}'")
    loss_type, conditional = MODEL_TYPES[kind]
    embed_dim = 0
    if conditional:
        embed_dim = cfg.INTCLS.EMBED_DIM if cfg.INTCLS.TEXT_SOURCE == "hd5" else cfg.TEXT.EMBEDDING_DIM
    netG = generator(embed_dim, cfg.INTCLS.PROJECTED_DIM, cfg.GAN.Z_DIM, ngf=cfg.INTCLS.NGF,
                     noise_first=cfg.INTCLS.NOISE_FIRST)
    netD = discriminator(embed_dim, cfg.INTCLS.PROJECTED_DIM, ndf=cfg.INTCLS.NDF, wgan=loss_type != "gan",
                         batch_norm=loss_type != "wgan-gp", minibatch=cfg.INTCLS.MINIBATCH_DISC)
    netG.apply(weights_init)
    netD.apply(weights_init)
    return netG, netD


# --------------------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntClsLossOptions:
    """What `d_loss` and `g_loss` compute (defaults = the INTCLS config defaults).

    * `loss_type`: `gan` (BCE), `wgan` (critic; clip D with `clip_weights` after each D step) or `wgan-gp`
      (critic + `gp_lambda` * gradient penalty).
    * `cls`, `cls_weight`: D also sees (wrong image, right text) as fake. The wrong and fake terms are both weighted
      by `cls_weight`: 0.5 is Reed's setting (`main_cls_int.lua` weights wrong by w and fake by 1 - w; equal at
      w = 0.5), 1.0 the port's plain sum. Without `cls` the fake term has weight 1.
    * `interp`, `int_weight`: G loss on generated images for interpolated texts (see `interpolate_embeddings`).
      Reed's single weighted BCE over the 3B/2 batch equals 2/3 * (adv + int_weight/2 * int) in this form, so
      `int_weight=0.5` gives Reed's relative weight.
    * `real_label`: BCE target of D's real term only (one-sided smoothing, the port's 0.9); G's target is 1.
    * `l1_coef` (L1 to the real image) and `l2_coef` (feature matching: MSE between the batch means of `netD_1`
      features of fake and real) are added to G's loss when > 0, for any loss type (the port uses them only with
      `gan`; set both to 0 to reproduce its WGAN).
    """
    loss_type: str = "gan"
    cls: bool = True
    cls_weight: float = 0.5
    interp: bool = True
    int_weight: float = 1.0
    real_label: float = 0.9
    gp_lambda: float = 10.0
    l1_coef: float = 50.0
    l2_coef: float = 100.0

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise InputError(f"loss_type must be one of {LOSS_TYPES}, got '{self.loss_type}'")
        if not 0.0 < self.real_label <= 1.0:
            raise InputError(f"real_label must be in (0, 1], got {self.real_label}")
        for name in ("cls_weight", "int_weight", "gp_lambda", "l1_coef", "l2_coef"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")


def build_loss_options(cfg) -> IntClsLossOptions:
    """Loss options from INTCLS.*; `vanilla_*` types turn CLS and INT off (there is no text)."""
    kind = cfg.INTCLS.TYPE
    if kind not in MODEL_TYPES:
        raise InputError(f"INTCLS.TYPE must be one of {sorted(MODEL_TYPES)}, got '{kind}'")
    loss_type, conditional = MODEL_TYPES[kind]
    return IntClsLossOptions(
        loss_type=loss_type, cls=cfg.INTCLS.CLS and conditional, cls_weight=cfg.INTCLS.CLS_WEIGHT,
        interp=cfg.INTCLS.INT and conditional, int_weight=cfg.INTCLS.INT_WEIGHT, real_label=cfg.INTCLS.REAL_LABEL,
        gp_lambda=cfg.INTCLS.GP_LAMBDA, l1_coef=cfg.INTCLS.L1_COEF, l2_coef=cfg.INTCLS.L2_COEF)


class DLoss(NamedTuple):
    """`loss` is what D minimises; the rest are detached, for logging (scores: mean probability or critic value)."""
    loss: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor
    wrong: torch.Tensor
    gp: torch.Tensor
    real_score: torch.Tensor
    fake_score: torch.Tensor
    wrong_score: torch.Tensor


class GLoss(NamedTuple):
    """`loss` is what G minimises; the weighted parts are detached, for logging."""
    loss: torch.Tensor
    adv: torch.Tensor
    interp: torch.Tensor
    feature_matching: torch.Tensor
    l1: torch.Tensor


def _adv_term(scores: torch.Tensor, target: float, loss_type: str) -> torch.Tensor:
    """BCE-with-logits against a constant target (`gan`), or the critic's -mean / +mean (WGAN, target 1 / 0)."""
    if loss_type == "gan":
        return F.binary_cross_entropy_with_logits(scores, torch.full_like(scores, target))
    return -scores.mean() if target > 0 else scores.mean()


def _score(scores: torch.Tensor, loss_type: str) -> torch.Tensor:
    return (torch.sigmoid(scores) if loss_type == "gan" else scores).mean().detach()


def gradient_penalty(netD: nn.Module, real_images: torch.Tensor, fake_images: torch.Tensor,
                     embed: torch.Tensor | None = None, gp_lambda: float = 10.0) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017, eq. 3): lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = a*real + (1-a)*fake,
    a ~ U(0, 1) per sample. The norm is over all of a sample's values; the port's `compute_GP` (commented out) took
    it over the channel axis only."""
    alpha = torch.rand(real_images.size(0), *([1] * (real_images.dim() - 1)), device=real_images.device,
                       dtype=real_images.dtype)
    x_hat = (alpha * real_images.detach() + (1 - alpha) * fake_images.detach()).requires_grad_(True)
    scores = netD(x_hat, embed, logits=True)[0]
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return gp_lambda * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def d_loss(netD: nn.Module, real_images: torch.Tensor, embed: torch.Tensor | None, fake_images: torch.Tensor,
           options: IntClsLossOptions, wrong_images: torch.Tensor | None = None) -> DLoss:
    """Discriminator loss for one step (the port's `_train_gan` / `_train_wgan` D part, with `options`).

    gan:  BCE(D(real, e), real_label) + w_f * BCE(D(fake, e), 0) [+ w_w * BCE(D(wrong, e), 0)]
    wgan: -mean D(real, e) + w_f * mean D(fake, e) [+ w_w * mean D(wrong, e)]  (+ gradient penalty for wgan-gp)
    with w_f = w_w = cls_weight when `options.cls`, else w_f = 1. Real, wrong and fake go through D as separate
    batches (separate BatchNorm statistics), as in the port. `fake_images` is detached here.
    """
    if options.cls and wrong_images is None:
        raise ValueError("d_loss: options.cls is on but no wrong_images were given")
    fake_images = fake_images.detach()
    t = options.loss_type
    s_real = netD(real_images, embed, logits=True)[0]
    s_fake = netD(fake_images, embed, logits=True)[0]
    real = _adv_term(s_real, options.real_label, t)
    fake = _adv_term(s_fake, 0.0, t)
    zero = real.new_zeros(())
    wrong, wrong_score, gp = zero, zero, zero
    fake_weight = 1.0
    if options.cls:
        s_wrong = netD(wrong_images, embed, logits=True)[0]
        wrong = _adv_term(s_wrong, 0.0, t)
        wrong_score = _score(s_wrong, t)
        fake_weight = options.cls_weight
    loss = real + fake_weight * fake + (options.cls_weight * wrong if options.cls else 0.0)
    if t == "wgan-gp":
        gp = gradient_penalty(netD, real_images, fake_images, embed, options.gp_lambda)
        loss = loss + gp
    return DLoss(loss, real.detach(), fake.detach(), wrong.detach(), gp.detach(), _score(s_real, t),
                 _score(s_fake, t), wrong_score)


def g_loss(netD: nn.Module, fake_images: torch.Tensor, embed: torch.Tensor | None, options: IntClsLossOptions,
           real_images: torch.Tensor | None = None, int_fake_images: torch.Tensor | None = None,
           int_embed: torch.Tensor | None = None, real_features: torch.Tensor | None = None) -> GLoss:
    """Generator loss for one step.

    adv (BCE(D(fake, e), 1), or -mean D(fake, e) for WGAN) + int_weight * the same on (int_fake, int_embed)
    + l2_coef * MSE(mean_b netD_1(fake), mean_b netD_1(real)) + l1_coef * L1(fake, real).

    With INT, fake and interpolated images go through D as one batch (Reed's 3B/2 batch); feature matching and L1
    use the first B (non-interpolated) images only. `real_features` ([B, C, 4, 4] from D on the real batch) is
    computed without gradient from `real_images` when not given. An empty interpolation batch (B < 2) adds nothing.
    """
    if options.interp and (int_fake_images is None or int_embed is None):
        raise ValueError("g_loss: options.interp is on but int_fake_images/int_embed were not given "
                         "(see generate_with_interpolation)")
    needs_real = options.l1_coef > 0 or (options.l2_coef > 0 and real_features is None)
    if needs_real and real_images is None:
        raise ValueError("g_loss: l1_coef/l2_coef > 0 need real_images")
    t = options.loss_type
    b = fake_images.size(0)
    use_int = options.interp and int_fake_images.size(0) > 0
    if use_int:
        images = torch.cat([fake_images, int_fake_images], 0)
        texts = None if embed is None else torch.cat([embed, int_embed], 0)
        scores, feats = netD(images, texts, logits=True)
        adv = _adv_term(scores[:b], 1.0, t)
        interp = _adv_term(scores[b:], 1.0, t)
        feats = feats[:b]
    else:
        scores, feats = netD(fake_images, embed, logits=True)
        adv = _adv_term(scores, 1.0, t)
        interp = adv.new_zeros(())
    loss = adv + options.int_weight * interp
    fm = l1 = adv.new_zeros(())
    if options.l2_coef > 0:
        if real_features is None:
            with torch.no_grad():
                real_features = netD(real_images, embed, logits=True)[1]
        fm = options.l2_coef * F.mse_loss(feats.mean(0), real_features.detach().mean(0))
        loss = loss + fm
    if options.l1_coef > 0:
        l1 = options.l1_coef * F.l1_loss(fake_images, real_images)
        loss = loss + l1
    return GLoss(loss, adv.detach(), interp.detach(), fm.detach(), l1.detach())


def interpolate_embeddings(embed: torch.Tensor) -> torch.Tensor:
    """Reed's INT texts (`interp_type=1`): (t_a + t_b)/2 pairing the first half of the batch with the second,
    giving B//2 embeddings (row i mixes rows i and i + B//2; with odd B the last row is unused)."""
    h = embed.size(0) // 2
    return (embed[:h] + embed[h:2 * h]) * 0.5


def generate_with_interpolation(netG: nn.Module, embed: torch.Tensor, noise: torch.Tensor | None = None):
    """One G pass on [embed; interpolate_embeddings(embed)] with fresh N(0, 1) noise (Reed's 3B/2 batch).

    Returns (fake [B], int_fake [B//2], int_embed [B//2]) for `g_loss`. `noise` ([3B/2, noise_dim]) is optional.
    """
    int_embed = interpolate_embeddings(embed)
    texts = torch.cat([embed, int_embed], 0)
    if noise is None:
        noise = torch.randn(texts.size(0), netG.noise_dim, 1, 1, device=embed.device, dtype=embed.dtype)
    images = netG(texts, noise)
    b = embed.size(0)
    return images[:b], images[b:], int_embed


@torch.no_grad()
def clip_weights(netD: nn.Module, c: float = 0.01) -> None:
    """WGAN weight clipping (Arjovsky et al. 2017, Alg. 1): clamp every parameter of D to [-c, c] in place, as the
    port does after each critic step (BatchNorm and Linear parameters included)."""
    if c <= 0:
        raise InputError(f"clip value must be > 0, got {c}")
    for p in netD.parameters():
        p.clamp_(-c, c)


def critic_iterations(gen_iteration: int, diter: int = 5) -> int:
    """Critic steps before the next G step (WGAN paper / the port): 100 while gen_iteration < 25 and at every 500th,
    else `diter`."""
    return 100 if gen_iteration < 25 or gen_iteration % 500 == 0 else diter


def wrong_indices(class_ids: Sequence, rng: np.random.Generator | None = None,
                  anchors: Sequence[int] | None = None) -> np.ndarray:
    """For each anchor index i (default: all), a uniformly drawn index j with class_ids[j] != class_ids[i].

    This is the CLS "wrong image" pick. It compares class values; the port's `find_wrong_image` compared two h5py
    Dataset objects, which differ by identity, so it could return the same class or even the same photo.
    `class_ids` is any 1-D sequence of comparable labels (ints, decoded str). Raises ValueError when an anchor's
    class covers the whole set.
    """
    ids = np.asarray(class_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise InputError(f"wrong_indices: class_ids must be a non-empty 1-D sequence, got shape {ids.shape}")
    rng = np.random.default_rng() if rng is None else rng
    anchors = np.arange(ids.size) if anchors is None else np.asarray(anchors, dtype=np.int64)
    if anchors.size and (anchors.min() < 0 or anchors.max() >= ids.size):
        raise IndexError(f"wrong_indices: anchors must be in [0, {ids.size}), got {anchors.min()}..{anchors.max()}")
    own = ids[anchors]
    out = rng.integers(0, ids.size, size=anchors.size)
    bad = ids[out] == own
    for _ in range(32):  # rejection sampling: expected tries N / (N - n_class), ~1 for many classes
        if not bad.any():
            return out
        out[bad] = rng.integers(0, ids.size, size=int(bad.sum()))
        bad = ids[out] == own
    for k in np.flatnonzero(bad):  # a dominant class: draw exactly from the other classes
        others = np.flatnonzero(ids != own[k])
        if others.size == 0:
            raise InputError(f"wrong_indices: every example has class '{own[k]}'; CLS needs at least two classes")
        out[k] = others[rng.integers(0, others.size)]
    return out
