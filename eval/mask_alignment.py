"""Do SSA-GAN's predicted masks cover the objects it draws? A number for the paper's mask figure, on plain backgrounds.

SSA-GAN's mask predictor should light up where the text-described object is (Liao et al. 2022, Fig. 1/5). On the
`shapes` data every background is one flat colour, so the objects of a generated image can be read off its pixels:
a pixel is "object" when its colour is more than `threshold` grey levels (max over channels) away from the median
colour of the image's one-pixel border. Each image's mask is then scored as a detector of those pixels by its ROC
AUC (Mann-Whitney, ties averaged): 0.5 is a mask that ignores the objects, 1.0 one that is higher on every object
pixel than on any background pixel. Images whose pixels are all object or all background are skipped.

    python -m eval.mask_alignment output/.../netG_016/valid/single   # the <key>_s<i>.png / _mask.png pairs
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image
from scipy.stats import rankdata
from miscc.errors import InputError, MissingFileError, add_debug_argument, run_cli

MASK_SUFFIX = "_mask.png"


def object_pixels(image: np.ndarray, threshold: float = 48.0) -> np.ndarray:
    """bool [H, W]: pixels of uint8 `image` [H, W, 3] farther than `threshold` from the median border colour."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    background = np.median(border, axis=0)
    return np.abs(image.astype(np.float32) - background).max(axis=-1) > threshold


def mask_auc(mask: np.ndarray, objects: np.ndarray) -> float | None:
    """ROC AUC of `mask` [H, W] (any real scale) as a score for the True pixels of `objects`; None if one class
    is empty."""
    scores, labels = mask.ravel().astype(np.float64), objects.ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float mask resized (bilinear) to (H, W) when the image is larger than the mask, as in the paper's figure."""
    if mask.shape == size:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.float32)).resize((size[1], size[0]), Image.BILINEAR))


def mask_alignment(pairs, threshold: float = 48.0) -> dict:
    """Summary over (image uint8 [H, W, 3], mask float [h, w]) pairs: mean/std/median AUC, the mean mask value on
    object and on background pixels, the number of images scored and skipped."""
    aucs, inside, outside, skipped = [], [], [], 0
    for image, mask in pairs:
        objects = object_pixels(image, threshold)
        mask = resize_mask(np.asarray(mask, dtype=np.float32), objects.shape)
        auc = mask_auc(mask, objects)
        if auc is None:
            skipped += 1
            continue
        aucs.append(auc)
        inside.append(float(mask[objects].mean()))
        outside.append(float(mask[~objects].mean()))
    if not aucs:
        raise InputError("no image had both object and background pixels: nothing to score")
    return {"mask_auc": float(np.mean(aucs)), "mask_auc_std": float(np.std(aucs)),
            "mask_auc_median": float(np.median(aucs)), "n": len(aucs),
            "skipped": skipped, "mask_on_objects": float(np.mean(inside)),
            "mask_on_background": float(np.mean(outside)), "threshold": threshold}


def folder_pairs(folder: str):
    """(image, mask in [0, 1]) for every `<stem>_mask.png` with its `<stem>.png` in `folder`."""
    names = sorted(f for f in os.listdir(folder) if f.endswith(MASK_SUFFIX))
    if not names:
        raise MissingFileError(f"{folder}: no '*{MASK_SUFFIX}' files (SSA-GAN sampling writes them next to the "
                                f"images)")
    for name in names:
        image_path = os.path.join(folder, name[:-len(MASK_SUFFIX)] + ".png")
        if not os.path.isfile(image_path):
            raise MissingFileError(f"{os.path.join(folder, name)} has no image {image_path}")
        image = np.asarray(Image.open(image_path).convert("RGB"))
        mask = np.asarray(Image.open(os.path.join(folder, name)).convert("L"), dtype=np.float32) / 255.0
        yield image, mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a sampling folder with <stem>.png and <stem>_mask.png files")
    parser.add_argument("--threshold", type=float, default=48.0, help="object/background colour distance")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    print(json.dumps(mask_alignment(folder_pairs(args.folder), args.threshold), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
