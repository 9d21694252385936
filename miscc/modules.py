"""Switching modules in and out of training: freezing for good, or for one step (`frozen`, `eval_mode`); and
`float_softmax`, the attention softmax every model uses."""
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


def float_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax(x) over `dim`, computed and returned in float32 where x is bf16 / fp16 (float64 stays float64).

    Attention weights over a few dozen words or regions: under CPU bf16 autocast PyTorch runs softmax in bf16, and
    its bf16 kernels (forward and backward) are 3-5x slower than float32 on these short rows (G's grid attention in
    the IMLE previews, [1280, 16, 30]: 2.1 against 0.5 ms on a Zen 4); float32 is also the more accurate. CUDA's
    autocast already runs softmax in float32, and an fp32 run is unchanged."""
    return torch.softmax(x, dim, dtype=torch.promote_types(x.dtype, torch.float32))
