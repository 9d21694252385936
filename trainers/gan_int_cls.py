"""GAN-INT-CLS training (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016) on `BaseTrainer`,
following aelnouby/Text-to-Image-Synthesis `trainer.py` (`_train_gan`, `_train_wgan`), plus Reed's INT, WGAN-GP and
our text encoders.

Text input (INTCLS.TEXT_SOURCE):

* `encoder`: captions of our `TextDataset` (64 px: TREE.BRANCH_NUM 1, BASE_SIZE 64) encoded by the frozen text encoder
  of TRAIN.NET_E (RNN or BERT DAMSM); the embedding is its sentence vector (TEXT.EMBEDDING_DIM). CLS's wrong image is
  a random image of a *different class* (`TextDataset.wrong_image_index`), added per item by `WrongImageDataset`.
* `hd5`: Reed's hd5 file (INTCLS.HD5_PATH, `miscc.reed_hd5.ReedHd5Dataset`) with precomputed INTCLS.EMBED_DIM-d
  embeddings (1024 for Reed's char-CNN-RNN). Such a generator has no text encoder: new sentences cannot be encoded,
  so sample it from the file's test split (`sample_hd5`, `python -m trainers.gan_int_cls`), unless the file was
  made from our text encoder by `tools.convert_hd5`.

One iteration (INTCLS.TYPE): D step on real / fake (+ wrong with CLS) with the loss of `models.gan_int_cls.d_loss`,
then, when due, a G step with fresh noise (`g_loss`: adversarial, + INT on interpolated texts, + L2_COEF feature
matching, + L1_COEF L1). `gan`: BCE, D's real target REAL_LABEL (one-sided smoothing), G step every batch. `wgan`:
critic with weights clipped to +-CLIP_VALUE, `critic_iterations` D steps per G step (100 while the G iteration
< 25 or every 500th, else DITER). `wgan-gp`: BN-free critic + GP_LAMBDA gradient penalty, DITER D steps per G step
(Gulrajani et al. Alg. 1: n_critic = 5, no warm-up). `vanilla_gan` / `vanilla_wgan`: unconditional, no CLS/INT.

Critic loop and `BaseTrainer` steps: as in the port, every batch is one D iteration, so a `BaseTrainer` step (and
TRAIN.MAX_STEPS) counts D iterations = batches. G steps after the due number of D iterations, on that last batch's
texts and images, and also at the last batch of an epoch (the port's inner loop ends with the epoch; the count
restarts each epoch). For `gan` (one D and one G step per batch) a step is also a G iteration. `gen_iteration` (the
number of G steps) is part of the training state. The losses of the latest G step are reported with every step.

Deviations from the port, each deliberate: the D-step fakes are made without gradient (the port made them with a
graph and cleared G's stray gradients); WGAN weights are clipped after every D step (WGAN Alg. 1) and once at
start, so G's step also sees a clipped critic (the port clipped before each D step, so G met the last unclipped
update); the wrong image is of a different class (the port compared h5py objects by identity); snapshots work
for every type (the port's wgan/vanilla paths raised TypeError at the first save); INT is implemented (issue #17).
The gradient penalty is computed in float32 outside autocast. L1_COEF and L2_COEF apply to every type (the port
used them with `gan` only): set both to 0 to reproduce its WGAN.

Snapshots (`Model/`, every TRAIN.SNAPSHOT_INTERVAL epochs, plain state dicts without `module.`): `gen_<epoch>.pth`
and `disc_<epoch>.pth` (the port's names; the live G and D), and `netG_epoch_<epoch>.pth` (the sampling generator:
G's EMA with TRAIN.EMA, else the live G) for `main.py`. TRAIN.NET_G loads a port or our `gen_*`/`netG_epoch_*`
file (with or without `module.`), with TRAIN.B_NET_D also `disc_<epoch>.pth` beside it.

Sampling: with INTCLS.SRCNN_WEIGHTS, the registry's generator is an `UpscalingGenerator` and every image written
by the sampler also gets an SRCNN-upscaled copy `<stem>_x<SRCNN_SCALE>.png` (see `generate`, `save_extras`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from datasets import CorruptImageError, prepare_data
from miscc.checkpoint import atomic_save
from miscc.config import resolve_path
from miscc.errors import InputError, MissingFileError, run_cli
from miscc.reed_hd5 import ReedHd5Dataset
from miscc.vis import image_grid, save_png
from models.gan_int_cls import (MODEL_TYPES, build_gan_int_cls, build_loss_options, clip_weights, critic_iterations,
                                d_loss, g_loss, generate_with_interpolation, generator, gradient_penalty,
                                load_gan_int_cls)
from models.srcnn import SRCNN, load_srcnn, upscale
from trainers.base import EMA, BaseTrainer, loop_settings
from trainers.common import decode_ids, epoch_from_name, load_damsm
from trainers.runtime import average_gradients, broadcast_parameters, unwrap, wrap_ddp

TEXT_SOURCES = ("encoder", "hd5")
IMAGE_SIZE = 64  # the port's (and Reed's) resolution; `build_gan_int_cls` builds 64-px nets


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------

class WrongImageDataset(Dataset):
    """A `TextDataset` whose items also carry CLS's mismatched image: `wrong_img` (the last branch, [3, 64, 64],
    cropped and flipped like the right image) of a random image of a different class, and its `wrong_index`.

    The pick uses `TextDataset.wrong_image_index` (torch's global generator, like the dataset's other draws). With
    DATA.SKIP_CORRUPT an unreadable wrong image is replaced by another pick.
    """

    MAX_TRIES = 10

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        for attempt in range(self.MAX_TRIES):
            j = self.base.wrong_image_index(item["index"])
            try:
                wrong = self.base.get_imgs(j)[-1]
                break
            except CorruptImageError:
                if not self.base.skip_corrupt or attempt == self.MAX_TRIES - 1:
                    raise
        item["wrong_img"], item["wrong_index"] = wrong, j
        return item


@dataclass
class IntClsBatch:
    """What one GAN-INT-CLS step needs, whatever the text source. `embed` is None for unconditional types,
    `wrong_images` None without CLS; `captions` (text) only for the fixed visualisation batch."""
    images: torch.Tensor  # [B, 3, 64, 64] in [-1, 1]
    embed: torch.Tensor | None  # [B, D] float32
    wrong_images: torch.Tensor | None
    captions: list | None = None

    def __len__(self) -> int:
        return self.images.size(0)


def text_source(cfg) -> str:
    source = cfg.INTCLS.TEXT_SOURCE
    if source not in TEXT_SOURCES:
        raise InputError(f"INTCLS.TEXT_SOURCE must be one of {TEXT_SOURCES}, got {source!r}")
    return source


def open_hd5(cfg, split: str = "train") -> ReedHd5Dataset:
    """The INTCLS.HD5_PATH split as a `ReedHd5Dataset` of 64-px images."""
    if not cfg.INTCLS.HD5_PATH:
        raise MissingFileError("INTCLS.TEXT_SOURCE is 'hd5' but INTCLS.HD5_PATH is empty: set it to Reed's "
                                "birds.hdf5 / flowers.hdf5 or a file made by `python -m tools.convert_hd5`")
    path = resolve_path(cfg.INTCLS.HD5_PATH)
    if not os.path.isfile(path):
        raise MissingFileError(f"INTCLS.HD5_PATH not found: {path} (Reed's hd5 file, e.g. birds.hdf5 from the "
                                "GAN-INT-CLS port's README, or one made by `python -m tools.convert_hd5`)")
    return ReedHd5Dataset(path, split, image_size=IMAGE_SIZE)


def check_image_size(dataset) -> None:
    if dataset.imsize != IMAGE_SIZE:
        raise InputError(f"GAN-INT-CLS trains {IMAGE_SIZE}x{IMAGE_SIZE} images, but the dataset gives "
                         f"{dataset.imsize}x{dataset.imsize} (TREE.BASE_SIZE={dataset.base_size}, "
                         f"TREE.BRANCH_NUM={dataset.branch_num}); set TREE.BRANCH_NUM: 1 and TREE.BASE_SIZE: 64")


def check_embed_dim(embed: torch.Tensor | None, expected: int, source: str) -> None:
    if embed is not None and embed.size(1) != expected:
        raise InputError(f"{source} gives {embed.size(1)}-d text embeddings but the model expects {expected} "
                         "(INTCLS.EMBED_DIM for TEXT_SOURCE hd5, TEXT.EMBEDDING_DIM for TEXT_SOURCE encoder)")


# --------------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------------

class GANINTCLSTrainer(BaseTrainer):
    """GAN-INT-CLS on `BaseTrainer` (see the module docstring). `train_set`: a 64-px `TextDataset` for TEXT_SOURCE
    `encoder`; for `hd5` it may be None or anything else (the INTCLS.HD5_PATH train split is used) or a
    `ReedHd5Dataset`."""

    N_FIXED = 8

    def __init__(self, cfg, rt, output_dir, train_set):
        self.options = build_loss_options(cfg)  # validates INTCLS.TYPE
        self.loss_type, self.conditional = MODEL_TYPES[cfg.INTCLS.TYPE]
        self.source = text_source(cfg)
        if cfg.INTCLS.DITER < 1:
            raise InputError(f"INTCLS.DITER must be >= 1, got {cfg.INTCLS.DITER}")
        if cfg.INTCLS.CLIP_VALUE <= 0:
            raise InputError(f"INTCLS.CLIP_VALUE must be > 0, got {cfg.INTCLS.CLIP_VALUE}")
        self.diter, self.clip_value = cfg.INTCLS.DITER, cfg.INTCLS.CLIP_VALUE
        self.z_dim = cfg.GAN.Z_DIM
        self.text_set = None  # the TextDataset (encoder source), for decoding captions
        self.text_encoder = None
        if self.source == "hd5":
            if not isinstance(train_set, ReedHd5Dataset):
                train_set = open_hd5(cfg, "train")
            self.embed_dim = cfg.INTCLS.EMBED_DIM
            loader_set = train_set
        else:
            if train_set is None or not hasattr(train_set, "wrong_image_index"):
                raise TypeError("INTCLS.TEXT_SOURCE 'encoder' needs a TextDataset (datasets.build_dataset), got "
                                f"{type(train_set).__name__}")
            check_image_size(train_set)
            self.text_set = train_set
            self.embed_dim = cfg.TEXT.EMBEDDING_DIM
            if self.conditional:
                self.text_encoder, _ = load_damsm(cfg, train_set.n_words, rt.device, with_image_encoder=False)
            loader_set = WrongImageDataset(train_set) if self.options.cls else train_set
        if len(loader_set) < cfg.TRAIN.BATCH_SIZE:
            raise InputError(f"TRAIN.BATCH_SIZE={cfg.TRAIN.BATCH_SIZE} is larger than the {len(loader_set)} "
                             "training items; every batch would be dropped")

        torch.manual_seed(cfg.SEED)  # identical initial weights on every rank
        net_g, self.netD = build_gan_int_cls(cfg)
        net_g, self.netD = net_g.to(rt.device), self.netD.to(rt.device)
        start_epoch = self._load_release_weights(cfg, net_g) if cfg.TRAIN.NET_G else 0
        if self.loss_type == "wgan":
            clip_weights(self.netD, self.clip_value)
        broadcast_parameters(self.netD, rt)  # G is broadcast by DDP itself
        self.netG = wrap_ddp(net_g, rt, cfg.TRAIN.SYNC_BN)
        betas = (cfg.TRAIN.BETA1, cfg.TRAIN.BETA2)
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=cfg.TRAIN.GENERATOR_LR, betas=betas)
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=cfg.TRAIN.DISCRIMINATOR_LR, betas=betas)
        self.ema = EMA(self.netG, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA else None
        self.gen_iteration = 0  # G steps so far (the port's gen_iteration)
        self._critic_done = 0  # D iterations since the last G step
        self._batches_left = None  # batches left in the current epoch (set by epoch_loader)
        self._last_g: dict = {}
        super().__init__(cfg, rt, output_dir, loader_set, **loop_settings(cfg))
        self.epoch = start_epoch
        self.fixed = self._fixed_batch()

    # ---- state --------------------------------------------------------------------------------------------------
    def modules(self):
        mods = {"netG": self.netG, "netD": self.netD}
        if self.ema is not None:
            mods["netG_ema"] = self.ema.shadow
        return mods

    def optimizers(self):
        return {"optG": self.optG, "optD": self.optD}

    def extra_state(self):
        return {"gen_iteration": self.gen_iteration, "critic_done": self._critic_done}

    def load_extra_state(self, state):
        self.gen_iteration = int(state.get("gen_iteration", 0))
        self._critic_done = int(state.get("critic_done", 0))

    def _load_release_weights(self, cfg, net_g) -> int:
        """TRAIN.NET_G (`gen_<e>.pth` of the port, or ours), with B_NET_D also `disc_<e>.pth` beside it; returns the
        epoch to continue from (the one after <e>, as AttnGAN's NET_G resume)."""
        path = resolve_path(cfg.TRAIN.NET_G)
        epoch = epoch_from_name(path)
        load_gan_int_cls(net_g, path)
        if cfg.TRAIN.B_NET_D:
            load_gan_int_cls(self.netD, os.path.join(os.path.dirname(path), f"disc_{epoch}.pth"))
        return epoch + 1

    # ---- data ---------------------------------------------------------------------------------------------------
    def epoch_loader(self, epoch):
        loader = super().epoch_loader(epoch)
        self._batches_left = len(loader) - self.epoch_batch  # a mid-epoch resume continues the epoch's counts
        if self.epoch_batch == 0:
            self._critic_done = 0  # the port's critic count restarts with the epoch
        return loader

    def make_batch(self, raw) -> IntClsBatch:
        device = self.rt.device
        if self.source == "hd5":
            embed = raw["right_embed"].to(device).float() if self.conditional else None
            wrong = raw["wrong_images"].to(device) if self.options.cls else None
            return IntClsBatch(raw["right_images"].to(device), embed, wrong)
        batch = prepare_data(raw, device)
        embed = None
        if self.conditional:
            with torch.no_grad():
                _, sent_emb = self.text_encoder(batch.captions, batch.cap_lens)
            embed = sent_emb.float().detach()
        wrong = raw["wrong_img"][batch.order].to(device) if self.options.cls else None
        return IntClsBatch(batch.imgs[-1], embed, wrong)

    # ---- one iteration ------------------------------------------------------------------------------------------
    def _g_step_due(self) -> bool:
        """Count this batch's D iteration; True when G steps after it (see the module docstring)."""
        self._critic_done += 1
        if self._batches_left is not None:
            self._batches_left -= 1
        if self.loss_type == "gan":
            due = True
        else:
            n = critic_iterations(self.gen_iteration, self.diter) if self.loss_type == "wgan" else self.diter
            due = self._critic_done >= n or (self._batches_left is not None and self._batches_left <= 0)
        if due:
            self._critic_done = 0
        return due

    def _d_step(self, b: IntClsBatch) -> dict:
        rt, o = self.rt, self.options
        noise = torch.randn(len(b), self.z_dim, device=rt.device)
        with torch.no_grad(), rt.autocast():
            fake = self.netG(b.embed, noise)
        # The penalty is added below in float32, outside autocast; d_loss gives the critic terms.
        terms = dataclasses.replace(o, loss_type="wgan") if o.loss_type == "wgan-gp" else o
        with rt.autocast():
            out = d_loss(self.netD, b.images, b.embed, fake, terms, b.wrong_images)
        loss = out.loss.float()
        extra = {}
        if o.loss_type == "wgan-gp":
            gp = gradient_penalty(self.netD, b.images.float(), fake.float(), b.embed, o.gp_lambda)
            loss = loss + gp
            extra["GP"] = gp.detach()
        losses = {"errD": loss.detach(), "D_real": out.real_score, "D_fake": out.fake_score}
        if o.cls:
            losses["D_wrong"] = out.wrong_score
        losses.update(extra)
        self.optD.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients(self.netD, rt)
        self.scaler.step(self.optD)
        if self.loss_type == "wgan":
            clip_weights(self.netD, self.clip_value)
        return losses

    def _g_step(self, b: IntClsBatch) -> dict:
        rt, o = self.rt, self.options
        bsz = len(b)
        self.netD.requires_grad_(False)
        int_fake = int_embed = None
        with rt.autocast():
            if o.interp:
                noise = torch.randn(bsz + bsz // 2, self.z_dim, device=rt.device)
                fake, int_fake, int_embed = generate_with_interpolation(self.netG, b.embed, noise)
            else:
                fake = self.netG(b.embed, torch.randn(bsz, self.z_dim, device=rt.device))
            out = g_loss(self.netD, fake, b.embed, o, real_images=b.images, int_fake_images=int_fake,
                         int_embed=int_embed)
        loss = out.loss.float()
        self.optG.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optG)
        self.netD.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(self.netG, self.step)
        self.gen_iteration += 1
        losses = {"errG": loss.detach(), "G_adv": out.adv}
        if o.interp:
            losses["G_int"] = out.interp
        if o.l2_coef > 0:
            losses["G_fm"] = out.feature_matching
        if o.l1_coef > 0:
            losses["G_l1"] = out.l1
        return losses

    def train_step(self, batch: IntClsBatch) -> dict:
        losses = self._d_step(batch)
        if self._g_step_due():
            self._last_g = self._g_step(batch)
        self.scaler.update()
        return {**losses, **self._last_g}

    # ---- outputs ------------------------------------------------------------------------------------------------
    def sampling_generator(self) -> nn.Module:
        return self.ema.shadow if self.ema is not None else unwrap(self.netG)

    def save_snapshot(self, epoch):
        atomic_save(unwrap(self.netG).state_dict(), os.path.join(self.model_dir, f"gen_{epoch}.pth"))
        atomic_save(self.netD.state_dict(), os.path.join(self.model_dir, f"disc_{epoch}.pth"))
        atomic_save(self.sampling_generator().state_dict(), os.path.join(self.model_dir, f"netG_epoch_{epoch}.pth"))
        self.log_images(self.step, tag=f"epoch_{epoch}")

    def _fixed_batch(self):
        """Up to N_FIXED training items (text, image) and fixed noise for the sample grids."""
        n = min(self.N_FIXED, len(self.train_set))
        if self.source == "hd5":
            items = [self.train_set[i] for i in range(n)]
            embed = torch.stack([it["right_embed"] for it in items]).to(self.rt.device).float()
            check_embed_dim(embed, self.embed_dim, f"{self.train_set.path}")
            images = torch.stack([it["right_images"] for it in items]).to(self.rt.device)
            batch = IntClsBatch(images, embed if self.conditional else None, None, [it["txt"] for it in items])
        else:
            raw = default_collate([self.text_set[i] for i in range(n)])
            prepared = prepare_data(raw, self.rt.device)
            embed = None
            if self.conditional:
                with torch.no_grad():
                    embed = self.text_encoder(prepared.captions, prepared.cap_lens)[1].float()
                check_embed_dim(embed, self.embed_dim, f"the text encoder {self.cfg.TRAIN.NET_E or 'TEXT.DAMSM_NAME'}")
            captions = [decode_ids(self.text_set, prepared.captions[i, :int(prepared.cap_lens[i])].tolist())
                        for i in range(n)]
            batch = IntClsBatch(prepared.imgs[-1], embed, None, captions)
        noise = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(self.seed))
        return batch, noise.to(self.rt.device)

    @torch.no_grad()
    def log_images(self, step, tag=None):
        """Samples of the sampling generator for the fixed texts and noise, captioned, as `Image/G_<tag>.png`."""
        batch, noise = self.fixed
        netG = self.sampling_generator()
        was_training = netG.training
        netG.eval()
        fake = netG(batch.embed, noise)
        netG.train(was_training)
        grid = image_grid(fake, batch.captions if self.conditional else None, ncol=4)
        grid.save(os.path.join(self.image_dir, f"G_{tag or f'step_{step}'}.png"))
        self.logger.image(step, "samples", torch.from_numpy(np.asarray(grid, np.float32).transpose(2, 0, 1) / 255))


# --------------------------------------------------------------------------------------------------------------------
# Sampling (used by trainers.registry)
# --------------------------------------------------------------------------------------------------------------------

class UpscalingGenerator(nn.Module):
    """A GAN-INT-CLS `generator` plus an SRCNN (INTCLS.SRCNN_WEIGHTS) for sampling: `forward` is the generator's;
    `generate` also returns the `scale`-times SRCNN-upscaled images, which `save_extras` writes.

    SRCNN is applied as `models.srcnn.upscale` does (bicubic x scale, then SRCNN on Y): real 64 -> 192 px
    super-resolution, not the kmeagle1515/T2I fork's downscale-and-restore to 63 px (reference notes A4).
    """

    def __init__(self, netG: generator, srcnn: SRCNN, scale: int):
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise InputError(f"INTCLS.SRCNN_SCALE must be a positive integer, got {scale!r}")
        self.netG, self.srcnn, self.scale = netG, srcnn, scale

    @property
    def embed_dim(self) -> int:
        return self.netG.embed_dim

    def forward(self, embed, z):
        return self.netG(embed, z)


def build_sampling_generator(cfg) -> nn.Module:
    """The generator `main.py` samples with: a `generator`, or an `UpscalingGenerator` when INTCLS.SRCNN_WEIGHTS
    names yjn870 SRCNN weights (e.g. srcnn_x3.pth; the scale is INTCLS.SRCNN_SCALE)."""
    netG = build_gan_int_cls(cfg)[0]
    if not cfg.INTCLS.SRCNN_WEIGHTS:
        return netG
    path = resolve_path(cfg.INTCLS.SRCNN_WEIGHTS)
    if not os.path.isfile(path):
        raise MissingFileError(f"INTCLS.SRCNN_WEIGHTS not found: {path} (yjn870/SRCNN-pytorch weights, e.g. "
                                "srcnn_x3.pth; leave the key empty to sample without super-resolution)")
    return UpscalingGenerator(netG, load_srcnn(path), cfg.INTCLS.SRCNN_SCALE)


def load_sampling_generator(net: nn.Module, path: str) -> nn.Module:
    """Load `gen_<e>.pth` / `netG_epoch_<e>.pth` (ours or the port's, `module.` or not) strictly into the G."""
    load_gan_int_cls(net.netG if isinstance(net, UpscalingGenerator) else net, path)
    return net


def _text_input(net: nn.Module, sent_emb: torch.Tensor | None) -> torch.Tensor | None:
    """The generator's text input: None for unconditional models, else `sent_emb` of the size it was trained on."""
    dim = net.embed_dim
    if not dim:
        return None
    if sent_emb is None or sent_emb.dim() != 2 or sent_emb.size(1) != dim:
        got = None if sent_emb is None else tuple(sent_emb.shape)
        raise InputError(
            f"this GAN-INT-CLS generator takes {dim}-d text embeddings, but the text encoder gave {got}: new "
            "sentences cannot be encoded for it. A generator trained from an hd5 file (INTCLS.TEXT_SOURCE hd5, e.g. "
            "Reed's 1024-d char-CNN-RNN vectors) can only be sampled from that file's embeddings: run "
            "`python -m trainers.gan_int_cls --cfg <config> --net_g <gen_N.pth>`")
    return sent_emb


def generate(net, noise, sent_emb, words_emb=None, mask=None):
    """(images [B, 3, 64, 64] in [-1, 1], extras). The generator takes the sentence embedding only; `extras` is None,
    or for an `UpscalingGenerator` {'images': uint8 [B, 3, 64s, 64s], 'scale': s} for `save_extras`."""
    images = net(_text_input(net, sent_emb), noise)
    if not isinstance(net, UpscalingGenerator):
        return images, None
    return images, {"images": upscale(images.float(), net.srcnn, net.scale), "scale": net.scale}


def generate_stages(net, noise, sent_emb, words_emb=None, mask=None):
    """([64-px images] + [the SRCNN-upscaled images, as a second 'stage', when there is an SRCNN], no attention)."""
    images, extras = generate(net, noise, sent_emb, words_emb, mask)
    stages = [images]
    if extras is not None:
        stages.append(extras["images"].float() / 127.5 - 1.0)
    return stages, []


def save_extras(extras, row: int, path_stem: str) -> None:
    """Write the SRCNN copy of image `row` as `<path_stem>_x<scale>.png` (nothing without SRCNN).

    The copies lie beside the 64-px images (the convention of `tools.srcnn_upscale`); metrics over a folder must
    skip `*_x<scale>.png` or read the file list from captions.json.
    """
    if extras is None:
        return
    img = extras["images"][row].permute(1, 2, 0).cpu().numpy()
    path = f"{path_stem}_x{extras['scale']}.png"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(img).save(path)


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


@torch.no_grad()
def sample_hd5(net, dataset: ReedHd5Dataset, out_dir: str, *, z_dim: int, device, batch_size: int = 64,
               seed: int = 0, limit: int | None = None, workers: int = 0) -> dict:
    """The port's `predict()` for an hd5 split: one image per example from its stored embedding, written as
    `<out_dir>/single/<example>.png` (the hd5 group name, e.g. `image_03001_2`; plus `_x<s>.png` with SRCNN), and
    `captions.json` with each file's caption, example name and class, as `trainers.sampling.sample_test_set`.

    The port named files by the caption's first 100 characters (duplicates overwrote each other) and truncated
    when converting to uint8; we name by example and round.
    """
    single = os.path.join(out_dir, "single")
    os.makedirs(single, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    target = len(dataset) if limit is None else min(limit, len(dataset))
    records, index = [], 0
    for raw in loader:
        b = min(raw["right_embed"].size(0), target - index)
        noise = torch.randn(b, z_dim, generator=g).to(device)
        images, extras = generate(net, noise, raw["right_embed"][:b].to(device).float())
        for i in range(b):
            key = dataset.keys[index]
            rel = f"{_safe_name(key)}.png"
            save_png(images[i], os.path.join(single, rel))
            save_extras(extras, i, os.path.join(single, _safe_name(key)))
            records.append({"file": rel, "key": key, "caption": raw["txt"][i], "class": raw["class"][i]})
            index += 1
        if index >= target:
            break
    path = os.path.join(out_dir, "captions.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=0)
    return {"n": len(records), "captions": path, "folder": single}


def main(argv=None) -> int:
    """`python -m trainers.gan_int_cls --cfg <config> --net_g <gen_N.pth> [--split test] [--out DIR] [--n N]`:
    sample a generator from the embeddings of an hd5 split (INTCLS.HD5_PATH)."""
    from miscc.config import add_config_arguments, config_from_args
    from trainers.runtime import setup_runtime

    parser = argparse.ArgumentParser(prog="python -m trainers.gan_int_cls",
                                     description="Sample a GAN-INT-CLS generator from an hd5 split's embeddings")
    add_config_arguments(parser)
    parser.add_argument("--net_g", default=None, help="generator file (default TRAIN.NET_G), e.g. gen_190.pth")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--out", default=None, help="output folder (default <net_g without .pth>/<split>_hd5)")
    parser.add_argument("--n", type=int, default=None, help="at most this many images (default: the whole split)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    net_g = args.net_g or cfg.TRAIN.NET_G
    if not net_g:
        parser.error("give --net_g or set TRAIN.NET_G")
    rt = setup_runtime(cfg.GPU_ID)
    dataset = open_hd5(cfg, args.split)
    path = resolve_path(net_g)
    net = load_sampling_generator(build_sampling_generator(cfg), path).to(rt.device).eval()
    out = args.out or os.path.join(os.path.splitext(path)[0], f"{args.split}_hd5")
    result = sample_hd5(net, dataset, out, z_dim=cfg.GAN.Z_DIM, device=rt.device, batch_size=cfg.EVAL.BATCH_SIZE,
                        seed=cfg.EVAL.SEED, limit=args.n, workers=cfg.WORKERS)
    print(f"wrote {result['n']} images to {result['folder']} (captions: {result['captions']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
