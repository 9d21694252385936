"""AttnGAN generator and discriminators from a config tree (GAN.*, TEXT.EMBEDDING_DIM, TREE.*)."""
from __future__ import annotations

import torch
import torch.nn as nn

from miscc.errors import InputError
from models.attngan.networks import D_NET, D_NET64, D_NET128, D_NET256, G_DCGAN, G_NET, add_spectral_norm, weights_init


def _check_base_size(cfg) -> None:
    if cfg.TREE.BASE_SIZE not in (16, 32, 64):
        raise InputError(f"the AttnGAN generator makes BASE_SIZE·2^i images with BASE_SIZE 64 (AttnGAN), 32 or 16 "
                         f"(small CPU configurations), got TREE.BASE_SIZE={cfg.TREE.BASE_SIZE}")


def build_generator(cfg, device: torch.device | str | None = None) -> nn.Module:
    """G_NET (or G_DCGAN when GAN.B_DCGAN) from the config on `device`, initialised with `weights_init` as AttnGAN
    does. The init runs after the move: orthogonal init (a QR per layer) takes seconds on a CPU for full sizes."""
    _check_base_size(cfg)
    cls = G_DCGAN if cfg.GAN.B_DCGAN else G_NET
    net = cls(cfg.GAN.GF_DIM, cfg.TEXT.EMBEDDING_DIM, cfg.GAN.CONDITION_DIM, cfg.GAN.Z_DIM, cfg.TREE.BRANCH_NUM,
              cfg.GAN.R_NUM, init_attention=cfg.GAN.B_INIT_ATTENTION, upsample_mode=cfg.GAN.UPSAMPLE,
              base_size=cfg.TREE.BASE_SIZE, grid_attention=cfg.GAN.GRID_ATTENTION,
              position_queries=cfg.GAN.POSITION_QUERIES,
              word_context_layers=cfg.GAN.WORD_CONTEXT_LAYERS, grid_noise=cfg.GAN.GRID_NOISE,
              grid_heads=cfg.GAN.GRID_HEADS, grid_place=cfg.GAN.GRID_PLACE_FEATURES).to(device)
    net.apply(weights_init)
    return net


def build_discriminators(cfg, device: torch.device | str | None = None) -> list[D_NET]:
    """AttnGAN's discriminators on `device`, initialised with `weights_init`: one per branch (D_NET64, D_NET128,
    ...) with both heads, or with GAN.B_DCGAN a single conditional-only D for the last branch's size. GAN.D_STAGES n
    (ours) keeps the last n branches' only (`netD0.pth` is then the first of those)."""
    _check_base_size(cfg)
    ndf, nef, branches = cfg.GAN.DF_DIM, cfg.TEXT.EMBEDDING_DIM, cfg.TREE.BRANCH_NUM
    layers = cfg.GAN.D_WORD_CONTEXT_LAYERS
    if branches < 1:
        raise InputError(f"TREE.BRANCH_NUM must be at least 1, got {branches}")
    classes = {64: D_NET64, 128: D_NET128, 256: D_NET256}
    if not 0 <= cfg.GAN.D_STAGES <= branches:
        raise InputError(f"GAN.D_STAGES must be 0 (a discriminator per stage) or 1..TREE.BRANCH_NUM ({branches}), "
                         f"got {cfg.GAN.D_STAGES}")
    sizes = [cfg.TREE.BASE_SIZE * 2 ** i for i in range(branches)]
    if cfg.GAN.B_DCGAN:
        specs = [(sizes[-1], False)]
    else:  # GAN.D_STAGES n: the last n stages' sizes only
        specs = [(size, True) for size in sizes[branches - (cfg.GAN.D_STAGES or branches):]]
    nets = []
    for size, b_jcu in specs:
        net = classes[size](ndf, nef, b_jcu, layers) if size in classes else D_NET(ndf, nef, size, b_jcu, layers)
        net.to(device).apply(weights_init)
        if cfg.GAN.D_SPECTRAL_NORM:
            add_spectral_norm(net)
        nets.append(net)
    return nets
