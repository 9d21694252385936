"""GAN-INT-CLS training (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016) on `BaseTrainer`,
following aelnouby/Text-to-Image-Synthesis `trainer.py` (`_train_gan`, `_train_wgan`), plus Reed's INT, WGAN-GP and
our text encoders.

Text input (INTCLS.TEXT_SOURCE):

* `encoder`: captions of our `TextDataset` (64 px: TREE.BRANCH_NUM 1, BASE_SIZE 64) encoded by the frozen text encoder
  of TRAIN.NET_E (RNN or BERT DAMSM); the embedding is its sentence vector (TEXT.EMBEDDING_DIM). CLS's wrong image is
  a random image of a *different class* (`TextDataset.wrong_image_index`), added per item by `WrongImageDataset`.
* `hd5`: Reed's hd5 file (INTCLS.HD5_PATH, `miscc.reed_hd5.ReedHd5Dataset`) with precomputed INTCLS.EMBED_DIM-d
  embeddings (1024 for Reed's char-CNN-RNN). Such a generator has no text encoder: new sentences cannot be encoded,
  so sample it from the file's test split (`sample_hd5`, `python -m tools.sample_hd5`), unless the file was
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

Ours, off by default (for `shapes`): TRAIN.PIXEL_WEIGHT adds that weight times the squared pixel distance of G's
images to their captions' real images (`miscc.losses.pixel_loss`; the port's L1 has the per-pixel median as its
optimum, which for a small object on an open background is the background), and TRAIN.PAIRED_CANDIDATES = k > 1
trains, of k noise draws per caption (rendered without gradients), the one whose image lies nearest the real one
(IMLE, as AttnGAN's and SSA-GAN's trainers), so the noise, not the loss's average, decides what the caption leaves
open.

Snapshots (`Model/`, every TRAIN.SNAPSHOT_INTERVAL epochs, plain state dicts without `module.`): `gen_<epoch>.pth`
and `disc_<epoch>.pth` (the port's names; the live G and D), and `netG_epoch_<epoch>.pth` (the sampling generator:
G's EMA with TRAIN.EMA, else the live G) for `main.py`. TRAIN.NET_G loads a port or our `gen_*`/`netG_epoch_*`
file (with or without `module.`), with TRAIN.B_NET_D also `disc_<epoch>.pth` beside it.

Sampling: with INTCLS.SRCNN_WEIGHTS, the registry's generator is an `UpscalingGenerator` and every image written
by the sampler also gets an SRCNN-upscaled copy `<stem>_x<SRCNN_SCALE>.png` (`models.gan_int_cls.sampling`).
"""
from __future__ import annotations

import dataclasses
import os

import torch
from torch.utils.data import default_collate

from datasets import prepare_data
from miscc.checkpoint import atomic_save
from miscc.config import resolve_path
from miscc.errors import InputError
from miscc.losses import pixel_loss
from miscc.modules import eval_mode, frozen
from miscc.reed_hd5 import ReedHd5Dataset
from miscc.vis import image_grid, pil_to_chw
from models.gan_int_cls import (MODEL_TYPES, build_gan_int_cls, build_loss_options, clip_weights, critic_iterations,
                                d_loss, g_loss, generate_with_interpolation, gradient_penalty, load_gan_int_cls)
from models.gan_int_cls.dataset import (IntClsBatch, WrongImageDataset, check_embed_dim, check_image_size, open_hd5,
                                        text_source)
from models.gan_int_cls.family import FAMILY
from trainers.base import EMA, BaseTrainer, loop_settings
from trainers.common import decode_ids, epoch_from_name, load_damsm, nearest_draws
from trainers.optim import gan_step
from trainers.runtime import broadcast_parameters, unwrap, wrap_ddp



def paired_settings(cfg) -> tuple[float, int]:
    """(TRAIN.PIXEL_WEIGHT, TRAIN.PAIRED_CANDIDATES) for GAN-INT-CLS, checked: IMLE's choice needs a paired term
    to train the chosen draw against (the pixel term or INTCLS.L1_COEF)."""
    weight, k = cfg.TRAIN.PIXEL_WEIGHT, cfg.TRAIN.PAIRED_CANDIDATES
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise InputError(f"TRAIN.PIXEL_WEIGHT is {weight!r}: expected a number >= 0 (0: off)")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"TRAIN.PAIRED_CANDIDATES is {k!r}: expected an integer >= 1 (1: one noise draw, no choice)")
    if k > 1 and not (weight or cfg.INTCLS.L1_COEF):
        raise InputError(f"TRAIN.PAIRED_CANDIDATES {k} trains the draw nearest each caption's real image: it needs a "
                         "paired term, TRAIN.PIXEL_WEIGHT or INTCLS.L1_COEF > 0")
    return float(weight), k


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
        self.pixel_weight, self.candidates = paired_settings(cfg)
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
        gan_step(loss, self.optD, self.scaler, module=self.netD, rt=rt)
        if self.loss_type == "wgan":
            clip_weights(self.netD, self.clip_value)
        return losses

    @torch.no_grad()
    def nearest_noise(self, b: IntClsBatch) -> torch.Tensor:
        """Per caption, of TRAIN.PAIRED_CANDIDATES noise draws the one whose image lies nearest (pixel distance) the
        caption's real image (IMLE); the candidates are rendered in one batch, without gradients."""
        k = self.candidates
        noise = torch.randn(k * len(b), self.z_dim, device=self.rt.device)
        embed = None if b.embed is None else b.embed.repeat(k, 1)  # candidate-major, as nearest_draws reads
        with self.rt.autocast():
            imgs = unwrap(self.netG)(embed, noise)
        return nearest_draws(k, imgs, b.images, noise)[0]

    def _g_step(self, b: IntClsBatch) -> dict:
        rt, o = self.rt, self.options
        bsz = len(b)
        int_fake = int_embed = None
        noise = torch.randn(bsz + bsz // 2 if o.interp else bsz, self.z_dim, device=rt.device)
        if self.candidates > 1:
            noise[:bsz] = self.nearest_noise(b)
        with frozen(self.netD):
            with rt.autocast():
                if o.interp:
                    fake, int_fake, int_embed = generate_with_interpolation(self.netG, b.embed, noise)
                else:
                    fake = self.netG(b.embed, noise)
                out = g_loss(self.netD, fake, b.embed, o, real_images=b.images, int_fake_images=int_fake,
                             int_embed=int_embed)
            loss = out.loss.float()
            if self.pixel_weight:
                pix = pixel_loss(fake, b.images)
                loss = loss + self.pixel_weight * pix
            gan_step(loss, self.optG, self.scaler)
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
        if self.pixel_weight:
            losses["G_pixel"] = pix.detach()
        return losses

    def train_step(self, batch: IntClsBatch) -> dict:
        losses = self._d_step(batch)
        if self._g_step_due():
            self._last_g = self._g_step(batch)
        return {**losses, **self._last_g}

    def sampling_forward(self, net, batch: IntClsBatch):
        net(batch.embed, torch.randn(len(batch), self.z_dim, device=self.rt.device))

    # ---- outputs ------------------------------------------------------------------------------------------------
    def save_snapshot(self, epoch):
        atomic_save(unwrap(self.netG).state_dict(), os.path.join(self.model_dir, f"gen_{epoch}.pth"))
        atomic_save(self.netD.state_dict(), os.path.join(self.model_dir, f"disc_{epoch}.pth"))
        atomic_save(self.sampling_generator().state_dict(), FAMILY.snapshot_path(self.model_dir, epoch))
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
        with eval_mode(netG):
            fake = netG(batch.embed, noise)
        grid = image_grid(fake, batch.captions if self.conditional else None, ncol=4)
        grid.save(os.path.join(self.image_dir, f"G_{tag or f'step_{step}'}.png"))
        self.logger.image(step, "samples", pil_to_chw(grid))
