"""Train or sample a text-to-image GAN: `python main.py --cfg cfg/bird_attn2.yml`.

- TRAIN.FLAG True (and B_VALIDATION False): train the generator named by MODEL (attngan, ssagan, ...) against the
  frozen DAMSM encoders of TRAIN.NET_E; snapshots, logs and image grids go to the run folder; afterwards the
  example sentences are drawn and the EVAL.PROTOCOLS metrics (if any) are computed.
- B_VALIDATION True: sample the test set with the generator in TRAIN.NET_G (the 30,000 protocol, EVAL.SAMPLE_MODE)
  into `<NET_G without .pth>/valid/`, then run EVAL.PROTOCOLS on those images.
- TRAIN.FLAG False, B_VALIDATION False: AttnGAN's `gen_example` — images and attention maps for every entry of
  `<DATA_DIR>/example_filenames.txt`, into `<NET_G without .pth>/<entry>/`.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import torch

from datasets import build_dataset
from miscc.config import add_config_arguments, config_from_args, resolve_path
from trainers.common import load_damsm
from trainers.registry import get_model_spec
from trainers.runtime import seed_everything, setup_runtime, shutdown_runtime
from trainers.sampling import gen_example, sample_test_set


def default_output_dir(cfg) -> str:
    return os.path.join(cfg.OUTPUT_DIR, f"{cfg.DATASET_NAME}_{cfg.CONFIG_NAME or cfg.MODEL}")


def load_generator(cfg, spec, path: str, device):
    path = resolve_path(path)
    net = spec.build_generator(cfg)
    spec.load_generator(net, path)
    return net.to(device).eval(), path


def run_sampling(cfg, spec, rt, net_g_path: str) -> dict:
    """B_VALIDATION: the evaluation images of the test split under `<NET_G stem>/valid/`, then the metrics."""
    test_set = build_dataset(cfg, "test", every_caption=cfg.EVAL.SAMPLE_MODE == "every")
    netG, path = load_generator(cfg, spec, net_g_path, rt.device)
    text_encoder, _ = load_damsm(cfg, test_set.n_words, rt.device, with_image_encoder=False)
    out_dir = os.path.join(os.path.splitext(path)[0], "valid")
    result = sample_test_set(
        lambda *a: spec.generate(netG, *a), text_encoder, test_set, out_dir, z_dim=cfg.GAN.Z_DIM,
        device=rt.device, n_samples=cfg.EVAL.N_SAMPLES, mode=cfg.EVAL.SAMPLE_MODE, batch_size=cfg.EVAL.BATCH_SIZE,
        seed=cfg.EVAL.SEED, truncation=cfg.EVAL.TRUNC_RATE if cfg.EVAL.TRUNCATION else None,
        save_extras=spec.save_extras, workers=cfg.WORKERS)
    print(f"wrote {result['n']} images to {result['folder']} (captions: {result['captions']})", flush=True)
    return result


def run_examples(cfg, spec, rt, net_g_path: str) -> list[str]:
    """AttnGAN `gen_example`: every example_filenames.txt entry → `<NET_G stem>/<entry basename>/`."""
    dataset = build_dataset(cfg, "test")
    netG, path = load_generator(cfg, spec, net_g_path, rt.device)
    text_encoder, _ = load_damsm(cfg, dataset.n_words, rt.device, with_image_encoder=False)
    out_root = os.path.splitext(path)[0]
    written = gen_example(lambda *a: spec.generate_stages(netG, *a), text_encoder, dataset, out_root,
                          z_dim=cfg.GAN.Z_DIM, device=rt.device, seed=cfg.SEED)
    if spec.example_extras is not None:
        with torch.no_grad():
            spec.example_extras(netG, text_encoder, dataset, out_root, z_dim=cfg.GAN.Z_DIM, device=rt.device,
                                seed=cfg.SEED)
    print(f"wrote {len(written)} example images under {os.path.splitext(path)[0]}", flush=True)
    return written


def run_hd5_sampling(cfg, spec, rt, net_g_path: str) -> None:
    """GAN-INT-CLS on Reed's hd5 (precomputed embeddings, no text encoder): the test split's captions →
    `<NET_G stem>/valid/single/<example>.png` (the port's `predict`)."""
    from trainers.gan_int_cls import open_hd5, sample_hd5

    netG, path = load_generator(cfg, spec, net_g_path, rt.device)
    out_dir = os.path.join(os.path.splitext(path)[0], "valid")
    result = sample_hd5(netG, open_hd5(cfg, "test"), out_dir, z_dim=cfg.GAN.Z_DIM, device=rt.device,
                        batch_size=cfg.EVAL.BATCH_SIZE, seed=cfg.EVAL.SEED, limit=cfg.EVAL.N_SAMPLES)
    print(f"wrote hd5 samples to {out_dir}: {result}", flush=True)


def latest_generator(model_dir: str) -> str:
    """The newest generator snapshot: `netG_epoch_%d.pth` (AttnGAN) or `netG_%03d.pth` (SSA-GAN)."""
    found = {}
    for name in os.listdir(model_dir):
        m = re.fullmatch(r"netG_(?:epoch_)?(\d+)\.pth", name)
        if m:
            found[int(m.group(1))] = name
    if not found:
        raise FileNotFoundError(f"no netG_epoch_<N>.pth or netG_<NNN>.pth in {model_dir}")
    return os.path.join(model_dir, found[max(found)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--output_dir", default=None, help="run folder (default OUTPUT_DIR/<DATASET>_<CONFIG>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="STATE",
                        help="continue from a training state (default: the run folder's Model/training_state.pth)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    spec = get_model_spec(cfg.MODEL)
    rt = setup_runtime(cfg.GPU_ID, cfg.TRAIN.AMP)
    seed_everything(cfg.SEED, rt.rank)
    if cfg.TRAIN.FLAG and not cfg.B_VALIDATION:
        output_dir = args.output_dir or default_output_dir(cfg)
        train_set = build_dataset(cfg, "train") if spec.uses_text_dataset(cfg) else None
        trainer = spec.trainer_class()(cfg, rt, output_dir, train_set)
        if args.resume is not None:
            trainer.resume(args.resume or None)
        if rt.is_main:
            print(f"{cfg.MODEL}: {len(trainer.train_set)} training items, device {rt.device}, output {output_dir}",
                  flush=True)
        trainer.fit()
        if rt.is_main:
            net_g = latest_generator(trainer.model_dir)
            print(f"generator: {net_g}", flush=True)
            if cfg.MODEL == "ssagan" and cfg.TRAIN.FINETUNE_TEXT_ENCODER:  # sample with the fine-tuned encoder
                cfg.TRAIN.NET_E = os.path.join(trainer.model_dir, f"text_encoder{trainer.epoch}.pth")
            if not spec.uses_text_dataset(cfg):
                run_hd5_sampling(cfg, spec, rt, net_g)
            else:
                run_examples(cfg, spec, rt, net_g)
                if cfg.EVAL.PROTOCOLS:
                    run_sampling(cfg, spec, rt, net_g)
    elif not cfg.TRAIN.NET_G:
        raise SystemExit("sampling needs TRAIN.NET_G: the generator file (e.g. netG_epoch_600.pth)")
    elif not spec.uses_text_dataset(cfg):
        run_hd5_sampling(cfg, spec, rt, cfg.TRAIN.NET_G)
    elif cfg.B_VALIDATION:
        run_sampling(cfg, spec, rt, cfg.TRAIN.NET_G)
    else:
        run_examples(cfg, spec, rt, cfg.TRAIN.NET_G)
    shutdown_runtime(rt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
