"""DAMSM pre-training loss: words_loss and sent_loss in both directions (AttnGAN `pretrain_DAMSM.py`)."""
from __future__ import annotations

import torch

from miscc.losses import sent_loss, words_loss


def damsm_losses(image_encoder, text_encoder, batch, gammas, rt):
    """(total, parts dict, attention maps) of one batch; `gammas` = (GAMMA1, GAMMA2, GAMMA3)."""
    g1, g2, g3 = gammas
    with rt.autocast():
        words_features, sent_code = image_encoder(batch.imgs[-1])
        words_emb, sent_emb = text_encoder(batch.captions, batch.cap_lens)
    words_features, sent_code = words_features.float(), sent_code.float()
    words_emb, sent_emb = words_emb.float(), sent_emb.float()
    b = words_emb.size(0)
    labels = torch.arange(b, device=words_emb.device)
    w0, w1, attn = words_loss(words_features, words_emb, labels, batch.cap_lens, batch.class_ids, b, g1, g2, g3)
    s0, s1 = sent_loss(sent_code, sent_emb, labels, batch.class_ids, b, g3)
    parts = {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}
    return w0 + w1 + s0 + s1, parts, attn
