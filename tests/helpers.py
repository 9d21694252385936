"""Test helpers: a tiny `shapes` dataset and untrained DAMSM encoders saved in the released file format."""
from __future__ import annotations

import os

import torch

from datasets import build_dataset
from miscc.config import load_config
from models.damsm import build_image_encoder, build_text_encoder
from tools.make_shapes import generate_shapes


def tiny_shapes(root, n_train: int = 24, n_test: int = 8, seed: int = 0) -> str:
    """Generate (once) a small shapes dataset under `root` and return its folder."""
    out = os.path.join(str(root), f"shapes_{n_train}_{n_test}_{seed}")
    if not os.path.isfile(os.path.join(out, "captions.pickle")):
        generate_shapes(out, n_train=n_train, n_test=n_test, seed=seed, image_size=64)
    return out


def tiny_encoders(cfg, folder, epoch: int = 1) -> str:
    """Untrained text and image encoders for `cfg`, saved as text_encoder<epoch>.pth / image_encoder<epoch>.pth;
    returns the text-encoder path (for TRAIN.NET_E)."""
    os.makedirs(folder, exist_ok=True)
    n_words = build_dataset(cfg, "train").n_words
    torch.manual_seed(0)
    text_path = os.path.join(str(folder), f"text_encoder{epoch}.pth")
    torch.save(build_text_encoder(cfg, n_words).state_dict(), text_path)
    torch.save(build_image_encoder(cfg).state_dict(), os.path.join(str(folder), f"image_encoder{epoch}.pth"))
    return text_path


def small_config(path: str, data_dir: str, **overrides):
    """A shipped config made tiny for CPU tests (the file's structure, small widths)."""
    base = {"DATA_DIR": data_dir, "WORKERS": 0, "TRAIN.LOG_INTERVAL": 1, "TRAIN.IMAGE_INTERVAL": 1000,
            "DATA.CACHE_IMAGES": 1}
    base.update(overrides)
    return load_config(path, base)


# Tiny overrides shared by every family: 32-d text features, the small 32-px DAMSM image encoder, narrow nets, no
# second image encoder (the AttnGAN shapes config's TRAIN.PERCEPTUAL_EXTRA is a 128-d one).
TINY_RUN = {"TEXT.EMBEDDING_DIM": 32, "DAMSM.IMAGE_SIZE": 32, "GAN.GF_DIM": 4, "GAN.DF_DIM": 4, "TRAIN.NF": 4,
            "INTCLS.NGF": 8, "INTCLS.NDF": 8, "GPU_ID": -1, "TRAIN.PERCEPTUAL_EXTRA": ""}
RUN_CONFIGS = {"attngan": "cfg/shapes_attn.yml", "ssagan": "cfg/shapes_ssa.yml",
               "gan_int_cls": "cfg/shapes_gan_int_cls.yml"}


def tiny_run(root, family: str, data_dir: str, net_e: str, config: str | None = None, **overrides) -> str:
    """A run folder as main.py leaves it (config.yml, Model/<generator>) holding an untrained tiny generator of
    `family`, built from `config` (default: the family's shipped shapes config); returns the folder."""
    from miscc.config import save_config
    from models.registry import get_family

    cfg = small_config(config or RUN_CONFIGS[family], data_dir, **{**TINY_RUN, "TRAIN.NET_E": net_e, **overrides})
    folder = os.path.join(str(root), f"{family}_run")
    os.makedirs(os.path.join(folder, "Model"), exist_ok=True)
    torch.manual_seed(0)
    net = get_family(family).build_generator(cfg)
    name = "netG_001.pth" if family == "ssagan" else "netG_epoch_1.pth"
    torch.save(net.state_dict(), os.path.join(folder, "Model", name))
    save_config(cfg, os.path.join(folder, "config.yml"))
    return folder
