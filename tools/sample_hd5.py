"""Sample a GAN-INT-CLS generator from the stored embeddings of an hd5 split (Reed's files have no text encoder)."""
from __future__ import annotations

import argparse
import os
import sys

from miscc.config import add_config_arguments, config_from_args, resolve_path
from miscc.errors import run_cli
from models.gan_int_cls.dataset import open_hd5
from models.gan_int_cls.sampling import build_sampling_generator, load_sampling_generator, sample_hd5
from trainers.runtime import setup_runtime


def main(argv=None) -> int:
    """`python -m tools.sample_hd5 --cfg <config> --net_g <gen_N.pth> [--split test] [--out DIR] [--n N]`:
    sample a generator from the embeddings of an hd5 split (INTCLS.HD5_PATH)."""
    parser = argparse.ArgumentParser(prog="python -m tools.sample_hd5",
                                     description="Sample a GAN-INT-CLS generator from an hd5 split's embeddings")
    add_config_arguments(parser)
    parser.add_argument("--net_g", default=None, help="generator file (default TRAIN.NET_G), e.g. gen_190.pth")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--out", default=None, help="output folder (default <net_g without .pth>/<split>_hd5)")
    parser.add_argument("--n", type=int, default=None, help="at most this many images (default: the whole split)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    net_g = args.net_g or cfg.TRAIN.NET_G
    if not net_g:
        parser.error("give --net_g or set TRAIN.NET_G")
    rt = setup_runtime(cfg.GPU_ID)
    dataset = open_hd5(cfg, args.split)
    path = resolve_path(net_g)
    net = load_sampling_generator(build_sampling_generator(cfg), path).to(rt.device).eval()
    out = args.out or os.path.join(os.path.splitext(path)[0], f"{args.split}_hd5")
    result = sample_hd5(net, dataset, out, z_dim=cfg.GAN.Z_DIM, device=rt.device, batch_size=cfg.EVAL.BATCH_SIZE,
                        seed=cfg.EVAL.SEED, limit=args.n, workers=cfg.WORKERS)
    print(f"wrote {result['n']} images to {result['folder']} (captions: {result['captions']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
