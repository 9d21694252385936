"""DF-GAN training (Tao et al., CVPR 2022): tobran/DF-GAN `code/lib/modules.py::train` (2022) and `9015356`
`code/main.py::train` (2021), on this project's loop (`trainers.base.BaseTrainer`: resume, snapshots, logging, DDP).

One iteration:

1. the captions are encoded by the frozen DAMSM text encoder of TRAIN.NET_E (TEXT.DAMSM_NAME) — sentence
   embeddings, detached, as DF-GAN does (no image encoder: DF-GAN's DAMSM term is commented out). 2022 puts the
   batch back into loader order after the length sort the LSTM needs (the original's `rm_sort`), so the mismatched
   pairs are random pairs; 2021 keeps AttnGAN's length-sorted batch, as its code did;
2. `fake = G(z, s)`, z ~ N(0, 1);
3. D step. 2022: one Adam step of NetD and NetC on `real + (fake + mismatch)/2 + MA-GP`, the mismatched pairs the
   real features rolled by one, MA-GP = DFGAN.MAGP_WEIGHT·mean‖∇_(x,s) C(D(x), s)‖^DFGAN.MAGP_P on the real pairs'
   forward (`models.dfgan.losses.d_loss_2022`). 2021: the hinge step with the batch shifted by one and the last pair
   dropped, then MA-GP as a second D step (`models.ssagan.hinge_d_loss` / `magp_loss`, which are that code's);
4. G step on `-C(D(fake), s).mean()` (2021: `-D.COND_DNET(D(fake), s).mean()`); D and C get no gradient;
5. with TRAIN.EMA an EMA of G (DF-GAN has none; the shipped configs set it off).

Adam (DFGAN.BETA1, BETA2) = (0.0, 0.9): G at DFGAN.GENERATOR_LR 1e-4, NetD + NetC together at DISCRIMINATOR_LR 4e-4,
as the original. The D loss runs in float32 even under TRAIN.AMP (‖∇‖^6 overflows float16). A single process never
touches torch.distributed (the original needed a process group even on one GPU, DF-GAN issue #31); under torchrun G
is DDP-wrapped and D/C gradients are averaged explicitly.

Snapshots every TRAIN.SNAPSHOT_INTERVAL epochs: `netG_epoch_%d.pth` (the EMA weights when TRAIN.EMA), and DF-GAN's
own files — 2022: `state_epoch_%03d.pth` ({'model': {netG, netD, netC}, 'optimizers': {optimizer_G, optimizer_D},
'epoch'}, readable by DF-GAN's `load_model_opt`); 2021: `netD_%03d.pth`. TRAIN.NET_G continues from a
`state_epoch_*.pth` (networks, optimiser moments — rates and betas stay the config's — and epoch) or from a bare
netG (G only; with TRAIN.B_NET_D a 2021 `netD_*.pth` beside it, the epoch from the name when it has one).
"""
from __future__ import annotations

import os

import torch

from datasets import prepare_data
from miscc.checkpoint import atomic_save, load_checkpoint, load_state_dict_strict
from miscc.config import resolve_path
from miscc.errors import InputError
from miscc.modules import eval_mode, frozen
from miscc.vis import image_grid, pil_to_chw
from models.dfgan import build_discriminator, build_generator, d_loss_2022, g_loss_2021, g_loss_2022, version
from models.dfgan.checkpoint import (NETD_NAME_2021, STATE_EPOCH_NAME, generator_state, is_state_epoch,
                                     load_generator_state, load_state_epoch, state_epoch_dict)
from models.dfgan.family import FAMILY
from models.ssagan import hinge_d_loss, magp_loss
from trainers.base import EMA, BaseTrainer, loop_settings
from trainers.common import decode_ids, encode_captions, fixed_batch, load_damsm
from trainers.optim import gan_step
from trainers.runtime import broadcast_parameters, unwrap, wrap_ddp


class DFGANTrainer(BaseTrainer):
    def __init__(self, cfg, rt, output_dir, train_set):
        self.version = version(cfg)
        if cfg.TRAIN.BATCH_SIZE < 2:
            raise InputError(f"TRAIN.BATCH_SIZE must be >= 2 for DF-GAN (the mismatched pairs pair each image with "
                             f"another sample's sentence), got {cfg.TRAIN.BATCH_SIZE}")
        torch.manual_seed(cfg.SEED)  # identical initial weights on every rank
        df = cfg.DFGAN
        betas = (df.BETA1, df.BETA2)
        self.text_encoder, _ = load_damsm(cfg, train_set.n_words, rt.device, with_image_encoder=False)
        net_g = build_generator(cfg).to(rt.device)
        net_d, net_c = build_discriminator(cfg)
        self.netD = net_d.to(rt.device)
        self.netC = net_c.to(rt.device) if net_c is not None else None
        # NetD and NetC share one optimiser and are averaged together under DDP
        self.discriminators = torch.nn.ModuleList([m for m in (self.netD, self.netC) if m is not None])
        broadcast_parameters(self.discriminators, rt)
        self.netG = wrap_ddp(net_g, rt, cfg.TRAIN.SYNC_BN)
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=df.GENERATOR_LR, betas=betas)
        self.optD = torch.optim.Adam(self.discriminators.parameters(), lr=df.DISCRIMINATOR_LR, betas=betas)
        self.ema = EMA(self.netG, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA else None
        self.z_dim = cfg.GAN.Z_DIM
        super().__init__(cfg, rt, output_dir, train_set, **loop_settings(cfg))
        self.fixed = None
        if cfg.TRAIN.NET_G:
            self.load_release_weights(resolve_path(cfg.TRAIN.NET_G))

    # ---- state --------------------------------------------------------------------------------------------------
    def modules(self):
        mods = {"netG": self.netG, "netD": self.netD}
        if self.netC is not None:
            mods["netC"] = self.netC
        if self.ema is not None:
            mods["netG_ema"] = self.ema.shadow
        return mods

    def optimizers(self):
        return {"optG": self.optG, "optD": self.optD}

    def load_release_weights(self, path: str) -> None:
        """TRAIN.NET_G: a `state_epoch_*.pth` (2022: G, D, C, both optimisers, epoch) or a bare netG state dict."""
        obj = load_checkpoint(path, "DF-GAN generator or state_epoch_*.pth (TRAIN.NET_G)")
        if is_state_epoch(obj):
            if self.version != 2022:
                raise InputError(f"{path}: a state_epoch_*.pth is a DF-GAN 2022 training state, but DFGAN.VERSION "
                                 f"is {self.version}")
            # the optimisers keep their moments; their hyperparameters stay this config's (DFGAN.*), as on --resume
            current = {name: [{h: v for h, v in g.items() if h != "params"} for g in opt.param_groups]
                       for name, opt in self.optimizers().items()}
            self.epoch = load_state_epoch(path, unwrap(self.netG), self.netD, self.netC, self.optG, self.optD)
            for name, opt in self.optimizers().items():
                for group, hyper in zip(opt.param_groups, current[name]):
                    group.update(hyper)
        else:
            load_generator_state(unwrap(self.netG), generator_state(obj, path), f"{path} (netG)")
            folder, name = os.path.split(path)
            d_path = os.path.join(folder, name.replace("netG", "netD", 1))
            if self.version == 2021 and self.cfg.TRAIN.B_NET_D and d_path != path and os.path.isfile(d_path):
                load_state_dict_strict(self.netD, load_checkpoint(d_path, "discriminator (TRAIN.B_NET_D)"), d_path)
            digits = os.path.splitext(name)[0].rsplit("_", 1)[-1]
            self.epoch = int(digits) if digits.isdigit() else 0
        if self.ema is not None:
            self.ema.shadow.load_state_dict(unwrap(self.netG).state_dict())

    # ---- one iteration ------------------------------------------------------------------------------------------
    def make_batch(self, raw):
        return prepare_data(raw, self.rt.device)

    def train_step(self, batch):
        real = batch.imgs[-1]
        _, sent_emb, _ = encode_captions(self.text_encoder, batch)
        if self.version == 2022:  # DF-GAN 2022 undoes the length sort of the text encoder (`rm_sort`): loader order
            restore = torch.argsort(batch.order).to(real.device)
            real, sent_emb = real[restore], sent_emb[restore]
        noise = torch.randn(sent_emb.size(0), self.z_dim, device=self.rt.device)
        with self.rt.autocast():
            fake = self.netG(noise, sent_emb)
        losses = self.discriminator_step(real, fake.float(), sent_emb)
        losses.update(self.generator_step(fake, sent_emb))
        return losses

    def discriminator_step(self, real, fake, sent_emb) -> dict:
        """2022: one step on hinge + MA-GP; 2021: the hinge step, then the MA-GP step."""
        df = self.cfg.DFGAN
        if self.version == 2022:
            d = d_loss_2022(self.netD, self.netC, real, fake, sent_emb, df.MAGP_P, df.MAGP_WEIGHT)
            gan_step(d.total, self.optD, self.scaler, module=self.discriminators, rt=self.rt)
            hinge_total, magp = d.total - d.magp, d.magp
        else:
            d = hinge_d_loss(self.netD, real, fake, sent_emb)
            gan_step(d.total, self.optD, self.scaler, module=self.discriminators, rt=self.rt)
            magp = magp_loss(self.netD, real, sent_emb, df.MAGP_P, df.MAGP_WEIGHT)
            gan_step(magp, self.optD, self.scaler, module=self.discriminators, rt=self.rt)
            hinge_total = d.total
        return {"errD": hinge_total.detach(), "errD_real": d.real.detach(), "errD_mismatch": d.mismatch.detach(),
                "errD_fake": d.fake.detach(), "MAGP": magp.detach()}

    def generator_step(self, fake, sent_emb) -> dict:
        with frozen(self.netD, self.netC):
            with self.rt.autocast():
                if self.version == 2022:
                    err_g = g_loss_2022(self.netD, self.netC, fake, sent_emb)
                else:
                    err_g = g_loss_2021(self.netD, fake, sent_emb)
            gan_step(err_g.float(), self.optG, self.scaler)
        if self.ema is not None:
            self.ema.update(self.netG, self.step)
        return {"errG": err_g.detach()}

    # ---- outputs ------------------------------------------------------------------------------------------------
    def save_snapshot(self, epoch):
        atomic_save(self.sampling_generator().state_dict(), FAMILY.snapshot_path(self.model_dir, epoch))
        if self.version == 2022:
            state = state_epoch_dict(unwrap(self.netG), self.netD, self.netC, self.optG, self.optD, epoch)
            atomic_save(state, os.path.join(self.model_dir, STATE_EPOCH_NAME % epoch))
        else:
            atomic_save(self.netD.state_dict(), os.path.join(self.model_dir, NETD_NAME_2021 % epoch))
        self.log_images(self.step, tag=f"epoch_{epoch}")

    @torch.no_grad()
    def log_images(self, step, tag=None):
        """Samples of the (EMA) generator for a fixed batch and noise, with their captions: `Image/G_<tag>.png`."""
        if self.fixed is None:
            self.fixed = fixed_batch(self.train_set, 8, self.z_dim, self.seed, self.rt.device)
        batch, noise = self.fixed
        netG = self.sampling_generator()
        with eval_mode(netG):
            _, sent_emb = self.text_encoder(batch.captions, batch.cap_lens)
            fake = netG(noise, sent_emb.float())
        captions = [decode_ids(self.train_set, batch.captions[i, :int(batch.cap_lens[i])].tolist())
                    for i in range(len(batch.keys))]
        grid = image_grid(fake, captions, ncol=4)
        grid.save(os.path.join(self.image_dir, f"G_{tag or f'step_{step}'}.png"))
        self.logger.image(step, "samples", pil_to_chw(grid))
