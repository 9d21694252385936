"""Images (and attention maps) for sentences given on the command line.

`python -m tools.generate --cfg cfg/eval_bird.yml [--set TRAIN.NET_G=...] --out samples "a small red bird" ...`
writes `<out>/0_s_<j>_g<k>.png` per stage k and `0_s_<j>_a<k>.png` attention maps, as AttnGAN's `gen_example`.
Unknown words are dropped with a warning; a sentence without a known word is an error. Sentences longer than
TEXT.WORDS_NUM words are cut to it, with a warning.
"""
from __future__ import annotations

import argparse
import sys

from datasets import build_dataset
from miscc.config import add_config_arguments, config_from_args
from miscc.errors import ensure_output_dir, run_cli
from miscc.text import cut_sentence
from models.registry import get_family
from trainers.common import load_damsm
from trainers.runtime import setup_runtime
from trainers.sampling import generate_sentences


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--netG", default=None, help="generator file (default: TRAIN.NET_G)")
    parser.add_argument("--out", default="samples", help="output folder")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("sentences", nargs="+")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    net_g = args.netG or cfg.TRAIN.NET_G
    if not net_g:
        parser.error("give the generator with --netG or TRAIN.NET_G")
    ensure_output_dir(args.out, "--out")
    sentences = [cut_sentence(s, cfg.TEXT.WORDS_NUM, f"sentence {j}") for j, s in enumerate(args.sentences)]
    spec = get_family(cfg.MODEL)
    rt = setup_runtime(cfg.GPU_ID)
    dataset = build_dataset(cfg, "test")  # its vocabulary (or BERT tokenizer) maps the words
    netG, _ = spec.open_generator(cfg, net_g, rt.device)
    text_encoder, _ = load_damsm(cfg, dataset.n_words, rt.device, with_image_encoder=False)
    written = generate_sentences(lambda *a: spec.generate_stages(netG, *a), text_encoder, dataset, sentences,
                                 args.out, z_dim=cfg.GAN.Z_DIM, device=rt.device, seed=args.seed)
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
