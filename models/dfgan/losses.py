"""DF-GAN losses: matching-aware hinge loss and the matching-aware gradient penalty (Tao et al., CVPR 2022, Eq. 3–4).

2022 (tobran/DF-GAN `code/lib/modules.py`, `train`, `MA_GP`, `predict_loss`): one D step on
`real + (fake + mismatch)/2 + MA-GP`, the mismatched pairs being the real features rolled by one
(`cat(x[1:], x[0:1])`, every image paired with the next sentence), the penalty taken on the same forward as the real
logits. G: `-NetC(NetD(G(z,s)), s).mean()` (the DAMSM term is commented out in the original).

2021 (`9015356` `code/main.py`): the hinge step with the batch shifted by one and its last pair dropped, then MA-GP
as a second, separate D step; both are SSA-GAN's (`models.ssagan.hinge_d_loss`, `magp_loss`, re-exported here).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from miscc.errors import InputError
from models.ssagan import hinge_d_loss, ma_gp, magp_loss  # noqa: F401  (MA-GP; the 2021 losses)
from models.ssagan import hinge_g_loss as g_loss_2021  # noqa: F401  (-D(G(z,s), s).mean(), 2021)


def hinge(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """`mean(relu(1 - logits))` for pairs that should score real, `mean(relu(1 + logits))` otherwise."""
    return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()


def roll_by_one(x: torch.Tensor) -> torch.Tensor:
    """`cat(x[1:], x[0:1])`: sample i takes the place of sample i-1 (the 2022 mismatched pairs)."""
    return torch.cat((x[1:], x[:1]), dim=0)


class DLoss(NamedTuple):
    """The 2022 discriminator loss and its parts: total = real + (fake + mismatch)/2 + magp."""
    total: torch.Tensor
    real: torch.Tensor
    mismatch: torch.Tensor
    fake: torch.Tensor
    magp: torch.Tensor


def d_loss_2022(netD, netC, real: torch.Tensor, fake: torch.Tensor, sent: torch.Tensor, p: float = 6.0,
                weight: float = 2.0) -> DLoss:
    """The D loss of one 2022 step (`fake` is detached here; `real` and `sent` are not modified)."""
    if real.size(0) < 2:
        raise InputError(f"DF-GAN: the mismatched pairs need at least 2 samples per batch, got {real.size(0)}")
    real = real.detach().requires_grad_(True)
    sent = sent.detach().requires_grad_(True)
    real_features = netD(real)
    pred_real = netC(real_features, sent)
    err_real = hinge(pred_real, real=True)
    err_mis = hinge(netC(roll_by_one(real_features), sent), real=False)
    err_fake = hinge(netC(netD(fake.detach()), sent), real=False)
    magp = ma_gp(pred_real, real, sent, p, weight)
    total = err_real.float() + (err_fake.float() + err_mis.float()) / 2.0 + magp
    return DLoss(total, err_real, err_mis, err_fake, magp)


def g_loss_2022(netD, netC, fake: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """`-NetC(NetD(fake), sent).mean()`."""
    return -netC(netD(fake), sent).mean()

