"""Switching modules in and out of training: freezing for good, or for one step (`frozen`, `eval_mode`)."""
from __future__ import annotations

import contextlib

import torch


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no gradients, for good (the DAMSM encoders a generator trains against)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@contextlib.contextmanager
def frozen(*modules):
    """Temporarily stop gradients into the trainable parameters of `modules` (restored afterwards)."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def eval_mode(*modules):
    """Temporarily put `modules` in eval mode (BN running statistics, no dropout); their modes are restored."""
    modes = [(m, m.training) for m in modules if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def _no_hook(module, inputs):
    return None


@contextlib.contextmanager
def spectral_norm_once(module: torch.nn.Module):
    """Within the block, every spectrally normalised layer of `module` (`torch.nn.utils.spectral_norm`) uses one
    normalised weight, computed on entry (one power iteration in training mode), for all its forwards, instead of
    a power iteration and a fresh weight with its own autograd graph per forward. A discriminator step that reads
    the real and the generated images in two forwards then normalises once (Miyato et al. 2018: one power
    iteration per update) and its backward runs once through the normalisation. The hooks are back on exit."""
    from torch.nn.utils.spectral_norm import SpectralNorm

    swapped = []
    for m in module.modules():
        for key, hook in list(m._forward_pre_hooks.items()):
            if isinstance(hook, SpectralNorm):
                setattr(m, hook.name, hook.compute_weight(m, do_power_iteration=m.training))
                m._forward_pre_hooks[key] = _no_hook  # the same place in the hook order
                swapped.append((m, key, hook))
    try:
        yield module
    finally:
        for m, key, hook in swapped:
            m._forward_pre_hooks[key] = hook
