"""Dataset items/s on `shapes` (the per-step data work): `python -m bench.bench_data [--data_dir data/shapes]`.

AttnGAN's pipeline (random crop: a PIL crop and resize per item) against the cached one the shapes configs use
(no random crop: every branch image decoded once and kept as uint8 tensors, only a flip per item).
"""
from __future__ import annotations

import argparse
import time
import warnings

from bench.common import print_table
from datasets import TextDataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data/shapes")
    parser.add_argument("--items", type=int, default=4000)
    args = parser.parse_args(argv)
    rows = []
    for name, kw in (("random crop + flip (AttnGAN)", dict(random_crop=True, flip="random")),
                     ("no crop, text flip (shapes configs)", dict(random_crop=False, flip="text"))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = TextDataset(args.data_dir, "train", layout="custom", base_size=32, branch_num=2, words_num=20,
                             cache_images=1, **kw)
        n = min(args.items, len(ds))
        for i in range(n):  # first pass fills the caches
            ds[i]
        start = time.perf_counter()
        for i in range(n):
            ds[i]
        rows.append([name, n, f"{n / (time.perf_counter() - start):.0f}"])
    print_table("Dataset items/s (32 + 64 px, cached decode)", ["pipeline", "items", "items/s"], rows)


if __name__ == "__main__":
    main()
