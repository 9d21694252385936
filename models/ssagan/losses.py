"""SSA-GAN / DF-GAN losses: matching-aware hinge for D and G, and the matching-aware gradient penalty (MA-GP)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from miscc.errors import InputError
from models.ssagan.networks import NetD


class DLoss(NamedTuple):
    """Hinge discriminator loss and its parts: total = real + (fake + mismatch) / 2."""
    total: torch.Tensor
    real: torch.Tensor
    mismatch: torch.Tensor
    fake: torch.Tensor


def hinge_d_loss(netD: NetD, real: torch.Tensor, fake: torch.Tensor, sent: torch.Tensor) -> DLoss:
    """Matching-aware hinge loss of wt `main.py` (DF-GAN Eq. 3).

    real: relu(1 - D(x, s)); mismatch: relu(1 + D(x[:B-1], s[1:])) (the batch shifted by one, class ids ignored, as in
    the original); fake: relu(1 + D(G(z,s).detach(), s)). `fake` is detached here, so G gets no gradient.
    """
    if real.size(0) < 2:
        raise InputError(f"hinge_d_loss: the mismatch term pairs image i with sentence i+1, so the batch needs at "
                         f"least 2 samples, got {real.size(0)}")
    real_features = netD(real)
    err_real = F.relu(1.0 - netD.COND_DNET(real_features, sent)).mean()
    err_mis = F.relu(1.0 + netD.COND_DNET(real_features[:-1], sent[1:])).mean()
    err_fake = F.relu(1.0 + netD.COND_DNET(netD(fake.detach()), sent)).mean()
    return DLoss(err_real + (err_fake + err_mis) / 2.0, err_real, err_mis, err_fake)


def magp_loss(netD: NetD, real: torch.Tensor, sent: torch.Tensor, p: float = 6.0, weight: float = 2.0) -> torch.Tensor:
    """Matching-aware zero-centred gradient penalty (DF-GAN Eq. 4): `weight · mean_i ‖∇_{x_i, s_i} D(x_i, s_i)‖^p`.

    The gradient is taken with respect to both the real images and their sentences, flattened and concatenated per
    sample. The graph is kept (`create_graph=True`) so the penalty trains D. The inputs are not modified.
    """
    real = real.detach().requires_grad_(True)
    sent = sent.detach().requires_grad_(True)
    return ma_gp(netD.COND_DNET(netD(real), sent), real, sent, p, weight)


def ma_gp(out: torch.Tensor, img: torch.Tensor, sent: torch.Tensor, p: float = 6.0,
          weight: float = 2.0) -> torch.Tensor:
    """`weight · mean_i ‖(∇_{img_i} out, ∇_{sent_i} out)‖₂^p`: the gradient of the logits `out` (computed from `img`
    and `sent`, both requiring grad) w.r.t. both inputs, flattened and concatenated per sample; the graph is kept
    so the penalty trains D. Evaluated in float32 (‖∇‖^6 overflows float16 once ‖∇‖ > 6.3)."""
    grad_img, grad_sent = torch.autograd.grad(out.float().sum(), (img, sent), create_graph=True)
    grad = torch.cat((grad_img.float().flatten(1), grad_sent.float().flatten(1)), dim=1)
    return weight * grad.norm(2, dim=1).pow(p).mean()


def hinge_g_loss(netD: NetD, fake: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """Generator adversarial loss `-D(G(z,s), s).mean()`; the trainer adds the weighted DAMSM term."""
    return -netD.COND_DNET(netD(fake), sent).mean()
