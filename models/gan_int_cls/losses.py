"""GAN-INT-CLS losses: matching-aware (CLS) D loss, G loss with interpolated texts (INT), WGAN(-GP) terms."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.errors import InputError
from models.gan_int_cls.networks import LOSS_TYPES




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
