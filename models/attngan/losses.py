"""AttnGAN's adversarial and KL losses (A/code/miscc/losses.py), on logits; the DAMSM terms are in miscc.losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from miscc.errors import InputError
from models.attngan.networks import D_NET


ADV_LOSSES = ("bce", "hinge")


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def _d_term(logits: torch.Tensor, labels: torch.Tensor, adv_loss: str) -> torch.Tensor:
    """One discriminator term: BCE against `labels` (AttnGAN), or the hinge max(0, 1 ∓ logit) (labels 1 / 0)."""
    if adv_loss == "bce":
        return _bce(logits, labels)
    sign = labels.to(logits.dtype) * 2 - 1  # +1 real, -1 fake
    return F.relu(1.0 - sign * logits).mean()


def _g_term(logits: torch.Tensor, adv_loss: str) -> torch.Tensor:
    return _bce(logits, torch.ones_like(logits)) if adv_loss == "bce" else -logits.mean()


def discriminator_loss(netD: D_NET, real_imgs: torch.Tensor, fake_imgs: torch.Tensor, conditions: torch.Tensor,
                       real_labels: torch.Tensor, fake_labels: torch.Tensor, adv_loss: str = "bce",
                       augment=None) -> torch.Tensor:
    """AttnGAN's D loss: (uncond_real + cond_real)/2 + (uncond_fake + cond_fake + cond_wrong)/3, or without an
    unconditional head cond_real + (cond_fake + cond_wrong)/2. The wrong pair is real[:B-1] with conditions[1:B].

    Computed on logits with BCE-with-logits: the same value as the original's BCE on sigmoid outputs (which clamps
    log at -100, so the two differ only for saturated scores) and safe under autocast. Fakes are detached.
    Ours: `adv_loss` "hinge" uses the hinge terms instead of BCE (GAN.ADV_LOSS); `augment` (DiffAugment) is applied
    to real and fake images before D.
    """
    batch_size = real_imgs.size(0)
    if batch_size < 2:
        raise InputError("discriminator_loss needs a batch of at least 2: the mismatched pair shifts the sentences "
                         "by one within the batch")
    if adv_loss not in ADV_LOSSES:
        raise InputError(f"GAN.ADV_LOSS must be one of {ADV_LOSSES}, got {adv_loss!r}")
    fake_imgs = fake_imgs.detach()
    if augment is not None:
        real_imgs, fake_imgs = augment(real_imgs), augment(fake_imgs)
    real_features = netD(real_imgs)
    fake_features = netD(fake_imgs)
    cond = netD.COND_DNET
    cond_real = _d_term(cond(real_features, conditions, logits=True), real_labels, adv_loss)
    cond_fake = _d_term(cond(fake_features, conditions, logits=True), fake_labels, adv_loss)
    cond_wrong = _d_term(cond(real_features[:batch_size - 1], conditions[1:batch_size], logits=True),
                         fake_labels[1:batch_size], adv_loss)
    if netD.UNCOND_DNET is None:
        return cond_real + (cond_fake + cond_wrong) / 2.0
    real = _d_term(netD.UNCOND_DNET(real_features, logits=True), real_labels, adv_loss)
    fake = _d_term(netD.UNCOND_DNET(fake_features, logits=True), fake_labels, adv_loss)
    return (real + cond_real) / 2.0 + (fake + cond_fake + cond_wrong) / 3.0


def generator_adversarial_loss(netsD: list[D_NET], fake_imgs: list[torch.Tensor], sent_emb: torch.Tensor,
                               adv_loss: str = "bce", augment=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The adversarial part of AttnGAN's `generator_loss`: Σ over stages of BCE(uncond(fake), 1) + BCE(cond(fake,
    sent), 1) (the uncond term only where D has that head; with hinge, -logit). Returns (total, per-stage losses
    for logging); the trainer adds the DAMSM words/sentence terms and the KL term."""
    if len(netsD) != len(fake_imgs):
        raise ValueError(f"{len(netsD)} discriminators for {len(fake_imgs)} generated images")
    stage_losses = []
    for netD, fake in zip(netsD, fake_imgs):
        features = netD(augment(fake) if augment is not None else fake)
        loss = _g_term(netD.COND_DNET(features, sent_emb, logits=True), adv_loss)
        if netD.UNCOND_DNET is not None:
            loss = loss + _g_term(netD.UNCOND_DNET(features, logits=True), adv_loss)
        stage_losses.append(loss)
    return sum(stage_losses), stage_losses


def KL_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) averaged over elements: -0.5·mean(1 + logvar - mu² - exp(logvar))."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
