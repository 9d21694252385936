"""The generator families `main.py` can train and sample, by `MODEL` config value.

Each entry says how to build the trainer, how to build and load a generator for sampling, and how to call it:
`generate(net, noise, sent_emb, words_emb, mask) -> (final images, extras)` for evaluation sets and
`generate_stages(net, ...) -> (list of stage images, list of attention maps)` for example sentences, and for a
family whose generator predicts masks (SSA-GAN) `generate_masks(net, ...) -> (list of stage images, list of masks)`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from miscc.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    trainer: str  # "module:Class"
    build_generator: Callable
    load_generator: Callable  # (net, path) -> net, strict
    generate: Callable
    generate_stages: Callable
    save_extras: Callable | None = None  # (extras, row, path_stem) -> None, e.g. SSA-GAN masks
    # (net, text_encoder, dataset, out_root, *, z_dim, device, seed) -> None: more pictures for example sentences
    example_extras: Callable | None = None
    uses_text_dataset: Callable = lambda cfg: True  # False: the model reads its own data (Reed's hd5)
    generate_masks: Callable | None = None  # (net, noise, sent_emb, words_emb, mask) -> (stages, per-stage masks)

    def trainer_class(self):
        module, name = self.trainer.split(":")
        return getattr(importlib.import_module(module), name)


def _attngan_spec() -> ModelSpec:
    from miscc.checkpoint import load_checkpoint, load_state_dict_strict
    from models.attngan import build_generator

    def load(net, path):
        load_state_dict_strict(net, load_checkpoint(path, "generator (TRAIN.NET_G)"), path)
        return net

    def generate(net, noise, sent_emb, words_emb, mask):
        imgs, att, _, _ = net(noise, sent_emb, words_emb, mask)
        return imgs[-1], att

    def generate_stages(net, noise, sent_emb, words_emb, mask):
        imgs, att, _, _ = net(noise, sent_emb, words_emb, mask)
        return imgs, att

    return ModelSpec("trainers.attngan:AttnGANTrainer", build_generator, load, generate, generate_stages)


def _ssagan_spec() -> ModelSpec:
    from models.ssagan import build_generator, load_ssagan_generator
    from trainers.ssagan import gen_example_masks, save_last_mask

    def generate(net, noise, sent_emb, words_emb, mask):
        return net(noise, sent_emb)  # (image, per-stage masks); SSA-GAN uses no word features

    def generate_stages(net, noise, sent_emb, words_emb, mask):
        image, _ = net(noise, sent_emb)
        return [image], []  # masks are not word attention: trainers.ssagan.write_example_masks draws them

    def generate_masks(net, noise, sent_emb, words_emb, mask):
        image, masks = net(noise, sent_emb)  # masks [B, 1, h, w] per block, 4x4 up to the image size
        return [image], masks

    return ModelSpec("trainers.ssagan:SSAGANTrainer", build_generator, load_ssagan_generator, generate,
                     generate_stages, save_extras=save_last_mask, example_extras=gen_example_masks,
                     generate_masks=generate_masks)


def _gan_int_cls_spec() -> ModelSpec:
    """GAN-INT-CLS: G takes the sentence embedding only; with INTCLS.SRCNN_WEIGHTS each sampled image also gets an
    SRCNN-upscaled `<stem>_x<scale>.png` (see trainers.gan_int_cls)."""
    from trainers.gan_int_cls import (build_sampling_generator, generate, generate_stages, load_sampling_generator,
                                      save_extras)

    return ModelSpec("trainers.gan_int_cls:GANINTCLSTrainer", build_sampling_generator, load_sampling_generator,
                     generate, generate_stages, save_extras=save_extras,
                     uses_text_dataset=lambda cfg: cfg.INTCLS.TEXT_SOURCE != "hd5")


_SPECS = {"attngan": _attngan_spec, "ssagan": _ssagan_spec, "gan_int_cls": _gan_int_cls_spec,
          "dfgan": lambda: importlib.import_module("models.dfgan.family").dfgan_spec()}


def get_model_spec(name: str) -> ModelSpec:
    if name not in _SPECS:
        raise InputError(f"MODEL must be one of {sorted(_SPECS)}, got {name!r}")
    return _SPECS[name]()
