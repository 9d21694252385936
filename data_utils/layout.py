"""The on-disk layouts of a text-image data folder (cub, coco, custom), their errors, and the split metadata."""
from __future__ import annotations

import os

import numpy as np

from miscc.errors import InputError, MissingFileError, UnreadableFileError
from miscc.safe_pickle import safe_load_pickle


LAYOUTS = ("cub", "coco", "custom")
SPLITS = ("train", "test")
CUSTOM_IMAGE_EXTS = ("png", "jpg", "jpeg")

_COMMON_TREE = """\
  text/<key>.txt                     one caption per line
  train/filenames.pickle             list of keys (test/filenames.pickle likewise)
  train/class_info.pickle            optional: one class id per key (missing: one class per image)
  captions.pickle                    optional: [train_caps, test_caps, ixtoword, wordtoix] (missing: rebuilt from text/)
"""
_LAYOUT_TREES = {
    "cub": """\
  CUB_200_2011/images/<key>.jpg      e.g. images/002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg
  CUB_200_2011/images.txt            '<id> <class>/<image>.jpg' per line
  CUB_200_2011/bounding_boxes.txt    '<id> <x> <y> <width> <height>' per line, same rows as images.txt
""",
    "coco": """\
  images/<key>.jpg                   train2014 and val2014 images together
""",
    "custom": """\
  images/<key>.<png|jpg|jpeg>        one extension for all images (python -m tools.import_folder makes this)
""",
}


class DatasetLayoutError(MissingFileError):
    """DATA_DIR or a file the chosen layout needs is missing; the message shows the expected tree."""


class CorruptImageError(UnreadableFileError):
    """An image file that cannot be decoded."""


def expected_layout(layout: str) -> str:
    """The folder tree a layout expects, as printed in layout errors."""
    return f"<DATA_DIR>/\n{_LAYOUT_TREES[layout]}{_COMMON_TREE}"


def layout_error(data_dir: str, layout: str, missing: list[str], what: str = "not found") -> DatasetLayoutError:
    """The first line names the first missing path (entry points print it as the `error:` line), the next ones the
    other missing paths and the tree `layout` expects."""
    others = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    shown = "".join(f"  {p}\n" for p in missing[1:5])
    more = f"  ... and {len(missing) - 5} more\n" if len(missing) > 5 else ""
    return DatasetLayoutError(
        f"{what}: {missing[0]}{others}\n{shown}{more}DATA_DIR {data_dir} does not match layout '{layout}', which "
        f"expects:\n{expected_layout(layout)}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------------------------

def load_filenames(data_dir: str, split: str) -> list[str]:
    """Keys of a split from `<split>/filenames.pickle` (a list of str; Python-2 pickles decode as latin1)."""
    path = os.path.join(data_dir, split, "filenames.pickle")
    keys = safe_load_pickle(path)
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, (str, bytes)) for k in keys):
        raise InputError(f"{path}: expected a list of image keys (str), got {type(keys).__name__}")
    if not keys:
        raise InputError(f"{path}: the '{split}' split lists no images")
    return [k.decode("utf-8") if isinstance(k, bytes) else k for k in keys]


def load_class_ids(data_dir: str, split: str, n_images: int) -> np.ndarray:
    """Class ids from `<split>/class_info.pickle`, or `np.arange(n_images)` (one class per image) when absent."""
    path = os.path.join(data_dir, split, "class_info.pickle")
    if not os.path.isfile(path):
        return np.arange(n_images, dtype=np.int64)
    ids = np.asarray(safe_load_pickle(path))
    if ids.ndim != 1 or len(ids) != n_images or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{path}: expected {n_images} integer class ids (one per key in filenames.pickle), "
                         f"got an array of shape {ids.shape} and dtype {ids.dtype}")
    return ids.astype(np.int64)


def load_bboxes(data_dir: str) -> dict[str, tuple[float, float, float, float]]:
    """`{key: (x, y, w, h)}` from CUB's `images.txt` and `bounding_boxes.txt`, zipped by row as the original does
    (the image ids of the two files must agree row by row)."""
    images_txt = os.path.join(data_dir, "CUB_200_2011", "images.txt")
    boxes_txt = os.path.join(data_dir, "CUB_200_2011", "bounding_boxes.txt")
    with open(images_txt, encoding="utf-8") as f:
        images = [line.split() for line in f if line.strip()]
    with open(boxes_txt, encoding="utf-8") as f:
        boxes = [line.split() for line in f if line.strip()]
    if len(images) != len(boxes):
        raise InputError(f"{images_txt} has {len(images)} rows but {boxes_txt} has {len(boxes)}; they pair by row")
    out = {}
    for row, (im, box) in enumerate(zip(images, boxes), 1):
        if len(im) != 2 or len(box) != 5:
            bad = images_txt if len(im) != 2 else boxes_txt
            raise InputError(f"{bad}, row {row}: expected '<id> <path>' / '<id> <x> <y> <w> <h>', got {im or box}")
        if im[0] != box[0]:
            raise InputError(f"row {row}: image id {im[0]} in {images_txt} but {box[0]} in {boxes_txt}")
        key = os.path.splitext(im[1])[0]
        try:
            out[key] = tuple(float(v) for v in box[1:])
        except ValueError as e:
            raise InputError(f"{boxes_txt}, row {row}: bounding box is not numeric: {box[1:]}") from e
    return out


def bbox_crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """AttnGAN's CUB crop (`get_imgs`): a square of half-side int(0.75*max(w, h)) around the box centre, clipped
    to the image. Returns (x1, y1, x2, y2) for `PIL.Image.crop`."""
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)
