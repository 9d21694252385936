"""AttnGAN / BERT-AttnGAN training (A/code/trainer.py `condGANTrainer.train`).

One iteration, as the original: encode the captions with the frozen DAMSM text encoder; G(z, sentence, words,
mask) makes one image per branch; every discriminator takes one Adam step on its AttnGAN loss (real / fake /
mismatched, conditional and unconditional); then G takes one step on Σ_stages adversarial loss + LAMBDA·(DAMSM words
loss + sentence loss on the last image, both directions) + KL(mu, logvar); then the EMA of G is updated (0.999).
Ours, for data whose captions pin the picture down (`shapes`): TRAIN.COEFF.KL weights the KL term (AttnGAN: 1),
TRAIN.COEFF.ADV the adversarial term (AttnGAN: 1), and
TRAIN.PERCEPTUAL_WEIGHT adds ControlGAN's perceptual loss of the last image (`miscc.losses.perceptual_loss`),
TRAIN.PERCEPTUAL_EXTRA the same term in a second image encoder's features (an early DAMSM snapshot; in the first
TRAIN.PERCEPTUAL_EXTRA_EPOCHS epochs only, where that is > 0),
TRAIN.PIXEL_WEIGHT a squared pixel distance of every stage's image to the caption's real image
(`miscc.losses.pixel_loss`; both through `trainers.common.paired_terms`, shared with SSA-GAN), and before
TRAIN.ADV_START_EPOCH G learns from those paired terms and the DAMSM loss alone while D waits (ESRGAN's
pre-training of its generator before the GAN); TRAIN.ADV_INTERVAL n > 1 steps D and gives G the adversarial term
(at n times its weight) on every n-th step only; TRAIN.PAIRED_CANDIDATES > 1 trains, of that many noise vectors per
caption, the one whose image is nearest the real image (`nearest_noise`), and TRAIN.PAIRED_MAP_CANDIDATES > 1 then
re-draws that draw's GAN.GRID_NOISE map as many times, the rest held; TRAIN.SMOOTH.SWAP_LAMBDA > 0 adds to the
DAMSM term each image's own caption with one DAMSM.SWAP_NEGATIVES word swapped as a hard negative;
TRAIN.PAIRED_ANCHOR > 0 also renders every caption from a fresh noise draw, whose images pay that share of the
pixel term (`with_fresh_draws`), on the images average-pooled to TRAIN.ANCHOR_POOL cells a side where that is > 0
(in the first TRAIN.PAIRED_ANCHOR_EPOCHS epochs only, where that is > 0); TRAIN.ANCHOR_STAGES = n > 0 stops the
fresh draws after G's first n stages (the pooled term needs no fine stage, and the later stages render B rows).
GAN.D_STAGES = n > 0 keeps discriminators (and G's adversarial terms) for the last n stages only.
Snapshots: `netG_epoch_%d.pth` holds the EMA weights (what AttnGAN released), `netD%d.pth` each discriminator.

Multi-GPU: G is wrapped in DistributedDataParallel; discriminators run several forwards per step, so their
gradients are averaged explicitly (`average_gradients`), which gives the gradient DDP would. The mismatched pair
(sentences shifted by one) and the DAMSM loss's B×B matching are formed within each process's batch, as every
multi-GPU text-to-image GAN does.
"""
from __future__ import annotations

import os

import torch

from datasets import prepare_data
from miscc.checkpoint import atomic_save, load_checkpoint, load_state_dict_strict
from miscc.diffaugment import diff_augment, parse_policy
from miscc.errors import InputError
from miscc.losses import damsm_generator_loss
from miscc.modules import eval_mode, frozen
from miscc.vis import build_super_images, image_grid, pil_to_chw
from models.attngan import KL_loss, build_discriminators, build_generator, discriminator_loss, \
    generator_adversarial_loss
from models.attngan.family import FAMILY
from models.attngan.networks import TextCondition, repeat_batch
from trainers.base import EMA, BaseTrainer, loop_settings
from trainers.common import (adversarial_now, anchor_term, anchored_now, check_step_interval, decode_ids,
                             encode_captions, encode_with_swap_negatives, epoch_from_name, extra_encoder_now,
                             load_damsm, load_perceptual_extra, nearest_draws, paired_memory, paired_terms,
                             real_feature_cache, swap_groups_for, text_sampling_forward)
from trainers.optim import gan_step
from trainers.parallel import GradCapture, copy_module, new_replica
from trainers.runtime import broadcast_parameters, unwrap, wrap_ddp


class AttnGANTrainer(BaseTrainer):
    def __init__(self, cfg, rt, output_dir, train_set):
        torch.manual_seed(cfg.SEED)  # identical initial weights on every rank
        self.text_encoder, self.image_encoder = load_damsm(cfg, train_set.n_words, rt.device)
        self.perceptual_extra = load_perceptual_extra(cfg, rt.device)
        net_g = build_generator(cfg, rt.device)
        self.netsD = build_discriminators(cfg, rt.device)
        for d in self.netsD:
            broadcast_parameters(d, rt)
        self.netG = wrap_ddp(net_g, rt, cfg.TRAIN.SYNC_BN)
        betas = (cfg.TRAIN.BETA1, cfg.TRAIN.BETA2)
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=cfg.TRAIN.GENERATOR_LR, betas=betas)
        self.optsD = [torch.optim.Adam(d.parameters(), lr=cfg.TRAIN.DISCRIMINATOR_LR, betas=betas)
                      for d in self.netsD]
        self.ema = EMA(self.netG, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA else None
        self.real_cache = real_feature_cache(cfg)  # TRAIN.REAL_FEATURE_CACHE_MB
        self.memory = paired_memory(cfg)  # TRAIN.PAIRED_MEMORY
        self.z_dim = cfg.GAN.Z_DIM
        if cfg.TRAIN.PAIRED_MAP_CANDIDATES > 1 and not (cfg.GAN.GRID_NOISE and cfg.TRAIN.PAIRED_CANDIDATES > 1):
            raise InputError("TRAIN.PAIRED_MAP_CANDIDATES re-draws the noise map of the nearest of "
                             "TRAIN.PAIRED_CANDIDATES draws: it needs GAN.GRID_NOISE and TRAIN.PAIRED_CANDIDATES > 1")
        check_step_interval("TRAIN.ADV_INTERVAL", cfg.TRAIN.ADV_INTERVAL)
        if cfg.TRAIN.PARALLEL_STEPS > 1 and cfg.TRAIN.DIFFAUGMENT:  # (TRAIN.PAIRED_MEMORY: `paired_memory`)
            raise InputError("TRAIN.PARALLEL_STEPS > 1 runs steps at once: TRAIN.DIFFAUGMENT (drawn from the global "
                             "RNG) needs TRAIN.PARALLEL_STEPS 1")
        stages = cfg.TRAIN.ANCHOR_STAGES
        if stages and cfg.TRAIN.PAIRED_ANCHOR and (cfg.GAN.B_DCGAN or not 0 < stages <= cfg.TREE.BRANCH_NUM):
            raise InputError(f"TRAIN.ANCHOR_STAGES = {stages}: the anchor's fresh draws stop after that many of "
                             "G_NET's stages, so it must be 0 (every stage) or 1..TREE.BRANCH_NUM "
                             f"({cfg.TREE.BRANCH_NUM}), and G_DCGAN (GAN.B_DCGAN) has no image before its last stage")
        self.swap_groups = swap_groups_for(cfg, train_set)  # TRAIN.SMOOTH.SWAP_LAMBDA's hard negatives
        policy = parse_policy(cfg.TRAIN.DIFFAUGMENT)
        self.augment = (lambda x: diff_augment(x, policy, cfg.TRAIN.DIFFAUGMENT_TRANSLATION,
                                               cfg.TRAIN.DIFFAUGMENT_CUTOUT)) if policy else None
        super().__init__(cfg, rt, output_dir, train_set, **loop_settings(cfg))
        self.fixed = None  # the batch and noise of the image grids, drawn at the first grid
        if cfg.TRAIN.NET_G:
            self.load_release_weights(cfg.TRAIN.NET_G)

    # ---- state --------------------------------------------------------------------------------------------------
    def modules(self):
        mods = {"netG": self.netG, **{f"netD{i}": d for i, d in enumerate(self.netsD)}}
        if self.ema is not None:
            mods["netG_ema"] = self.ema.shadow
        return mods

    def optimizers(self):
        return {"optG": self.optG, **{f"optD{i}": o for i, o in enumerate(self.optsD)}}

    def make_replica(self):
        """TRAIN.PARALLEL_STEPS: G and the Ds copied, their optimisers capturing, the rest shared."""
        rep = new_replica(self)
        rep.netG, rep.netsD = copy_module(self.netG), [copy_module(d) for d in self.netsD]
        rep.optG, rep.optsD = GradCapture(rep.netG.parameters()), [GradCapture(d.parameters()) for d in rep.netsD]
        return rep

    def load_release_weights(self, net_g_path: str) -> None:
        """AttnGAN's TRAIN.NET_G resume: G (and with B_NET_D, `netD%d.pth` beside it); the epoch after the one in
        the file name. A released file holds EMA weights, which seed both G and its EMA."""
        from miscc.config import resolve_path

        path = resolve_path(net_g_path)
        load_state_dict_strict(unwrap(self.netG), load_checkpoint(path, "generator (TRAIN.NET_G)"), path)
        if self.ema is not None:
            self.ema.shadow.load_state_dict(unwrap(self.netG).state_dict())
        if self.cfg.TRAIN.B_NET_D:
            folder = os.path.dirname(path)
            for i, d in enumerate(self.netsD):
                d_path = os.path.join(folder, f"netD{i}.pth")
                load_state_dict_strict(d, load_checkpoint(d_path, f"discriminator {i} (B_NET_D)"), d_path)
        self.epoch = epoch_from_name(path) + 1

    # ---- one iteration ------------------------------------------------------------------------------------------
    def make_batch(self, raw):
        return prepare_data(raw, self.rt.device)

    def train_step(self, batch):
        rt, cfg = self.rt, self.cfg
        (words_emb, sent_emb, mask), negatives = encode_with_swap_negatives(self.text_encoder, batch, self.swap_groups,
                                                                           self.draw_generator)
        b = words_emb.size(0)
        gen, c_dim = self.draw_generator, unwrap(self.netG).ca_net.c_dim
        noise = torch.randn(b, self.z_dim, device=rt.device, generator=gen)
        ca_eps = None if gen is None else torch.randn(b, c_dim, device=rt.device, generator=gen)  # (a replica's)
        if cfg.TRAIN.PAIRED_CANDIDATES > 1:
            noise, ca_eps = self.nearest_noise(cfg.TRAIN.PAIRED_CANDIDATES, sent_emb, words_emb, mask, batch.imgs)
        text = (sent_emb, words_emb, mask)
        anchored = anchored_now(self)
        if anchored:  # one forward: the chosen draws, then fresh ones for the anchor term
            noise, ca_eps, text = self.with_fresh_draws(noise, ca_eps, *text)
        short = dict(full_rows=b, short_stages=cfg.TRAIN.ANCHOR_STAGES) if anchored and cfg.TRAIN.ANCHOR_STAGES else {}
        with rt.autocast():
            fake_imgs, _, mu, logvar = self.netG(noise, *text, ca_eps, **short)
        if anchored:  # (the fresh draws' images: of every stage, or of the first TRAIN.ANCHOR_STAGES)
            anchor_imgs = [f[b:] for f in fake_imgs if f.size(0) > b]
            fake_imgs, mu, logvar = [f[:b] for f in fake_imgs], mu[:b], logvar[:b]
        real_labels = torch.ones(b, device=rt.device)
        fake_labels = torch.zeros(b, device=rt.device)

        cond = TextCondition(sent_emb, words_emb, mask) if cfg.GAN.D_WORD_CONTEXT_LAYERS else sent_emb
        adversarial = adversarial_now(self)  # TRAIN.ADV_START_EPOCH, TRAIN.ADV_INTERVAL
        losses = {}
        reals = batch.imgs[len(batch.imgs) - len(fake_imgs):]  # G_DCGAN: one image (and one D), the last size
        # the images of the stages that have a D (GAN.D_STAGES: the last ones only)
        d_fakes, d_reals = fake_imgs[len(fake_imgs) - len(self.netsD):], reals[len(reals) - len(self.netsD):]
        for i, (netD, optD) in enumerate(zip(self.netsD, self.optsD) if adversarial else ()):
            with rt.autocast():
                err_d = discriminator_loss(netD, d_reals[i], d_fakes[i], cond, real_labels, fake_labels,
                                           cfg.GAN.ADV_LOSS, self.augment)
            gan_step(err_d, optD, self.scaler, module=netD, rt=rt)
            losses[f"errD{i}"] = err_d.detach()

        with frozen(*self.netsD):
            with rt.autocast():
                adv = generator_adversarial_loss(self.netsD, d_fakes, cond, cfg.GAN.ADV_LOSS, self.augment)[0] \
                    if adversarial else fake_imgs[-1].new_zeros(())
                features = self.image_encoder(fake_imgs[-1])
                w_loss, s_loss = damsm_generator_loss(self.image_encoder, fake_imgs[-1], words_emb, sent_emb, batch,
                                                      cfg, features, negatives)
            kl = KL_loss(mu.float(), logvar.float())
            paired, logged = paired_terms(cfg, self.image_encoder, features[0], fake_imgs, reals,  # every stage
                                          extra_encoder_now(self), self.real_cache)
            if anchored:
                anchor, logged["anchor"] = anchor_term(cfg, anchor_imgs, reals[:len(anchor_imgs)])
                paired = paired + anchor
            err_g = (cfg.TRAIN.COEFF.ADV * cfg.TRAIN.ADV_INTERVAL * adv.float() + w_loss + s_loss
                     + cfg.TRAIN.COEFF.KL * kl + paired)
            losses.update(logged)
            gan_step(err_g, self.optG, self.scaler)
        if self.ema is not None:
            self.ema.update(self.netG, self.step)
        if adversarial:
            losses["errG_adv"] = adv.detach()
        losses.update(errG=err_g.detach(), w_loss=w_loss.detach(), s_loss=s_loss.detach(), kl_loss=kl.detach())
        return losses

    def sampling_forward(self, net, batch):
        text_sampling_forward(self.text_encoder, net, batch, self.z_dim)

    def with_fresh_draws(self, noise, ca_eps, sent_emb, words_emb, mask):
        """TRAIN.PAIRED_ANCHOR: the batch's noise (and conditioning-augmentation draw) followed by fresh draws for
        the same captions, and the text repeated to match: (noise [2B, Z], ca_eps [2B, C], (sent, words, mask)).
        The fresh draws' images pay the anchor term: IMLE trains only the draw nearest the real image, so what the
        noise can supply (the background a caption names, say) G need not learn from the text; an image from any
        draw must show what the caption fixes."""
        b, c_dim, gen = noise.size(0), unwrap(self.netG).ca_net.c_dim, self.draw_generator
        if ca_eps is None:
            ca_eps = torch.randn(b, c_dim, device=noise.device, generator=gen)
        noise = torch.cat((noise, torch.randn(noise.shape, dtype=noise.dtype, device=noise.device, generator=gen)))
        ca_eps = torch.cat((ca_eps, torch.randn(b, c_dim, device=noise.device, generator=gen)))
        return noise, ca_eps, tuple(repeat_batch(t, 2) for t in (sent_emb, words_emb, mask))

    @torch.no_grad()
    def nearest_noise(self, k, sent_emb, words_emb, mask, reals):
        """Per caption, of k draws of the noise (z and the conditioning augmentation's normal draw) the one whose
        image lies nearest (pixel distance) the caption's real image (TRAIN.PAIRED_CANDIDATES; implicit maximum
        likelihood estimation, Li & Malik 2018). The paired terms then pull that image towards the real one instead
        of pulling one image towards the mean of all the real images a caption fits: the noise decides what the
        caption leaves open ("a red circle" without a place, its size, the background), not the loss. The draws
        are compared on G's first image (`preview`: stage 1, whose layout the later stages refine), so k draws cost
        about k/5 of a forward on `shapes` instead of k. With TRAIN.PAIRED_MAP_CANDIDATES = m > 1 the chosen draw's
        noise map (its first g·g entries, GAN.GRID_NOISE) is then drawn m times with the rest held and the nearest
        kept: the first choice settles what fills the image (the background), the second where objects go."""
        b, net_g, gen = sent_emb.size(0), unwrap(self.netG), self.draw_generator
        noise = torch.randn(k * b, self.z_dim, device=sent_emb.device, generator=gen)
        eps = torch.randn(k * b, net_g.ca_net.c_dim, device=sent_emb.device, generator=gen)
        if self.memory is not None:  # TRAIN.PAIRED_MEMORY: the draw chosen last time is candidate 0
            keys, (noise, eps) = self.memory.recall(reals[-1], [noise, eps])
        noise, eps = self._nearest(k, noise, eps, sent_emb, words_emb, mask, reals)
        k_map = self.cfg.TRAIN.PAIRED_MAP_CANDIDATES
        if k_map > 1:  # then, the rest held, the noise map (where objects go) from k_map draws of it
            g = net_g.h_net1.grid_size  # > 0: __init__ refuses PAIRED_MAP_CANDIDATES without GAN.GRID_NOISE
            maps = noise.repeat(k_map, 1)
            maps[:, :g * g] = torch.randn(k_map * b, g * g, device=noise.device, generator=gen)
            noise, eps = self._nearest(k_map, maps, eps.repeat(k_map, 1), sent_emb, words_emb, mask, reals)
        if self.memory is not None:
            self.memory.remember(keys, (noise, eps))
        return noise, eps

    def _nearest(self, k, noise, eps, sent_emb, words_emb, mask, reals):
        """Of k candidate draws per caption (noise, eps: [k·B, ...], candidate-major), the one whose preview is
        nearest the caption's real image: (noise [B, Z], eps [B, C])."""
        with self.rt.autocast():
            imgs = unwrap(self.netG).preview(noise, sent_emb, words_emb, mask, eps, candidates=k)
        real = next(r for r in reals if r.size(-1) == imgs.size(-1))
        return nearest_draws(k, imgs, real, noise, eps)

    # ---- outputs ------------------------------------------------------------------------------------------------
    def save_snapshot(self, epoch):
        atomic_save(self.sampling_generator().state_dict(), FAMILY.snapshot_path(self.model_dir, epoch))
        for i, d in enumerate(self.netsD):
            atomic_save(d.state_dict(), os.path.join(self.model_dir, f"netD{i}.pth"))
        self.log_images(self.step, tag=f"epoch_{epoch}")

    def _fixed_batch(self, dataset, n):
        raw = torch.utils.data.default_collate([dataset[i] for i in range(min(n, len(dataset)))])
        batch = prepare_data(raw, self.rt.device)
        noise = torch.randn(len(batch.keys), self.z_dim, generator=torch.Generator().manual_seed(self.seed))
        return batch, noise.to(self.rt.device)

    @torch.no_grad()
    def log_images(self, step, tag=None):
        """Samples of the (EMA) generator for a fixed batch and noise, with captions, plus attention maps."""
        if self.fixed is None:  # its draws, like G's below, come from the fork of BaseTrainer.rng_isolated
            self.fixed = self._fixed_batch(self.train_set, 8)
        batch, noise = self.fixed
        netG = self.sampling_generator()
        with eval_mode(netG):
            words_emb, sent_emb, mask = encode_captions(self.text_encoder, batch)
            fake_imgs, att_maps, _, _ = netG(noise, sent_emb, words_emb, mask)
        captions = [decode_ids(self.train_set, batch.captions[i, :int(batch.cap_lens[i])].tolist())
                    for i in range(len(batch.keys))]
        name = tag or f"step_{step}"
        grid = image_grid(fake_imgs[-1], captions, ncol=4)
        grid.save(os.path.join(self.image_dir, f"G_{name}.png"))
        if att_maps:
            words = [c.split() for c in captions]
            build_super_images(fake_imgs[-1], words, [a.float() for a in att_maps[-1]]).save(
                os.path.join(self.image_dir, f"G_{name}_attention.png"))
        self.logger.image(step, "samples", pil_to_chw(grid))

