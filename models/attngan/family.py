"""AttnGAN / BERT-AttnGAN as `main.py` sees it: GAN.* config, `netG_epoch_%d.pth` snapshots, the frozen DAMSM."""
from __future__ import annotations

from miscc.checkpoint import load_checkpoint, load_state_dict_strict
from models.attngan.build import build_generator
from trainers.family import ModelFamily


def load_generator(net, path):
    load_state_dict_strict(net, load_checkpoint(path, "generator (TRAIN.NET_G)"), path)
    return net


def generate(net, noise, sent_emb, words_emb, mask):
    imgs, att, _, _ = net(noise, sent_emb, words_emb, mask)
    return imgs[-1], att


def generate_stages(net, noise, sent_emb, words_emb, mask):
    imgs, att, _, _ = net(noise, sent_emb, words_emb, mask)
    return imgs, att


FAMILY = ModelFamily(
    name="attngan", title="AttnGAN", trainer="models.attngan.trainer:AttnGANTrainer", config_section="GAN",
    build_generator=build_generator, load_generator=load_generator, generate=generate,
    generate_stages=generate_stages, snapshot="netG_epoch_%d.pth",
    demo_configs={"rnn": "cfg/shapes_attn.yml", "bert": "cfg/shapes_bert_attn.yml"})
