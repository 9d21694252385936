"""Sampling noise shared by the samplers: DF-GAN's truncated normal (EVAL.TRUNCATION)."""
from __future__ import annotations

import torch
import torch.nn as nn

from miscc.errors import InputError


def truncated_noise(batch: int, nz: int, trunc_rate: float, generator: torch.Generator | None = None,
                    device=None) -> torch.Tensor:
    """Noise [batch, nz] from a standard normal truncated to [-2, 2], times `trunc_rate` (DF-GAN's truncation).

    DF-GAN draws `truncnorm.rvs(-2, 2) * trunc_rate` with scipy; this draws the same distribution with torch, from
    `generator` when given (its device decides where the noise is drawn unless `device` is given).
    """
    if not trunc_rate > 0:
        raise InputError(f"truncated_noise: trunc_rate must be > 0, got {trunc_rate!r}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    noise = torch.empty(batch, nz, device=device)
    nn.init.trunc_normal_(noise, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator)
    return noise * trunc_rate
