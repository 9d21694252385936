"""SSA-GAN training and mask pictures (wtliao/text2image `main.py`, and `main_finetune.py` for TRAIN.FINETUNE_TEXT_ENCODER).

One iteration, as the original:

1. encode the captions with the frozen DAMSM text encoder (detached);
2. G(z, s) makes the image (and its per-stage masks);
3. D takes one Adam step on the matching-aware hinge loss: real + (fake + mismatched)/2, the mismatched pairs being
   the length-sorted batch shifted by one (`models.ssagan.hinge_d_loss`);
4. MA-GP (`magp_loss`, SSA.MAGP_P / SSA.MAGP_WEIGHT): with SSA.MAGP_MODE 'separate' a second D step on the penalty
   alone (SSA-GAN, DF-GAN 2021); with 'joint' the penalty is added to the hinge loss of step 3, one step (DF-GAN 2022);
   ours: with SSA.MAGP_INTERVAL n > 1 only every n-th step has the penalty, at n times its weight (StyleGAN2's lazy
   regularisation; the original: 1);
5. G takes one step on -D(G(z,s), s) + SSA.DAMSM_WEIGHT · LAMBDA·(words_loss0+1 + sent_loss0+1), the DAMSM terms
   computed by the image encoder on the fake image with the TRAIN.SMOOTH gammas (wt: weight 0.05, LAMBDA 1);
6. with TRAIN.EMA, the EMA of G is updated (the original has none; SSA configs set it off).

Ours, as in the AttnGAN trainer: TRAIN.COEFF.ADV weights step 5's adversarial term (1 as the original);
TRAIN.PERCEPTUAL_WEIGHT and TRAIN.PIXEL_WEIGHT add paired terms against the caption's real image to step 5
(TRAIN.PERCEPTUAL_EXTRA: the perceptual term also in a second, early image encoder's features, in the first
TRAIN.PERCEPTUAL_EXTRA_EPOCHS epochs), and before TRAIN.ADV_START_EPOCH steps 3-4 are skipped and step 5 has no
adversarial term (G learns from the paired terms and the DAMSM loss alone); with TRAIN.ADV_INTERVAL n > 1 so are
they on all but every n-th step, whose adversarial term weighs n times TRAIN.COEFF.ADV (SSA.MAGP_INTERVAL then
counts those D steps).
TRAIN.PAIRED_CANDIDATES > 1 renders that many noise draws per caption (without gradients) and trains the one whose
image is nearest the real image (IMLE, `nearest_noise`);
TRAIN.PAIRED_ANCHOR > 0 renders each caption once more from a fresh draw in the same forward, whose image pays that
share of the pixel term (pooled to TRAIN.ANCHOR_POOL cells; D sees the chosen images only), in the first
TRAIN.PAIRED_ANCHOR_EPOCHS epochs where that is > 0.

Adam for G and D with SSA.GENERATOR_LR / SSA.DISCRIMINATOR_LR and betas (SSA.BETA1, SSA.BETA2) (the original
hard-coded 1e-4 / 4e-4, (0, 0.9)).

TRAIN.FINETUNE_TEXT_ENCODER (`main_finetune.py`): before step 3 the text encoder (in train mode, so its dropout is
active) and the image encoder's trainable parameters (Inception: `emb_features`, `emb_cnn_code`; the small encoder:
all) take an Adam step (TRAIN.ENCODER_LR, the original's 4e-5; betas as G's) on LAMBDA·DAMSM of the REAL images; G
and D get the embeddings of that same forward, detached. The original used DAMSM weight 0.1 in this mode: set
SSA.DAMSM_WEIGHT. Snapshots then also write `text_encoder%d.pth` / `image_encoder%d.pth`.

Snapshots every TRAIN.SNAPSHOT_INTERVAL epochs: `netG_%03d.pth` (the EMA weights when TRAIN.EMA) and `netD_%03d.pth`,
plain state dicts without `module.`, the epoch being the number of epochs done (wt's numbering). wt's GSAVE/DSAVE
intervals and WARMUP_EPOCHS (which only delayed saving) are not used: one interval for everything, and the
training state for `--resume` is written at every snapshot anyway.

TRAIN.NET_G continues from a released or saved `netG_%03d.pth` (wt's RESTORE): G (a `module.` prefix is removed),
with TRAIN.B_NET_D the `netD_%03d.pth` beside it, with fine-tuning the encoders beside it when present
(`text_encoder_%03d.pth` as wt wrote them, or ours), and the epoch count from the file name.

Multi-GPU: G is wrapped in DistributedDataParallel (one forward, one backward per step); D runs several forwards and
a double backward (MA-GP), so its gradients are averaged explicitly (`average_gradients`); the fine-tuned encoders
are DDP-wrapped (one forward each). Mismatched pairs and the DAMSM B×B matching are formed within each process's
batch. The MA-GP is computed in float32 even under AMP: ‖∇‖^6 overflows float16 as soon as ‖∇‖ > 6.3.
"""
from __future__ import annotations

import os
import warnings

import torch

from datasets import prepare_data
from miscc.checkpoint import atomic_save, load_checkpoint, load_state_dict_strict
from miscc.config import image_encoder_path, resolve_path
from miscc.errors import InputError, MissingFileError
from miscc.losses import damsm_generator_loss
from miscc.modules import eval_mode, frozen
from miscc.vis import image_grid, pil_to_chw
from models.damsm import build_image_encoder, build_text_encoder, load_image_encoder, load_text_encoder
from models.ssagan import (build_discriminators, build_generator, hinge_d_loss, hinge_g_loss, load_ssagan_generator,
                           magp_loss)
from models.ssagan.family import FAMILY
from models.ssagan.sampling import mask_figure
from models.text_grid import repeat_batch
from trainers.base import EMA, BaseTrainer, loop_settings
from trainers.common import adversarial_now, anchor_term, anchored_now, check_step_interval, decode_ids, \
    encode_captions, encode_swap_negatives, epoch_from_name, extra_encoder_now, fixed_batch, load_damsm, \
    load_perceptual_extra, nearest_draws, paired_memory, paired_terms, real_feature_cache, swap_groups_for, \
    text_encoder_path, text_sampling_forward
from trainers.optim import gan_step
from trainers.parallel import GradCapture, copy_module, new_replica
from trainers.runtime import broadcast_parameters, unwrap, wrap_ddp

MAGP_MODES = ("separate", "joint")


def load_trainable_damsm(cfg, n_words: int, device):
    """(text_encoder, image_encoder) from TRAIN.NET_E and its `image_encoder` sibling, trainable as in DAMSM
    pre-training: every text-encoder parameter (a frozen BERT trunk stays frozen unless TEXT.BERT_FINETUNE) and the
    image encoder's trainable parameters (`main_finetune.py` trains those with `requires_grad`)."""
    path = text_encoder_path(cfg)
    img_path = image_encoder_path(path)
    if img_path == path or not os.path.isfile(img_path):
        raise MissingFileError(f"image encoder not found: {img_path} (derived from the text encoder path {path} by "
                                "replacing 'text_encoder' with 'image_encoder')")
    text_encoder = load_text_encoder(build_text_encoder(cfg, n_words), path).to(device)
    image_encoder = load_image_encoder(build_image_encoder(cfg), img_path).to(device)
    return text_encoder, image_encoder


class SSAGANTrainer(BaseTrainer):
    def __init__(self, cfg, rt, output_dir, train_set):
        if cfg.SSA.MAGP_MODE not in MAGP_MODES:
            raise InputError(f"SSA.MAGP_MODE must be one of {MAGP_MODES}, got {cfg.SSA.MAGP_MODE!r}")
        check_step_interval("TRAIN.ADV_INTERVAL", cfg.TRAIN.ADV_INTERVAL)
        check_step_interval("SSA.MAGP_INTERVAL", cfg.SSA.MAGP_INTERVAL)
        if cfg.TRAIN.PARALLEL_STEPS > 1 and cfg.TRAIN.FINETUNE_TEXT_ENCODER:  # (TRAIN.PAIRED_MEMORY: `paired_memory`)
            raise InputError("TRAIN.PARALLEL_STEPS > 1 runs steps at once: TRAIN.FINETUNE_TEXT_ENCODER (encoders both "
                             "would train) needs it 1")
        if cfg.TRAIN.BATCH_SIZE < 2:
            raise InputError(f"TRAIN.BATCH_SIZE must be >= 2 for SSA-GAN (the mismatched pairs shift the batch by "
                             f"one), got {cfg.TRAIN.BATCH_SIZE}")
        torch.manual_seed(cfg.SEED)  # identical initial weights on every rank
        self.finetune = bool(cfg.TRAIN.FINETUNE_TEXT_ENCODER)
        ssa = cfg.SSA
        betas = (ssa.BETA1, ssa.BETA2)
        if self.finetune:
            text_encoder, image_encoder = load_trainable_damsm(cfg, train_set.n_words, rt.device)
            self.text_encoder = wrap_ddp(text_encoder, rt)
            self.image_encoder = wrap_ddp(image_encoder, rt)
            enc_params = [p for m in (text_encoder, image_encoder) for p in m.parameters() if p.requires_grad]
            self.optE = torch.optim.Adam(enc_params, lr=cfg.TRAIN.ENCODER_LR, betas=betas)
        else:
            self.text_encoder, self.image_encoder = load_damsm(cfg, train_set.n_words, rt.device)
            self.optE = None
        net_g = build_generator(cfg).to(rt.device)
        if cfg.TRAIN.CHANNELS_LAST:  # the same numbers in another memory layout (faster for this G on CPU)
            net_g = net_g.to(memory_format=torch.channels_last)
        self.netD = build_discriminators(cfg)[0].to(rt.device)
        broadcast_parameters(self.netD, rt)
        self.netG = wrap_ddp(net_g, rt, cfg.TRAIN.SYNC_BN)
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=ssa.GENERATOR_LR, betas=betas)
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=ssa.DISCRIMINATOR_LR, betas=betas)
        self.ema = EMA(self.netG, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA else None
        self.swap_groups = swap_groups_for(cfg, train_set)  # TRAIN.SMOOTH.SWAP_LAMBDA's hard negatives
        self.z_dim = cfg.GAN.Z_DIM
        self.magp_mode = ssa.MAGP_MODE
        self.real_cache = real_feature_cache(cfg, trains_image_encoder=self.finetune)  # TRAIN.REAL_FEATURE_CACHE_MB
        self.perceptual_extra = load_perceptual_extra(cfg, rt.device)  # frozen, so not fine-tuned with the others
        self.memory = paired_memory(cfg)  # TRAIN.PAIRED_MEMORY
        super().__init__(cfg, rt, output_dir, train_set, **loop_settings(cfg))
        self.fixed = None  # the batch and noise of the image grids, drawn at the first grid
        if cfg.TRAIN.NET_G:
            self.load_release_weights(cfg.TRAIN.NET_G)

    # ---- state --------------------------------------------------------------------------------------------------
    def modules(self):
        mods = {"netG": self.netG, "netD": self.netD}
        if self.ema is not None:
            mods["netG_ema"] = self.ema.shadow
        if self.finetune:
            mods.update(text_encoder=self.text_encoder, image_encoder=self.image_encoder)
        return mods

    def optimizers(self):
        opts = {"optG": self.optG, "optD": self.optD}
        if self.optE is not None:
            opts["optE"] = self.optE
        return opts

    def make_replica(self):
        """TRAIN.PARALLEL_STEPS: G and D copied, their optimisers capturing, the (frozen) encoders shared."""
        rep = new_replica(self)
        rep.netG, rep.netD = copy_module(self.netG), copy_module(self.netD)
        rep.optG, rep.optD = GradCapture(rep.netG.parameters()), GradCapture(rep.netD.parameters())
        return rep

    def load_release_weights(self, net_g_path: str) -> None:
        """Continue from `netG_%03d.pth` (wt RESTORE): G, `netD_%03d.pth` (TRAIN.B_NET_D), fine-tuned encoders."""
        path = resolve_path(net_g_path)
        load_ssagan_generator(unwrap(self.netG), path)
        if self.ema is not None:
            self.ema.shadow.load_state_dict(unwrap(self.netG).state_dict())
        folder, name = os.path.split(path)
        epoch = epoch_from_name(path)
        if self.cfg.TRAIN.B_NET_D:
            d_path = os.path.join(folder, name.replace("netG", "netD", 1))
            if d_path == path:
                raise InputError(f"{path}: cannot derive the discriminator file (the name has no 'netG'); "
                                 "set TRAIN.B_NET_D False to start D afresh")
            load_state_dict_strict(self.netD, load_checkpoint(d_path, "discriminator (TRAIN.B_NET_D)"), d_path)
        if self.finetune:
            for kind, module, loader in (("text_encoder", self.text_encoder, load_text_encoder),
                                         ("image_encoder", self.image_encoder, load_image_encoder)):
                found = [p for p in (os.path.join(folder, name.replace("netG", kind, 1)),
                                     os.path.join(folder, f"{kind}{epoch}.pth")) if p != path and os.path.isfile(p)]
                if found:
                    loader(unwrap(module), found[0])
                else:
                    warnings.warn(f"no fine-tuned {kind} next to {path}; continuing from the one of TRAIN.NET_E")
        self.epoch = epoch

    # ---- one iteration ------------------------------------------------------------------------------------------
    def make_batch(self, raw):
        return prepare_data(raw, self.rt.device)

    def train_step(self, batch):
        real = batch.imgs[-1]
        losses = {}
        if self.finetune:
            words_emb, sent_emb, losses["DAMSM_E"] = self.encoder_step(batch)
        else:
            words_emb, sent_emb, _ = encode_captions(self.text_encoder, batch)
        b, cfg = words_emb.size(0), self.cfg
        mask = batch.mask[:, :words_emb.size(2)]  # padding; NetG reads the words only with GAN.WORD_GRID
        gen = self.draw_generator
        noise = torch.randn(b, self.z_dim, device=self.rt.device, generator=gen)
        if cfg.TRAIN.PAIRED_CANDIDATES > 1:
            noise = self.nearest_noise(cfg.TRAIN.PAIRED_CANDIDATES, sent_emb, words_emb, mask, real)
        anchored = anchored_now(self)
        k = 2 if anchored else 1  # one forward: the chosen draws, then fresh ones for the anchor term
        if anchored:
            noise = torch.cat((noise, torch.randn(noise.shape, dtype=noise.dtype, device=noise.device, generator=gen)))
        with self.rt.autocast():
            fake, _ = self.netG(noise, *(repeat_batch(t, k) for t in (sent_emb, words_emb, mask)))
        fake, anchor_imgs = fake[:b], (fake[b:] if anchored else None)
        adversarial = adversarial_now(self)  # TRAIN.ADV_START_EPOCH (before: G on the paired terms alone), ADV_INTERVAL
        if adversarial:
            losses.update(self.discriminator_step(real, fake, sent_emb, words_emb, mask))
        negatives = encode_swap_negatives(unwrap(self.text_encoder), batch, self.swap_groups, gen)
        losses.update(self.generator_step(fake, words_emb, sent_emb, batch, real, adversarial, negatives, mask,
                                          anchor_imgs))
        return losses

    def sampling_forward(self, net, batch):
        text_sampling_forward(unwrap(self.text_encoder), net, batch, self.z_dim)

    @torch.no_grad()
    def nearest_noise(self, k, sent_emb, words_emb, mask, real):
        """Per caption, of k noise draws the one whose image lies nearest (pixel distance) the caption's real
        image (TRAIN.PAIRED_CANDIDATES; IMLE, as AttnGAN's `nearest_noise`): the paired terms then pull that image
        towards the real one, and the noise, not the loss's average, decides what the caption leaves open. NetG
        has one stage, so each candidate costs a whole forward (without gradients)."""
        b = sent_emb.size(0)
        noise = torch.randn(k * b, self.z_dim, device=sent_emb.device, generator=self.draw_generator)
        if self.memory is not None:  # TRAIN.PAIRED_MEMORY: the draw chosen last time is candidate 0
            keys, (noise,) = self.memory.recall(real, [noise])
        with self.rt.autocast():
            imgs, _ = unwrap(self.netG)(noise, *(repeat_batch(t, k) for t in (sent_emb, words_emb, mask)))
        chosen = nearest_draws(k, imgs, real, noise)
        if self.memory is not None:
            self.memory.remember(keys, chosen)
        return chosen[0]

    def encoder_step(self, batch):
        """`main_finetune.py`: LAMBDA·DAMSM(real images, captions) trains the encoders; returns the detached
        (words_emb, sent_emb) of that forward for G and D, and the loss."""
        with self.rt.autocast():
            words_emb, sent_emb = self.text_encoder(batch.captions, batch.cap_lens)
            w_loss, s_loss = damsm_generator_loss(self.image_encoder, batch.imgs[-1], words_emb.float(),
                                                  sent_emb.float(), batch, self.cfg)
        loss = w_loss + s_loss
        gan_step(loss, self.optE, self.scaler)
        return words_emb.detach().float(), sent_emb.detach().float(), loss.detach()

    def discriminator_step(self, real, fake, sent_emb, words_emb=None, mask=None) -> dict:
        """Hinge step, then MA-GP as a second step ('separate') or within the same step ('joint'). D's head reads
        `NetD.text_condition`: the sentence code, or with GAN.D_WORD_CONTEXT_LAYERS (ours) D's map of the words,
        whose layers learn from the hinge loss (MA-GP differentiates with respect to the map, not through it)."""
        ssa = self.cfg.SSA
        text = self.netD.text_condition(sent_emb, words_emb, mask)
        with self.rt.autocast():
            d = hinge_d_loss(self.netD, real, fake, text)
        err_d = d.total.float()
        # SSA.MAGP_INTERVAL n > 1 (ours): the penalty on every n-th D step only, at n times its weight
        n = ssa.MAGP_INTERVAL
        penalised, weight = (self.step // self.cfg.TRAIN.ADV_INTERVAL) % n == 0, ssa.MAGP_WEIGHT * n
        out = {"errD": err_d.detach(), "errD_real": d.real.detach(), "errD_mismatch": d.mismatch.detach(),
               "errD_fake": d.fake.detach()}
        if self.magp_mode == "joint":
            magp = magp_loss(self.netD, real, text, ssa.MAGP_P, weight) if penalised else 0.0  # detaches its text
            gan_step(err_d + magp, self.optD, self.scaler, module=self.netD, rt=self.rt)
        else:
            gan_step(err_d, self.optD, self.scaler, module=self.netD, rt=self.rt)
            if penalised:
                text = self.netD.text_condition(sent_emb, words_emb, mask)  # D has moved
                magp = magp_loss(self.netD, real, text, ssa.MAGP_P, weight)
                gan_step(magp, self.optD, self.scaler, module=self.netD, rt=self.rt)
        if penalised:
            out["MAGP"] = magp.detach()
        return out

    def generator_step(self, fake, words_emb, sent_emb, batch, real, adversarial: bool = True,
                       negatives=None, mask=None, anchor_imgs=None) -> dict:
        """-D(G(z,s), s) (when `adversarial`) + SSA.DAMSM_WEIGHT·DAMSM(fake) (with TRAIN.SMOOTH.SWAP_LAMBDA's
        hard-negative part given `negatives`) (+ TRAIN.PERCEPTUAL_WEIGHT·perceptual loss and TRAIN.PIXEL_WEIGHT·pixel
        loss against `real`, and the anchor term of the fresh draws' images `anchor_imgs`, TRAIN.PAIRED_ANCHOR);
        D and the image encoder receive no gradient."""
        image_encoder = unwrap(self.image_encoder)
        with frozen(self.netD, image_encoder):
            with self.rt.autocast():
                adv = hinge_g_loss(self.netD, fake, self.netD.text_condition(sent_emb, words_emb, mask)) \
                    if adversarial else fake.new_zeros(())
                features = image_encoder(fake)
                w_loss, s_loss = damsm_generator_loss(image_encoder, fake, words_emb, sent_emb, batch, self.cfg,
                                                      features, negatives)
            damsm = self.cfg.SSA.DAMSM_WEIGHT * (w_loss + s_loss)
            paired, out = paired_terms(self.cfg, image_encoder, features[0], [fake], [real],
                                       extra_encoder_now(self), self.real_cache)
            if anchor_imgs is not None:
                anchor, out["anchor"] = anchor_term(self.cfg, [anchor_imgs], [real])
                paired = paired + anchor
            err_g = self.cfg.TRAIN.COEFF.ADV * self.cfg.TRAIN.ADV_INTERVAL * adv.float() + damsm + paired
            gan_step(err_g, self.optG, self.scaler)
        if self.ema is not None:
            self.ema.update(self.netG, self.step)
        return {"errG": err_g.detach(), "errG_adv": adv.detach(), "DAMSM_G": damsm.detach(),
                "w_loss": w_loss.detach(), "s_loss": s_loss.detach(), **out}

    # ---- outputs ------------------------------------------------------------------------------------------------
    def save_snapshot(self, epoch):
        atomic_save(self.sampling_generator().state_dict(), FAMILY.snapshot_path(self.model_dir, epoch))
        atomic_save(self.netD.state_dict(), os.path.join(self.model_dir, f"netD_{epoch:03d}.pth"))
        if self.finetune:
            atomic_save(unwrap(self.text_encoder).state_dict(),
                        os.path.join(self.model_dir, f"text_encoder{epoch}.pth"))
            atomic_save(unwrap(self.image_encoder).state_dict(),
                        os.path.join(self.model_dir, f"image_encoder{epoch}.pth"))
        self.log_images(self.step, tag=f"epoch_{epoch}")

    @torch.no_grad()
    def log_images(self, step, tag=None):
        """Samples of the (EMA) generator in eval mode for a fixed batch and noise, with captions
        (`Image/G_<tag>.png`), and the same samples with the mask of every stage (`Image/G_<tag>_masks.png`)."""
        if self.fixed is None:
            self.fixed = fixed_batch(self.train_set, 8, self.z_dim, self.seed, self.rt.device)
        batch, noise = self.fixed
        netG = self.sampling_generator()
        text_encoder = unwrap(self.text_encoder)
        with eval_mode(netG, text_encoder):
            words_emb, sent_emb, mask = encode_captions(text_encoder, batch)
            fake, masks = netG(noise, sent_emb, words_emb, mask)
        captions = [decode_ids(self.train_set, batch.captions[i, :int(batch.cap_lens[i])].tolist())
                    for i in range(len(batch.keys))]
        name = tag or f"step_{step}"
        grid = image_grid(fake, captions, ncol=4)
        grid.save(os.path.join(self.image_dir, f"G_{name}.png"))
        figure = mask_figure(fake, masks, captions)
        figure.save(os.path.join(self.image_dir, f"G_{name}_masks.png"))
        self.logger.image(step, "samples", pil_to_chw(grid))
        self.logger.image(step, "masks", pil_to_chw(figure))
