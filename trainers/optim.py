"""The one optimiser step every trainer takes (GAN D and G steps, DAMSM), with one GradScaler policy.

Policy: `scaler.update()` after every optimiser step. A trainer's networks share one GradScaler (one entry in the
training state), and each step is a complete unit: scale, backward, (average gradients across processes), (unscale
and clip), step, update. So an fp16 overflow in D's gradients skips only D's step and lowers the scale before G's
backward; an optimiser may step several times per iteration (WGAN critic steps, SSA-GAN's encoder, D and G steps);
and a trainer cannot forget the update. (`update()` once per iteration after all steps, PyTorch's recipe for several
optimisers, is also valid but lets no optimiser step twice in one iteration.) Without fp16 the scaler is disabled
and every call is a plain backward + step.
"""
from __future__ import annotations

import torch

from trainers.runtime import average_gradients


def gan_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *,
             module: torch.nn.Module | None = None, rt=None, clip_params=None, max_norm: float | None = None) -> None:
    """zero_grad, backward of the scaled `loss`, average `module`'s gradients over the processes of `rt` (a
    discriminator outside DDP), clip `clip_params` to `max_norm` (on unscaled gradients), step, update."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if module is not None:
        average_gradients(module, rt)
    if max_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(clip_params, max_norm)
    scaler.step(optimizer)
    scaler.update()
