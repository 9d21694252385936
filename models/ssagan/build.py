"""SSA-GAN NetG / NetD from a config tree (TRAIN.NF, GAN.Z_DIM, TEXT.EMBEDDING_DIM, TREE.*)."""
from __future__ import annotations

from models.ssagan.networks import NetD, NetG


def build_generator(cfg) -> NetG:
    """NetG from TRAIN.NF, GAN.Z_DIM, TEXT.EMBEDDING_DIM and TREE.BASE_SIZE·2^(TREE.BRANCH_NUM-1)."""
    return NetG(ngf=cfg.TRAIN.NF, nz=cfg.GAN.Z_DIM, cond_dim=cfg.TEXT.EMBEDDING_DIM, imsize=_cfg_imsize(cfg))


def build_discriminators(cfg) -> list[NetD]:
    """`[NetD]` (a list, like AttnGAN's one-D-per-branch factory), from TRAIN.NF, TEXT.EMBEDDING_DIM and image size."""
    return [NetD(ndf=cfg.TRAIN.NF, cond_dim=cfg.TEXT.EMBEDDING_DIM, imsize=_cfg_imsize(cfg))]


def _cfg_imsize(cfg) -> int:
    return cfg.TREE.BASE_SIZE * 2 ** (cfg.TREE.BRANCH_NUM - 1)
