"""Evaluate a folder of generated images with named protocols, or write FID statistics of a folder.

    python -m eval.evaluate --images out/samples --protocols fid1k,is1k --real data/shapes/images \
        --inception weights/weights-inception-2015-12-05-6726825d.pth [--captions captions.json]
        [--classifier output/shapes_classifier.pth] [--clip path/to/clip] [--out results.jsonl --report report.md]
    python -m eval.evaluate --images data/birds/val_images --save_stats bird_val.npz --inception ...

`--captions` is a JSON object {file name or stem: caption} or a list aligned with the sorted image files; clip,
cliprprec and attracc need it. `rprec` needs DAMSM encoders and is run from the training entry point, not here.
Protocol names: see eval/protocols.py (`<metric><count>[k][_cls]`, e.g. fid30k, kid1k, is500). Without Inception
weights, fid1k_cls/kid1k_cls/is1k_cls use the dataset classifier (--classifier) instead.
"""
from __future__ import annotations

import argparse
import os
import sys

from eval.protocols import EvalContext, folder_source, parse_protocols, run_protocols
from miscc.errors import InputError, add_debug_argument, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--images", required=True, help="folder of generated images (png/jpg)")
    p.add_argument("--protocols", default="", help="comma-separated, e.g. fid1k,is1k")
    p.add_argument("--captions", default=None, help="JSON captions for the images")
    p.add_argument("--real", default=None, help="real images folder, or FID statistics .npz (FID only)")
    p.add_argument("--real_n", type=int, default=None, help="use the first N real images (default all)")
    p.add_argument("--real_resize", type=int, default=None, help="PIL-bicubic resize real images to this size first")
    p.add_argument("--real_split", default="custom", help="name of the real split, for provenance and the cache")
    p.add_argument("--cache_dir", default=None, help="cache real statistics/features here")
    p.add_argument("--inception", default=None, help="Inception weights file (else $T2I_INCEPTION_WEIGHTS)")
    p.add_argument("--classifier", default=None, help="dataset classifier from eval.train_classifier")
    p.add_argument("--clip", default=None, help="local CLIP folder (transformers save_pretrained)")
    p.add_argument("--device", default=None)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the Inception (not for reporting)")
    p.add_argument("--batch_size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="R-precision folds / mismatched captions")
    p.add_argument("--checkpoint", default=None, help="generator checkpoint that made the images (provenance)")
    p.add_argument("--config", default=None, help="config file used (provenance)")
    p.add_argument("--out", default="eval_results.jsonl", help="append results to this JSONL")
    p.add_argument("--report", default=None, help="write a Markdown report here")
    p.add_argument("--grid", default=None, help="save a captioned grid of the first 16 images here")
    p.add_argument("--save_stats", default=None, help="write FID statistics (.npz) of --images and exit")
    add_debug_argument(p)
    return p


def save_folder_statistics(folder: str, out: str, inception: str | None, device=None, bf16=False,
                           resize: int | None = None, split: str = "custom") -> str:
    """pytorch-fid-format statistics of every image in `folder` (plus provenance in `meta`)."""
    from eval.fid_stats import real_features, save_statistics
    from eval.inception import InceptionExtractor

    extractor = InceptionExtractor(inception, ("2048",), device=device, bf16=bf16)
    _, stats = real_features(folder, extractor, split=split, resize=resize)
    save_statistics(out, stats.mu, stats.sigma, stats.meta)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.save_stats:
        path = save_folder_statistics(args.images, args.save_stats, args.inception, args.device, args.bf16,
                                      args.real_resize, args.real_split)
        print(f"wrote {path}")
        return []
    protocols = parse_protocols(args.protocols)
    if any(p.metric == "rprec" for p in protocols):
        raise InputError("rprec needs the DAMSM image/text encoders; run it through the training entry point "
                         "(or use cliprprec with --clip)")
    ctx = EvalContext(inception_weights=args.inception, real=args.real, real_split=args.real_split,
                      real_n=args.real_n, real_resize=args.real_resize, cache_dir=args.cache_dir,
                      classifier=args.classifier, clip_path=args.clip, device=args.device, bf16=args.bf16,
                      batch_size=args.batch_size, seed=args.seed, checkpoint=args.checkpoint,
                      config=args.config, jsonl=args.out, grid_png=args.grid)
    results = run_protocols(protocols, folder_source(args.images, args.captions), ctx)
    for r in results:
        std = f" +- {r['std']:.4f}" if r.get("std") is not None else ""
        print(f"{r['protocol']:>12}: {r['value']:.4f}{std}  (N={r['n']})")
    print(f"appended {len(results)} results to {os.path.abspath(args.out)}")
    if args.report:
        from eval.report import write_report

        write_report(args.out, args.report, args.grid)
        print(f"wrote {args.report}")
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
