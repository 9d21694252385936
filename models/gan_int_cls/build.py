"""GAN-INT-CLS generator, discriminator and loss options from a config tree (INTCLS.*, GAN.Z_DIM)."""
from __future__ import annotations

from miscc.errors import InputError
from models.gan_int_cls.losses import IntClsLossOptions
from models.gan_int_cls.networks import MODEL_TYPES, discriminator, generator, weights_init


def build_gan_int_cls(cfg) -> tuple[generator, discriminator]:
    """G and D from the config tree (INTCLS.*, GAN.Z_DIM, TEXT.EMBEDDING_DIM), initialised with `weights_init`.

    The embedding size is INTCLS.EMBED_DIM when INTCLS.TEXT_SOURCE is `hd5` (Reed's 1024-d vectors), else our text
    encoder's TEXT.EMBEDDING_DIM. `vanilla_*` types are unconditional; `wgan-gp` uses the BN-free critic.
    """
    kind = cfg.INTCLS.TYPE
    if kind not in MODEL_TYPES:
        raise InputError(f"INTCLS.TYPE must be one of {sorted(MODEL_TYPES)}, got '{kind}'")
    if cfg.INTCLS.TEXT_SOURCE not in ("encoder", "hd5"):
        raise InputError(f"INTCLS.TEXT_SOURCE must be 'encoder' or 'hd5', got '{cfg.INTCLS.TEXT_SOURCE}'")
    loss_type, conditional = MODEL_TYPES[kind]
    embed_dim = 0
    if conditional:
        embed_dim = cfg.INTCLS.EMBED_DIM if cfg.INTCLS.TEXT_SOURCE == "hd5" else cfg.TEXT.EMBEDDING_DIM
    netG = generator(embed_dim, cfg.INTCLS.PROJECTED_DIM, cfg.GAN.Z_DIM, ngf=cfg.INTCLS.NGF,
                     noise_first=cfg.INTCLS.NOISE_FIRST)
    netD = discriminator(embed_dim, cfg.INTCLS.PROJECTED_DIM, ndf=cfg.INTCLS.NDF, wgan=loss_type != "gan",
                         batch_norm=loss_type != "wgan-gp", minibatch=cfg.INTCLS.MINIBATCH_DISC)
    netG.apply(weights_init)
    netD.apply(weights_init)
    return netG, netD


def build_loss_options(cfg) -> IntClsLossOptions:
    """Loss options from INTCLS.*; `vanilla_*` types turn CLS and INT off (there is no text)."""
    kind = cfg.INTCLS.TYPE
    if kind not in MODEL_TYPES:
        raise InputError(f"INTCLS.TYPE must be one of {sorted(MODEL_TYPES)}, got '{kind}'")
    loss_type, conditional = MODEL_TYPES[kind]
    return IntClsLossOptions(
        loss_type=loss_type, cls=cfg.INTCLS.CLS and conditional, cls_weight=cfg.INTCLS.CLS_WEIGHT,
        interp=cfg.INTCLS.INT and conditional, int_weight=cfg.INTCLS.INT_WEIGHT, real_label=cfg.INTCLS.REAL_LABEL,
        gp_lambda=cfg.INTCLS.GP_LAMBDA, l1_coef=cfg.INTCLS.L1_COEF, l2_coef=cfg.INTCLS.L2_COEF)
