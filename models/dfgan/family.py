"""The DF-GAN family's declaration (MODEL dfgan): how to build and load its generator and how to call it.

`dfgan_spec()` is what `trainers.registry` lists under `dfgan`. DFGAN.VERSION picks DF-GAN 2022 (Tao et al.,
CVPR 2022; tobran/DF-GAN `code/models/GAN.py`) or 2021 (`9015356` `code/model.py`). Sizes: TRAIN.NF (nf of G and D),
GAN.Z_DIM (noise), TEXT.EMBEDDING_DIM (the sentence, DF-GAN's cond_dim), image size TREE.BASE_SIZE·2^(BRANCH_NUM-1).
Snapshots: `netG_epoch_%d.pth` (the generator, as every family here writes it) and, for 2022, DF-GAN's own
`state_epoch_%03d.pth`; TRAIN.NET_G may be either, or a released one (`models.dfgan.checkpoint.load_generator`).
Sampling noise: plain normal, or with EVAL.TRUNCATION DF-GAN's truncated normal ([-2, 2]·EVAL.TRUNC_RATE), which
`main.py` / `trainers.sampling` apply for every family.
"""
from __future__ import annotations

from miscc.errors import InputError

VERSIONS = (2022, 2021)
NETG_NAME = "netG_epoch_%d.pth"
NETD_NAME_2021 = "netD_%03d.pth"


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
        from models.dfgan.networks import NetG
        return NetG(cfg.TRAIN.NF, cfg.GAN.Z_DIM, cfg.TEXT.EMBEDDING_DIM, image_size(cfg), 3)
    from models.dfgan.networks_2021 import NetG
    return NetG(cfg.TRAIN.NF, cfg.GAN.Z_DIM, cfg.TEXT.EMBEDDING_DIM, image_size(cfg))


def build_discriminator(cfg):
    """(NetD, NetC) for 2022; (NetD with its COND_DNET, None) for 2021."""
    if version(cfg) == 2022:
        from models.dfgan.networks import NetC, NetD
        return NetD(cfg.TRAIN.NF, image_size(cfg), 3), NetC(cfg.TRAIN.NF, cfg.TEXT.EMBEDDING_DIM)
    from models.dfgan.networks_2021 import NetD
    return NetD(cfg.TRAIN.NF, cfg.TEXT.EMBEDDING_DIM, image_size(cfg)), None


def load_generator(net, path: str):
    from models.dfgan.checkpoint import load_generator as load

    return load(net, path)


def generate(net, noise, sent_emb, words_emb, mask):
    """(images, None): DF-GAN uses the sentence only."""
    return net(noise, sent_emb), None


def generate_stages(net, noise, sent_emb, words_emb, mask):
    """([images], []): one stage, no attention maps."""
    return [net(noise, sent_emb)], []


def dfgan_spec():
    from trainers.registry import ModelSpec

    return ModelSpec("models.dfgan.trainer:DFGANTrainer", build_generator, load_generator, generate, generate_stages)
