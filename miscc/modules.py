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
