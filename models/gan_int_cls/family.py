"""GAN-INT-CLS as `main.py` sees it: INTCLS.* config, `netG_epoch_%d.pth` snapshots, the sentence vector of the
frozen DAMSM or (INTCLS.TEXT_SOURCE hd5) Reed's stored embeddings; with INTCLS.SRCNN_WEIGHTS each sample also gets
an SRCNN-upscaled `<stem>_x<scale>.png`."""
from __future__ import annotations

from models.gan_int_cls.dataset import open_hd5, text_source as intcls_text_source
from models.gan_int_cls.sampling import (build_sampling_generator, generate, generate_stages, load_sampling_generator,
                                         sample_hd5, save_extras)
from trainers.family import ModelFamily


def text_source(cfg) -> str:
    return "hd5" if intcls_text_source(cfg) == "hd5" else "damsm"


def sample_test_split(cfg, net, out_dir: str, device) -> dict:
    """The hd5 file's test split, one image per stored embedding (the port's `predict`)."""
    return sample_hd5(net, open_hd5(cfg, "test"), out_dir, z_dim=cfg.GAN.Z_DIM, device=device,
                      batch_size=cfg.EVAL.BATCH_SIZE, seed=cfg.EVAL.SEED, limit=cfg.EVAL.N_SAMPLES)


FAMILY = ModelFamily(
    name="gan_int_cls", title="GAN-INT-CLS", trainer="models.gan_int_cls.trainer:GANINTCLSTrainer",
    config_section="INTCLS", build_generator=build_sampling_generator, load_generator=load_sampling_generator,
    generate=generate, generate_stages=generate_stages, snapshot="netG_epoch_%d.pth", save_extras=save_extras,
    text_source=text_source, sample_own_data=sample_test_split,
    demo_configs={"rnn": "cfg/shapes_gan_int_cls.yml", "bert": "cfg/shapes_bert_gan_int_cls.yml"})
