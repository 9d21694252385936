"""Convert a dataset in our (AttnGAN) layout to Reed's GAN-INT-CLS hd5, embedding the captions with our frozen text
encoder: `python -m tools.convert_hd5 --cfg <config with a text encoder> --out data/shapes.hdf5
[--captions_per_image 5] [--valid_fraction 0.1]`.

Reed's hd5 holds, per image, `captions_per_image` captions drawn with replacement from the image's captions, each
an example `<image basename>_<c>` with the raw image file, its class and the caption's embedding
(`miscc.reed_hd5.convert_to_reed_hd5`). Here the embedding is the sentence vector of the text encoder of the config
(TRAIN.NET_E, RNN or BERT per TEXT.ENCODER) for the caption as written in `text/<key>.txt`, whole (no WORDS_NUM cut,
which training applies at random). The classes are named `class_<id:05d>` from `class_info.pickle`.

The train split becomes `train` and the test split `test`; `--valid_fraction f` moves a seeded random fraction f of
the train *classes* (at least one) to `valid`, as Reed's splits are by class. Train the result with
INTCLS.TEXT_SOURCE 'hd5', INTCLS.HD5_PATH the output and INTCLS.EMBED_DIM the printed embedding size. Because the
embeddings come from our encoder, such a generator can also be sampled from new sentences with that encoder.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from datasets import build_dataset
from miscc.config import add_config_arguments, config_from_args
from miscc.errors import InputError, run_cli
from miscc.reed_hd5 import convert_to_reed_hd5
from trainers.common import load_damsm
from trainers.sampling import encode_sentences


def class_name(class_id: int) -> str:
    """Reed's class folder style (`class_00001`)."""
    return f"class_{int(class_id):05d}"


def split_items(dataset, indices=None) -> list[tuple]:
    """(key, image path, class name, captions) per image of a TextDataset (or of `indices` only), for
    `convert_to_reed_hd5`; the captions are the text lines of the image (`caption_text`)."""
    cpi = dataset.captions_per_image
    indices = range(dataset.n_images) if indices is None else indices
    return [(dataset.filenames[i], dataset.image_paths[i], class_name(dataset.class_ids[i]),
             [dataset.caption_text(i * cpi + j) for j in range(cpi)]) for i in indices]


def split_off_valid(class_ids: np.ndarray, fraction: float, rng: np.random.Generator):
    """(train image indices, valid image indices): a random `fraction` of the classes (at least one) goes to valid;
    at least two classes stay in train (CLS needs wrong images of another class)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"--valid_fraction must be in [0, 1), got {fraction}")
    classes = np.unique(class_ids)
    if fraction == 0.0:
        return np.arange(len(class_ids)), np.array([], dtype=np.int64)
    n_valid = max(1, int(round(fraction * len(classes))))
    if len(classes) - n_valid < 2:
        raise InputError(f"--valid_fraction {fraction} would leave {len(classes) - n_valid} of the {len(classes)} "
                         "train classes in train; at least 2 are needed")
    valid_classes = rng.permutation(classes)[:n_valid]
    in_valid = np.isin(class_ids, valid_classes)
    return np.flatnonzero(~in_valid), np.flatnonzero(in_valid)


def make_embed_fn(text_encoder, dataset, device, source: str):
    """captions (list of str) -> float32 [N, D] sentence vectors of the frozen `text_encoder`."""

    @torch.no_grad()
    def embed(captions: list[str]) -> np.ndarray:
        ids, lens, _ = encode_sentences(captions, dataset, source)
        _, sent_emb = text_encoder(ids.to(device), lens.to(device))
        return sent_emb.float().cpu().numpy()

    return embed


def convert(cfg, out: str, captions_per_image: int = 5, valid_fraction: float = 0.0) -> dict:
    """Write the hd5 file; returns {'counts': examples per split, 'embed_dim': D}."""
    if captions_per_image < 1:
        raise InputError(f"--captions_per_image must be >= 1, got {captions_per_image}")
    device = torch.device("cuda", cfg.GPU_ID) if cfg.GPU_ID >= 0 and torch.cuda.is_available() else "cpu"
    train = build_dataset(cfg, "train", augment=False)
    test = build_dataset(cfg, "test", augment=False)
    text_encoder, _ = load_damsm(cfg, train.n_words, device, with_image_encoder=False)
    rng = np.random.default_rng(cfg.SEED)
    train_idx, valid_idx = split_off_valid(train.class_ids, valid_fraction, rng)
    splits = {"train": split_items(train, train_idx), "test": split_items(test)}
    if len(valid_idx):
        splits["valid"] = split_items(train, valid_idx)
    encode = make_embed_fn(text_encoder, train, device, "a caption of DATA_DIR/text")
    dims = []

    def embed(captions):
        vectors = encode(captions)
        dims.append(vectors.shape[1])
        return vectors

    counts = convert_to_reed_hd5(out, splits, embed, captions_per_image=captions_per_image, rng=rng)
    return {"counts": counts, "embed_dim": dims[0] if dims else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.convert_hd5", description=__doc__.split("\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="the hd5 file to write")
    parser.add_argument("--captions_per_image", type=int, default=5,
                        help="captions drawn (with replacement) per image, each one example (Reed: 5)")
    parser.add_argument("--valid_fraction", type=float, default=0.0,
                        help="fraction of the train classes moved to the 'valid' split (default 0)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    result = convert(cfg, args.out, args.captions_per_image, args.valid_fraction)
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items())
    print(f"wrote {args.out}: {counts} examples, {result['embed_dim']}-d embeddings. Train with "
          f"INTCLS.TEXT_SOURCE=hd5 INTCLS.HD5_PATH={args.out} INTCLS.EMBED_DIM={result['embed_dim']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
