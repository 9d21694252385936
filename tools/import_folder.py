"""Import a folder of captioned images as an AttnGAN-format dataset (the `custom` layout of datasets.py).

    python -m tools.import_folder --src my_pictures --out data/mine [--test_fraction 0.2 --seed 0
                                  --captions_per_image N --max_words 100 --strict_text]

Input: image files (png, jpg, jpeg, bmp, gif, tif, tiff, webp), each with a same-named `.txt` next to it holding one
caption per line. Images in sub-folders take their class from the folder (`cats/01.jpg` -> class `cats`, key
`cats/01`); a flat folder gives every image its own class. Output under `--out`:

    images/<key>.<ext>        copied (re-encoded as PNG when the input mixes formats)
    text/<key>.txt            copied as UTF-8, captions over --max_words words cut (with a warning)
    train|test/filenames.pickle, train|test/class_info.pickle (ints), class_names.txt
    captions.pickle           [train_caps, test_caps, ixtoword, wordtoix], vocabulary of this data
    example_filenames.txt     a few test caption files for gen_example

The train/test split is a seeded random split of the images. The captions.pickle vocabulary belongs to this data:
train a text encoder (DAMSM) on it; released encoders need their own captions.pickle. Answers AttnGAN issues #31,
#65, #72, #82 (how to build these files for a new dataset). Invalid UTF-8 in a caption file is a warning naming the
file and line (the bytes become U+FFFD), or an error with `--strict_text`.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import warnings
from collections import Counter

import numpy as np

from datasets import TextDataset, build_captions, open_rgb, read_caption_lines, write_captions_pickle
from miscc.errors import InputError, add_debug_argument, run_cli
from miscc.text import cut_sentence, read_text_lines

MAX_WORDS = 100  # default --max_words: longer lines are not captions (TEXT.WORDS_NUM is suggested separately)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class FolderImportError(InputError):
    """The source folder cannot be imported (the message names the file and what was expected)."""


def scan_folder(src: str) -> list[tuple[str, str, str, str | None]]:
    """`(key, image_path, text_path, class_name)` per image, sorted by key; class_name is None in a flat folder."""
    if not os.path.isdir(src):
        raise FolderImportError(f"--src {src} is not a folder")
    entries, missing_text = [], []
    for dirpath, dirnames, files in os.walk(src):
        dirnames.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTS or name.startswith("."):
                continue
            rel_dir = os.path.relpath(dirpath, src)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
            key = f"{rel_dir}/{stem}" if rel_dir else stem
            text = os.path.join(dirpath, stem + ".txt")
            if not os.path.isfile(text):
                missing_text.append(text)
            entries.append((key, os.path.join(dirpath, name), text, rel_dir or None))
    if not entries:
        raise FolderImportError(f"no images ({', '.join(IMAGE_EXTS)}) found under {src}")
    if missing_text:
        more = f" and {len(missing_text) - 1} more" if len(missing_text) > 1 else ""
        raise FolderImportError(f"caption file not found: {missing_text[0]}{more} (each image needs a same-named .txt "
                           "with one caption per line)")
    dup = sorted(k for k, n in Counter(e[0] for e in entries).items() if n > 1)
    if dup:
        same = [e[1] for e in entries if e[0] == dup[0]]
        raise FolderImportError(f"two images share the key '{dup[0]}': {same} (names must differ beyond the extension)")
    flat = [e for e in entries if e[3] is None]
    if flat and len(flat) != len(entries):
        nested = next(e for e in entries if e[3] is not None)
        raise FolderImportError(f"{src} mixes images at the top level ({flat[0][1]}) with images in class sub-folders "
                           f"({nested[1]}): put every image in a class folder, or none")
    return sorted(entries)


def _check_image(path: str) -> None:
    """Decode the whole image (a truncated JPEG passes PIL's `verify`, which reads only the headers)."""
    try:
        open_rgb(path)
    except Exception as e:
        raise FolderImportError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


def copy_captions(src: str, dst: str, max_words: int, strict: bool = False) -> int:
    """Write the caption file `src` to `dst` as UTF-8 with every line cut to `max_words` words (`cut_sentence`;
    0 keeps all); returns how many lines were cut. Invalid UTF-8: see `miscc.text.read_text_lines`."""
    lines = read_text_lines(src, strict)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut = [cut_sentence(line, max_words, f"{src}, line {i}") for i, line in enumerate(lines, 1)]
    if caught:  # one warning per file, not per line
        more = f" (and {len(caught) - 1} more lines)" if len(caught) > 1 else ""
        warnings.warn(f"{caught[0].message}{more}")
    with open(dst, "w", encoding="utf-8") as f:
        f.write("\n".join(cut))
    return len(caught)


def import_folder(src: str, out: str, test_fraction: float = 0.2, seed: int = 0,
                  captions_per_image: int | None = None, max_words: int = MAX_WORDS, strict_text: bool = False) -> dict:
    """Write the custom layout for `src` into `out`; returns a summary (counts, captions per image, vocabulary)."""
    if not 0 < test_fraction < 1:
        raise FolderImportError(f"--test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if os.path.isdir(out) and os.listdir(out):
        raise FolderImportError(f"--out {out} exists and is not empty; choose a new folder")
    entries = scan_folder(src)
    if len(entries) < 2:
        raise FolderImportError(f"{src}: {len(entries)} image; a train/test split needs at least 2")
    counts = {}
    for key, image, text, _ in entries:
        _check_image(image)
        counts[key] = len(read_caption_lines(text, 10 ** 9, warn=False, strict=strict_text))
        if counts[key] == 0:
            raise FolderImportError(f"{text}: no caption (one caption per line, with at least one word)")
    if captions_per_image is None:
        captions_per_image = min(counts.values())
    elif captions_per_image < 1:
        raise FolderImportError(f"--captions_per_image must be positive, got {captions_per_image}")

    exts = {os.path.splitext(e[1])[1].lower() for e in entries}
    exts = {".jpg" if x == ".jpeg" else x for x in exts}
    out_ext = exts.pop() if len(exts) == 1 and exts <= {".png", ".jpg"} else ".png"
    n_cut = 0
    for key, image, text, _ in entries:
        dst = os.path.join(out, "images", key + out_ext)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.splitext(image)[1].lower() in ((".jpg", ".jpeg") if out_ext == ".jpg" else (out_ext,)):
            shutil.copyfile(image, dst)
        else:
            open_rgb(image).save(dst)
        txt = os.path.join(out, "text", key + ".txt")
        os.makedirs(os.path.dirname(txt), exist_ok=True)
        n_cut += copy_captions(text, txt, max_words, strict_text)

    keys = [e[0] for e in entries]
    if entries[0][3] is None:
        names = keys
        class_of = {k: i for i, k in enumerate(keys)}
    else:
        names = sorted({e[3] for e in entries})
        class_of = {e[0]: names.index(e[3]) for e in entries}
    perm = np.random.default_rng(seed).permutation(len(keys))
    n_test = min(len(keys) - 1, max(1, int(round(test_fraction * len(keys)))))
    splits = {"test": sorted(keys[i] for i in perm[:n_test]), "train": sorted(keys[i] for i in perm[n_test:])}
    for split, split_keys in splits.items():
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for name, obj in (("filenames", split_keys), ("class_info", [class_of[k] for k in split_keys])):
            with open(os.path.join(out, split, f"{name}.pickle"), "wb") as f:
                pickle.dump(obj, f, protocol=2)
    with open(os.path.join(out, "class_names.txt"), "w", encoding="utf-8") as f:
        f.writelines(f"{i} {n}\n" for i, n in enumerate(names))
    with open(os.path.join(out, "example_filenames.txt"), "w", encoding="utf-8") as f:
        f.writelines(f"text/{k}\n" for k in splits["test"][:10])

    captions = build_captions(out, splits["train"], splits["test"], captions_per_image)
    write_captions_pickle(os.path.join(out, "captions.pickle"), captions)
    lengths = np.array([len(c) for c in captions[0] + captions[1]])
    return dict(out=out, n_images=len(keys), n_train=len(splits["train"]), n_test=len(splits["test"]),
                n_classes=len(names), captions_per_image=captions_per_image, n_words=len(captions[2]),
                image_ext=out_ext[1:], few_captions=sorted(k for k, n in counts.items() if n < captions_per_image),
                caption_length_p95=int(np.percentile(lengths, 95)), captions_cut=n_cut)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="folder of images with same-named .txt caption files")
    parser.add_argument("--out", required=True, help="new dataset folder, e.g. data/mine")
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--captions_per_image", type=int, default=None,
                        help="captions kept per image (default: the smallest count over all files)")
    parser.add_argument("--max_words", type=int, default=MAX_WORDS,
                        help="cut longer caption lines to this many words, with a warning (0: keep every word)")
    parser.add_argument("--strict_text", action="store_true",
                        help="invalid UTF-8 in a caption file is an error (default: a warning, decoded with U+FFFD)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fewer than CAPTIONS_PER_IMAGE")  # summarised below
        s = import_folder(args.src, args.out, args.test_fraction, args.seed, args.captions_per_image,
                          args.max_words, args.strict_text)
        TextDataset(args.out, "train", layout="custom", branch_num=1, captions_per_image=s["captions_per_image"])
    print(f"imported {s['n_images']} images ({s['n_train']} train, {s['n_test']} test, {s['n_classes']} classes, "
          f"{s['image_ext']}) into {s['out']}; vocabulary {s['n_words']} words")
    if s["few_captions"]:
        print(f"warning: {len(s['few_captions'])} images have fewer than {s['captions_per_image']} captions (their "
              f"captions repeat), e.g. {s['few_captions'][0]}")
    print("config:\n"
          f"  DATA_DIR: '{s['out']}'\n  DATASET_NAME: '{os.path.basename(os.path.normpath(s['out']))}'\n"
          f"  DATA:\n    LAYOUT: 'custom'\n"
          f"  TEXT:\n    CAPTIONS_PER_IMAGE: {s['captions_per_image']}\n"
          f"    WORDS_NUM: {max(s['caption_length_p95'], 1)}  # 95th percentile of caption lengths")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
