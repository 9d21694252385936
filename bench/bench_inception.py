"""Inception-v3 feature-extraction speed (images/s) on CPU fp32/bf16 and, when present, CUDA fp32/bf16.

    python bench/bench_inception.py [--batch 32] [--images 64] [--size 64] [--threads N] [--precision]

Random weights (eval.inception.random_inception_state_dict): speed does not depend on the values. `--precision`
also measures how much bf16 autocast moves FID/IS/KID against fp32 on two synthetic image sets (random weights, so
the size of the change, not the metric values, is what carries over).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from eval.inception import InceptionExtractor, random_inception_state_dict  # noqa: E402


def images_per_second(extractor: InceptionExtractor, images: torch.Tensor, repeats: int = 2) -> float:
    extractor(images[:2])  # warm-up (allocations, oneDNN/cuDNN algorithm choice)
    best = float("inf")
    for _ in range(repeats):
        if extractor.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        extractor.extract(images)
        if extractor.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return images.shape[0] / best


def synthetic_sets(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two uint8 image sets with different low-frequency colour statistics."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(2 * n, 3, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    noise = 0.1 * torch.randn(2 * n, 3, size, size, generator=g)
    a = (smooth[:n] + noise[:n]).clamp(0, 1)
    b = (0.7 * smooth[n:] + 0.3 + noise[n:]).clamp(0, 1)
    return (a * 255).round().to(torch.uint8), (b * 255).round().to(torch.uint8)


def precision_check(sd: dict, n: int, size: int, batch: int) -> None:
    from eval.metrics import fid_from_features, inception_score, kernel_inception_distance

    a, b = synthetic_sets(n, size)
    out = {}
    for bf16 in (False, True):
        ex = InceptionExtractor(features=("2048", "logits_unbiased"), device="cpu", bf16=bf16, batch_size=batch,
                                state_dict=sd)
        fa, fb = ex.extract(a), ex.extract(b)
        out[bf16] = {"features": fa["2048"],
                     "FID": fid_from_features(fa["2048"], fb["2048"]),
                     "IS": inception_score(logits=fa["logits_unbiased"])[0],
                     "KID": kernel_inception_distance(fa["2048"], fb["2048"])[0]}
    rel_rms = float((out[True]["features"] - out[False]["features"]).norm() / out[False]["features"].norm())
    print(f"\nbf16 autocast vs fp32 on CPU, {n}+{n} synthetic {size}px images, random weights:")
    print(f"  pool3 features: relative RMS difference {rel_rms:.2e}")
    print("| metric | fp32 | bf16 | relative change |")
    print("|---|---|---|---|")
    for key in ("FID", "IS", "KID"):
        f32, b16 = out[False][key], out[True][key]
        print(f"| {key} | {f32:.6g} | {b16:.6g} | {abs(b16 - f32) / abs(f32):.2e} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=64, help="images per timing run")
    parser.add_argument("--size", type=int, default=64, help="input size (the network resizes to 299)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", action="store_true", help="also measure bf16's effect on FID/IS/KID")
    parser.add_argument("--precision_images", type=int, default=200)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sd = random_inception_state_dict(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    runs = [("cpu", False), ("cpu", True)]
    if torch.cuda.is_available():
        runs += [("cuda", False), ("cuda", True)]
    print(f"Inception-v3 (inception-v3-compat) features '2048'+'logits_unbiased', {args.images} images of "
          f"{args.size}px, batch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| device | dtype | batch | images/s |")
    print("|---|---|---|---|")
    for device, bf16 in runs:
        ex = InceptionExtractor(device=device, bf16=bf16, batch_size=args.batch, state_dict=sd)
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        print(f"| {name} | {ex.dtype_name} | {args.batch} | {images_per_second(ex, images):.1f} |", flush=True)
    if args.precision:
        precision_check(sd, args.precision_images, 32, args.batch)


if __name__ == "__main__":
    main()
