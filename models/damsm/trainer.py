"""DAMSM pre-training (A/code/pretrain_DAMSM.py): the text and image encoders every generator is trained against.

Recipe as AttnGAN: Adam(ENCODER_LR, betas (0.5, 0.999)) over the text encoder and the image encoder's trainable
layers, lr ×ENCODER_LR_DECAY every ENCODER_LR_DECAY_EPOCHS epochs (AttnGAN: 1) while above ENCODER_LR/10,
gradient-norm clip RNN_GRAD_CLIP on the text encoder, loss = words_loss (both directions) + sent_loss (both
directions); with DAMSM.SWAP_NEGATIVES (ours) each image's caption with one word swapped within a group is one
more negative (`models.damsm.losses`). Deviation: the original re-created Adam every epoch (resetting its
moments); here one Adam runs through, and only its learning rate changes, so a resumed run is identical to an
uninterrupted one.

Every DAMSM.VALID_INTERVAL epochs (AttnGAN: every epoch) and after the last: validation losses on up to
DAMSM.VALID_BATCHES test batches and R-precision (DM-GAN protocol: the true caption against 99 captions of other
classes) of real test images. The validation loader shuffles, as AttnGAN's: CUB's
test split is sorted by class, so unshuffled batches are each one class, every mismatched pair is masked as
same-class and the losses read 0. Validation draws from its own generators seeded with EVAL.SEED (the same batches,
crops and captions every epoch and every run) and leaves the training random streams untouched. Snapshots every SNAPSHOT_INTERVAL epochs:
`text_encoder%d.pth`, `image_encoder%d.pth` (plain state dicts, the released format) and `attention_maps%d.png`.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from datasets import build_dataloader, prepare_data
from eval.rprecision import r_precision
from miscc.checkpoint import atomic_save
from miscc.losses import swap_word_groups
from miscc.vis import build_super_images
from models.damsm import build_image_encoder, build_text_encoder
from models.damsm.losses import damsm_losses
from trainers.base import BaseTrainer, loop_settings
from trainers.common import caption_vocabulary
from trainers.optim import gan_step
from trainers.runtime import unwrap, wrap_ddp


@torch.no_grad()
def damsm_r_precision(image_encoder, text_encoder, dataset, device, n_samples: int = 1000, batch_size: int = 50,
                      seed: int = 0, folds: int = 10) -> tuple[float, float]:
    """R-precision (%) of real images of `dataset` with their own captions vs 99 captions of other classes."""
    rng = np.random.default_rng(seed)
    n = min(n_samples, len(dataset))
    idx = rng.choice(len(dataset), size=n, replace=False)
    img_codes, captions, mismatched = [], [], []  # (ids, length): each image's own caption; its 99 of other classes
    for start in range(0, n, batch_size):
        items = [dataset[int(i)] for i in idx[start:start + batch_size]]
        imgs = torch.stack([it["imgs"][-1] for it in items]).to(device)
        img_codes.append(image_encoder(imgs)[1].float().cpu())
        captions += [(it["caption"], int(it["cap_len"])) for it in items]
        for it in items:
            mcaps, mlens = dataset.mismatched_captions(it["class_id"], n=99, rng=rng)
            mismatched += list(zip(mcaps, mlens.tolist()))
    codes = caption_codes(text_encoder, captions + mismatched, device, batch_size=max(batch_size, 500))
    return r_precision(torch.cat(img_codes), codes[:n], codes[n:].view(n, 99, -1), folds=folds, seed=seed)


def caption_codes(text_encoder, captions, device, batch_size: int = 500) -> torch.Tensor:
    """Sentence codes [len(captions), D] of (token ids, length) pairs, each distinct caption encoded once: R-precision
    draws the same test captions again and again (99 mismatched ones per image; with a BERT encoder the repeats were
    nearly all of a validation's time)."""
    keys = [tuple(caption[:length].tolist()) for caption, length in captions]
    row: dict[tuple, int] = {}  # a distinct caption -> its row among the codes
    unique = []  # the index in `captions` of each distinct caption's first occurrence
    for i, key in enumerate(keys):
        if key not in row:
            row[key] = len(unique)
            unique.append(i)
    codes = []
    for start in range(0, len(unique), batch_size):
        chunk = [captions[i] for i in unique[start:start + batch_size]]
        codes.append(sentence_codes(text_encoder, torch.stack([c for c, _ in chunk]),
                                    torch.tensor([length for _, length in chunk]), device))
    return torch.cat(codes)[torch.tensor([row[key] for key in keys])]


def sentence_codes(text_encoder, captions, cap_lens, device) -> torch.Tensor:
    """Sentence codes of unsorted captions (packing needs descending lengths: sort, encode, unsort)."""
    order = torch.argsort(cap_lens, descending=True)
    t = int(cap_lens.max())
    _, sent = text_encoder(captions[order, :t].to(device), cap_lens[order].to(device))
    out = torch.empty_like(sent)
    out[order.to(sent.device)] = sent
    return out.float().cpu()


class DAMSMTrainer(BaseTrainer):
    def __init__(self, cfg, rt, output_dir, train_set, valid_set):
        torch.manual_seed(cfg.SEED)
        self.valid_set = valid_set
        text_encoder = build_text_encoder(cfg, train_set.n_words).to(rt.device)
        image_encoder = build_image_encoder(cfg).to(rt.device)
        self.text_encoder = wrap_ddp(text_encoder, rt)
        self.image_encoder = wrap_ddp(image_encoder, rt)
        self.text_params = [p for p in text_encoder.parameters() if p.requires_grad]
        params = self.text_params + [p for p in image_encoder.parameters() if p.requires_grad]
        self.base_lr = cfg.TRAIN.ENCODER_LR
        self.optimizer = torch.optim.Adam(params, lr=self.base_lr, betas=(cfg.TRAIN.BETA1, cfg.TRAIN.BETA2))
        self.gammas = (cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.GAMMA2, cfg.TRAIN.SMOOTH.GAMMA3)
        self.ixtoword = train_set.ixtoword
        self.swap_groups = None
        if cfg.DAMSM.SWAP_NEGATIVES:
            self.swap_groups = swap_word_groups(list(cfg.DAMSM.SWAP_NEGATIVES), caption_vocabulary(train_set))
        self.last_attn = None
        super().__init__(cfg, rt, output_dir, train_set, **loop_settings(cfg))

    def modules(self):
        return {"text_encoder": self.text_encoder, "image_encoder": self.image_encoder}

    def optimizers(self):
        return {"encoders": self.optimizer}

    def lr_for_epoch(self, epoch: int) -> float:
        """ENCODER_LR × ENCODER_LR_DECAY once every ENCODER_LR_DECAY_EPOCHS epochs (AttnGAN: every epoch;
        BERT-AttnGAN: every 10), but never below ENCODER_LR/10 (AttnGAN stops decaying there)."""
        lr = self.base_lr
        for _ in range(epoch // max(1, self.cfg.TRAIN.ENCODER_LR_DECAY_EPOCHS)):
            if lr > self.base_lr / 10.0:
                lr *= self.cfg.TRAIN.ENCODER_LR_DECAY
        return lr

    def set_learning_rates(self, epoch: int, step: int = 0) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_for_epoch(epoch) * self.cooldown_scale(step)

    def make_batch(self, raw):
        return prepare_data(raw, self.rt.device)

    def train_step(self, batch):
        loss, parts, attn = damsm_losses(self.image_encoder, self.text_encoder, batch, self.gammas, self.rt,
                                         self.swap_groups, image_noise=self.cfg.DAMSM.IMAGE_NOISE)
        gan_step(loss, self.optimizer, self.scaler, clip_params=self.text_params, max_norm=self.cfg.TRAIN.RNN_GRAD_CLIP)
        self.last_attn = (batch.imgs[-1][:8].detach(), batch.captions[:8].cpu(), batch.cap_lens[:8].cpu(),
                          [a.detach().cpu()[0] for a in attn[:8]])  # each [1, L, h, w]
        return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    @torch.no_grad()
    def end_of_epoch(self, epoch):
        every = self.cfg.DAMSM.VALID_INTERVAL
        last = epoch + 1 >= self.cfg.TRAIN.MAX_EPOCH
        if self.valid_set is None or not every or ((epoch + 1) % every and not last):
            return {}
        devices = [self.rt.device.index or 0] if self.rt.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.EVAL.SEED)
            return self.validate()

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation losses and R-precision of the current encoders (see the module docstring)."""
        text_encoder, image_encoder = unwrap(self.text_encoder), unwrap(self.image_encoder)
        text_encoder.eval()
        image_encoder.eval()
        loader = build_dataloader(self.valid_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                                  workers=self.workers, generator=torch.Generator().manual_seed(self.cfg.EVAL.SEED))
        totals = {"w_loss": 0.0, "s_loss": 0.0}
        n = 0
        for i, raw in enumerate(loader):
            if i >= self.cfg.DAMSM.VALID_BATCHES:
                break
            _, parts, _ = damsm_losses(image_encoder, text_encoder, prepare_data(raw, self.rt.device),
                                       self.gammas, self.rt)
            totals["w_loss"] += float(parts["w_loss0"] + parts["w_loss1"])
            totals["s_loss"] += float(parts["s_loss0"] + parts["s_loss1"])
            n += 1
        metrics = {k: v / max(n, 1) for k, v in totals.items()}
        mean, std = damsm_r_precision(image_encoder, text_encoder, self.valid_set, self.rt.device,
                                      n_samples=self.cfg.DAMSM.RPREC_SAMPLES, seed=self.cfg.EVAL.SEED)
        metrics.update({"R_precision": mean, "R_precision_std": std, "lr": self.lr_for_epoch(self.epoch)})
        return metrics

    def save_snapshot(self, epoch):
        atomic_save(unwrap(self.text_encoder).state_dict(), os.path.join(self.model_dir, f"text_encoder{epoch}.pth"))
        atomic_save(unwrap(self.image_encoder).state_dict(),
                    os.path.join(self.model_dir, f"image_encoder{epoch}.pth"))
        self.save_attention_maps(os.path.join(self.image_dir, f"attention_maps{epoch}.png"))

    def log_images(self, step):
        self.save_attention_maps(os.path.join(self.image_dir, f"attention_maps_step{step}.png"))

    def save_attention_maps(self, path):
        if self.last_attn is None:
            return
        imgs, caps, lens, attn = self.last_attn
        words = [[self.ixtoword.get(int(w), "?") for w in caps[i, :int(lens[i])]] for i in range(len(attn))]
        build_super_images(imgs, words, attn).save(path)
