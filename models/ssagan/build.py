"""SSA-GAN NetG / NetD from a config tree (TRAIN.NF, GAN.Z_DIM, TEXT.EMBEDDING_DIM, TREE.*)."""
from __future__ import annotations

from miscc.errors import InputError
from models.ssagan.networks import NetD, NetG


def build_generator(cfg) -> NetG:
    """NetG from TRAIN.NF, GAN.Z_DIM, TEXT.EMBEDDING_DIM and TREE.BASE_SIZE·2^(TREE.BRANCH_NUM-1); with GAN.WORD_GRID
    (ours) its word map, read through GAN.WORD_CONTEXT_LAYERS layers, and with GAN.WORD_AFFINE every block's
    modulation conditioned on it; SSA.MASK_HIDDEN (ours) the mask predictors' hidden width."""
    if cfg.GAN.WORD_GRID and cfg.GAN.WORD_CONTEXT_LAYERS < 1:
        raise InputError(f"GAN.WORD_GRID {cfg.GAN.WORD_GRID} reads the words through GAN.WORD_CONTEXT_LAYERS "
                         f"Transformer layers: set it to 1 or more, got {cfg.GAN.WORD_CONTEXT_LAYERS}")
    return NetG(ngf=cfg.TRAIN.NF, nz=cfg.GAN.Z_DIM, cond_dim=cfg.TEXT.EMBEDDING_DIM, imsize=_cfg_imsize(cfg),
                word_grid=cfg.GAN.WORD_GRID, word_layers=cfg.GAN.WORD_CONTEXT_LAYERS, word_affine=cfg.GAN.WORD_AFFINE,
                grid_noise=cfg.GAN.GRID_NOISE, mask_hidden=cfg.SSA.MASK_HIDDEN)


def build_discriminators(cfg) -> list[NetD]:
    """`[NetD]` (a list, like AttnGAN's one-D-per-branch factory), from TRAIN.NF, TEXT.EMBEDDING_DIM and image size;
    with GAN.D_WORD_CONTEXT_LAYERS > 0 (ours) its head reads a map of the words."""
    return [NetD(ndf=cfg.TRAIN.NF, cond_dim=cfg.TEXT.EMBEDDING_DIM, imsize=_cfg_imsize(cfg),
                 word_layers=cfg.GAN.D_WORD_CONTEXT_LAYERS)]


def _cfg_imsize(cfg) -> int:
    return cfg.TREE.BASE_SIZE * 2 ** (cfg.TREE.BRANCH_NUM - 1)
