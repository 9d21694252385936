"""Enlarge images with SRCNN: `python -m tools.srcnn_upscale --weights srcnn_x3.pth --scale 3 --input <file|folder>
[--out folder] [--device cpu]`.

Each input `<name>.<ext>` becomes `<name>_x<scale>.png`, next to the original or in `--out`. A folder is read
non-recursively (png, jpg, jpeg, bmp, webp); files that already end in `_x<scale>` (earlier outputs) are skipped.
The SRCNN weights are trained for one scale (yjn870 ships x2, x3, x4); a mismatch between the `_x<n>` in the
weights' file name and `--scale` is reported as a warning (the GAN-INT-CLS fork's README ran x3 weights at scale 4).
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from PIL import Image

from miscc.errors import MissingFileError, UnreadableFileError, add_debug_argument, ensure_output_dir, run_cli
from models.srcnn import load_srcnn, upscale

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def find_inputs(path: str, scale: int) -> list[str]:
    """The image files to process: `path` itself, or the images directly inside the folder `path`."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise MissingFileError(f"input not found: {path}")
    suffix = f"_x{scale}"
    return [os.path.join(path, f) for f in sorted(os.listdir(path))
            if f.lower().endswith(EXTENSIONS) and not os.path.splitext(f)[0].endswith(suffix)
            and os.path.isfile(os.path.join(path, f))]


def output_path(src: str, scale: int, out_dir: str | None) -> str:
    stem = os.path.splitext(os.path.basename(src))[0]
    return os.path.join(out_dir or os.path.dirname(os.path.abspath(src)), f"{stem}_x{scale}.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.srcnn_upscale", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="SRCNN state dict, e.g. srcnn_x3.pth (yjn870)")
    parser.add_argument("--scale", type=int, default=3, help="upscaling factor (default 3)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--out", default=None, help="output folder (default: next to each input)")
    parser.add_argument("--device", default="cpu", help="torch device for SRCNN (default cpu)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error(f"--scale must be >= 1, got {args.scale}")
    model = load_srcnn(args.weights, device=args.device)
    inputs = find_inputs(args.input, args.scale)
    trained = re.search(r"_x(\d+)", os.path.basename(args.weights))
    if trained and int(trained.group(1)) != args.scale:
        print(f"warning: {args.weights} looks trained for x{trained.group(1)}, running it at --scale {args.scale}",
              file=sys.stderr)
    if not inputs:
        raise MissingFileError(f"no images ({', '.join(EXTENSIONS)}) in {args.input}")
    if args.out:
        ensure_output_dir(args.out, "--out")
    for src in inputs:
        try:
            with Image.open(src) as im:
                result = upscale(im.convert("RGB"), model, args.scale)
        except OSError as e:
            raise UnreadableFileError(f"cannot read image {src} ({e})") from e
        dst = output_path(src, args.scale, args.out)
        result.save(dst)
        print(f"{src} -> {dst} ({result.width}x{result.height})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
