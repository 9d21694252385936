"""DAMSM pre-training loss: words_loss and sent_loss in both directions (AttnGAN `pretrain_DAMSM.py`), and, as an
option of ours, word-swap hard negatives (DAMSM.SWAP_NEGATIVES)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from miscc.losses import (class_mask, paired_words_similarity, sent_loss, sent_similarity, swap_negatives, words_loss,
                          words_similarity)


def damsm_losses(image_encoder, text_encoder, batch, gammas, rt, swap_groups: list[list[int]] | None = None,
                 generator: torch.Generator | None = None, image_noise: float = 0.0):
    """(total, parts dict, attention maps) of one batch; `gammas` = (GAMMA1, GAMMA2, GAMMA3).

    With `swap_groups` (DAMSM.SWAP_NEGATIVES as vocabulary ids; ours) each image also meets its own caption with one
    word swapped (`swap_negatives`) as one more column of the image -> caption terms (w_loss0, s_loss0). A batch
    rarely holds two images that differ in one attribute, so without such negatives the encoders need not tell
    "circle" from "square" once colour and place tell the captions apart: on `shapes` the 8-epoch DAMSM preferred
    an image's caption to its circle/square-swapped copy 56 % of the time; with the shape words as a group, 81 %.

    `image_noise` > 0 (DAMSM.IMAGE_NOISE; ours) adds Gaussian noise of that std to the images first. On `shapes` a
    16-epoch DAMSM tells circles from squares (96 %) but G trained against its image encoder learned neither places
    nor colours; with noise 0.1 in its training it reads 98.5 % and G learns (README)."""
    g1, g2, g3 = gammas
    imgs = batch.imgs[-1]
    if image_noise:
        imgs = imgs + image_noise * torch.randn(imgs.shape, generator=generator, device=imgs.device, dtype=imgs.dtype)
    with rt.autocast():
        words_features, sent_code = image_encoder(imgs)
        words_emb, sent_emb = text_encoder(batch.captions, batch.cap_lens)
    words_features, sent_code = words_features.float(), sent_code.float()
    words_emb, sent_emb = words_emb.float(), sent_emb.float()
    b = words_emb.size(0)
    labels = torch.arange(b, device=words_emb.device)
    if not swap_groups:
        w0, w1, attn = words_loss(words_features, words_emb, labels, batch.cap_lens, batch.class_ids, b, g1, g2, g3)
        s0, s1 = sent_loss(sent_code, sent_emb, labels, batch.class_ids, b, g3)
    else:
        neg_ids, has = swap_negatives(batch.captions, batch.cap_lens, swap_groups, generator)
        with rt.autocast():
            neg_words, neg_sent = text_encoder(neg_ids, batch.cap_lens)
        w_sims, attn = words_similarity(words_features, words_emb, batch.cap_lens, g1, g2)
        neg_w = paired_words_similarity(words_features, neg_words.float(), batch.cap_lens, g1, g2)
        w0, w1 = _losses_with_negative(w_sims, neg_w, has, batch.class_ids, labels, g3)
        neg_s = sent_similarity(sent_code, neg_sent.float()).diagonal()
        s0, s1 = _losses_with_negative(sent_similarity(sent_code, sent_emb), neg_s, has, batch.class_ids, labels, g3)
    parts = {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}
    return w0 + w1 + s0 + s1, parts, attn


def _losses_with_negative(sims, neg, has, class_ids, labels, gamma3):
    """(image -> caption CE over [the batch's captions, the image's own hard negative], caption -> image CE as
    AttnGAN's); same-class pairs masked as words_loss / sent_loss mask them; the negative column is -inf where a
    caption has none."""
    sims = sims * gamma3
    if class_ids is not None:
        sims = sims.masked_fill(class_mask(class_ids, sims.device), float("-inf"))
    extra = (neg * gamma3).masked_fill(~has, float("-inf")).unsqueeze(1)
    return F.cross_entropy(torch.cat((sims, extra), 1), labels), F.cross_entropy(sims.t(), labels)
