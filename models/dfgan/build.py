"""DF-GAN networks from a config tree: DFGAN.VERSION picks 2022 (NetG / NetD / NetC) or 2021 (NetG2021 / SSA-GAN's
NetD); sizes from TRAIN.NF (nf of G and D), GAN.Z_DIM (noise), TEXT.EMBEDDING_DIM (the sentence, DF-GAN's cond_dim)
and the image size TREE.BASE_SIZE·2^(TREE.BRANCH_NUM-1)."""
from __future__ import annotations

from miscc.errors import InputError
from models.dfgan.networks import NetC, NetD, NetD2021, NetG, NetG2021

VERSIONS = (2022, 2021)


def version(cfg) -> int:
    v = cfg.DFGAN.VERSION
    if v not in VERSIONS:
        raise InputError(f"DFGAN.VERSION must be one of {list(VERSIONS)}, got {v!r}")
    return v


def image_size(cfg) -> int:
    return cfg.TREE.BASE_SIZE * 2 ** (cfg.TREE.BRANCH_NUM - 1)


def build_generator(cfg):
    """NetG of DFGAN.VERSION from TRAIN.NF, GAN.Z_DIM, TEXT.EMBEDDING_DIM and the image size."""
    if version(cfg) == 2022:
        return NetG(cfg.TRAIN.NF, cfg.GAN.Z_DIM, cfg.TEXT.EMBEDDING_DIM, image_size(cfg), 3)
    return NetG2021(cfg.TRAIN.NF, cfg.GAN.Z_DIM, cfg.TEXT.EMBEDDING_DIM, image_size(cfg))


def build_discriminator(cfg):
    """(NetD, NetC) for 2022; (NetD2021 with its COND_DNET, None) for 2021."""
    if version(cfg) == 2022:
        return NetD(cfg.TRAIN.NF, image_size(cfg), 3), NetC(cfg.TRAIN.NF, cfg.TEXT.EMBEDDING_DIM)
    return NetD2021(cfg.TRAIN.NF, cfg.TEXT.EMBEDDING_DIM, image_size(cfg)), None
