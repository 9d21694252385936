"""Train the DAMSM text and image encoders: `python pretrain_DAMSM.py --cfg cfg/DAMSM/bird.yml`.

Writes `<output>/Model/text_encoder%d.pth` and `image_encoder%d.pth` every TRAIN.SNAPSHOT_INTERVAL epochs, the
training state for `--resume`, attention-map pictures under `Image/`, and TensorBoard scalars and a text log under
`Log/`. Point a generator config's TRAIN.NET_E at the text encoder; the image encoder is found next to it.
"""
from __future__ import annotations

import os
import sys

from datasets import build_dataset
from miscc.config import parse_training_args
from miscc.errors import run_cli
from models.damsm.trainer import DAMSMTrainer
from trainers.runtime import shutdown_runtime, start_runtime


def default_output_dir(cfg) -> str:
    return os.path.join(cfg.OUTPUT_DIR, f"{cfg.DATASET_NAME}_{cfg.CONFIG_NAME or 'DAMSM'}")


def main(argv=None) -> int:
    args, cfg = parse_training_args(__doc__.splitlines()[0], argv)
    rt = start_runtime(cfg)
    output_dir = args.output_dir or default_output_dir(cfg)
    train_set = build_dataset(cfg, "train")
    valid_set = build_dataset(cfg, "test")
    trainer = DAMSMTrainer(cfg, rt, output_dir, train_set, valid_set)
    if args.resume is not None:
        trainer.resume(args.resume or None)
    if rt.is_main:
        print(f"DAMSM: {len(train_set)} train / {len(valid_set)} test images, vocabulary {train_set.n_words}, "
              f"device {rt.device}, output {output_dir}", flush=True)
    trainer.fit()
    shutdown_runtime(rt)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
