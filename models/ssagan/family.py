"""SSA-GAN as `main.py` sees it: SSA.* config, `netG_%03d.pth` snapshots, masks beside every sample, and with
TRAIN.FINETUNE_TEXT_ENCODER its own text encoder saved with each snapshot."""
from __future__ import annotations

from models.ssagan.build import build_generator
from models.ssagan.networks import load_ssagan_generator
from models.ssagan.sampling import gen_example_masks, save_last_mask
from trainers.family import ModelFamily


def generate(net, noise, sent_emb, words_emb, mask):
    return net(noise, sent_emb, words_emb, mask)  # (image, per-stage masks); words read only with GAN.WORD_GRID


def generate_stages(net, noise, sent_emb, words_emb, mask):
    image, _ = net(noise, sent_emb, words_emb, mask)
    return [image], []  # masks are not word attention: models.ssagan.sampling.write_example_masks draws them


def generate_masks(net, noise, sent_emb, words_emb, mask):
    image, masks = net(noise, sent_emb, words_emb, mask)  # masks [B, 1, h, w] per block, 4x4 up to the image size
    return [image], masks


def text_source(cfg) -> str:
    return "finetuned" if cfg.TRAIN.FINETUNE_TEXT_ENCODER else "damsm"


FAMILY = ModelFamily(
    name="ssagan", title="SSA-GAN", trainer="models.ssagan.trainer:SSAGANTrainer", config_section="SSA",
    build_generator=build_generator, load_generator=load_ssagan_generator, generate=generate,
    generate_stages=generate_stages, snapshot="netG_%03d.pth", save_extras=save_last_mask,
    example_extras=gen_example_masks, generate_masks=generate_masks, text_source=text_source,
    demo_configs={"rnn": "cfg/shapes_ssa.yml", "bert": "cfg/shapes_ssa_bert.yml"})
