"""DF-GAN as `main.py` sees it (MODEL dfgan): DFGAN.* config, `netG_epoch_%d.pth` snapshots, a frozen DAMSM text
encoder, the sentence only.

DFGAN.VERSION picks DF-GAN 2022 (Tao et al., CVPR 2022; tobran/DF-GAN `code/models/GAN.py`) or 2021 (`9015356`
`code/model.py`), see `models.dfgan.build`. Snapshots: `netG_epoch_%d.pth` (the generator) and, for 2022, DF-GAN's
own `state_epoch_%03d.pth`; TRAIN.NET_G may be either, or a released one (`models.dfgan.checkpoint.load_generator`).
Sampling noise: plain normal, or with EVAL.TRUNCATION DF-GAN's truncated normal ([-2, 2]·EVAL.TRUNC_RATE), which
`trainers.sampling` applies for every family.
"""
from __future__ import annotations

from models.dfgan.build import build_generator
from models.dfgan.checkpoint import load_generator
from trainers.family import ModelFamily


def generate(net, noise, sent_emb, words_emb, mask):
    """(images, None): DF-GAN uses the sentence only."""
    return net(noise, sent_emb), None


def generate_stages(net, noise, sent_emb, words_emb, mask):
    """([images], []): one stage, no attention maps."""
    return [net(noise, sent_emb)], []


FAMILY = ModelFamily(
    name="dfgan", title="DF-GAN", trainer="models.dfgan.trainer:DFGANTrainer", config_section="DFGAN",
    build_generator=build_generator, load_generator=load_generator, generate=generate,
    generate_stages=generate_stages, snapshot="netG_epoch_%d.pth",
    demo_configs={"rnn": "cfg/shapes_dfgan.yml", "bert": "cfg/shapes_dfgan_bert.yml"})
