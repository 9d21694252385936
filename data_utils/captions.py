"""Captions: the text files, AttnGAN's `captions.pickle` (built when missing, checked when read)."""
from __future__ import annotations

import os
import pickle
import warnings


from data_utils.layout import DatasetLayoutError
from miscc.errors import InputError
from miscc.files import atomic_path
from miscc.text import build_vocabulary, encode_tokens, read_caption_file, read_text_lines, tokenize_caption


def read_caption_lines(path: str, captions_per_image: int, warn: bool = True, strict: bool = False) -> list[str]:
    """The raw text (stripped) of the first `captions_per_image` lines that AttnGAN's tokeniser does not leave empty.

    The selection rule is the one of `miscc.text.read_caption_file`, so caption j of an image is the same sentence for
    the RNN (word ids) and BERT (raw text) paths.
    """
    out = []
    for line in read_text_lines(path, strict):
        if tokenize_caption(line):
            out.append(line.strip())
            if len(out) == captions_per_image:
                break
    if warn and len(out) < captions_per_image:
        warnings.warn(f"{path}: {len(out)} captions, fewer than CAPTIONS_PER_IMAGE={captions_per_image}")
    return out


def fill_captions(captions: list, captions_per_image: int, path: str) -> list:
    """Exactly `captions_per_image` captions, repeating the available ones in order when there are fewer.

    The original appended only what it found, which shifted every later image's captions (filename-major indexing
    assumes a fixed count per image); repeating keeps the index arithmetic right. A file without any caption is an
    error.
    """
    if not captions:
        raise InputError(f"{path}: no non-empty caption (each image needs at least one caption line)")
    return [captions[j % len(captions)] for j in range(captions_per_image)]


def build_captions(data_dir: str, train_keys: list[str], test_keys: list[str], captions_per_image: int,
                   strict_text: bool = False):
    """`[train_captions, test_captions, ixtoword, wordtoix]` from `text/<key>.txt`, as AttnGAN's `load_text_data`
    builds `captions.pickle`: vocabulary over train then test words (0 = '<end>'), filename-major id lists."""
    missing = [os.path.join(data_dir, "text", k + ".txt") for k in list(train_keys) + list(test_keys)
               if not os.path.isfile(os.path.join(data_dir, "text", k + ".txt"))]
    if missing:
        raise DatasetLayoutError(f"caption files not found (needed to build captions.pickle): {missing[0]}"
                                 + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    token_lists = []
    for keys in (train_keys, test_keys):
        split_tokens = []
        for k in keys:
            path = os.path.join(data_dir, "text", k + ".txt")
            split_tokens += fill_captions(read_caption_file(path, captions_per_image, strict=strict_text),
                                          captions_per_image, path)
        token_lists.append(split_tokens)
    ixtoword, wordtoix = build_vocabulary(token_lists[0] + token_lists[1])
    train_caps, test_caps = ([encode_tokens(t, wordtoix) for t in split] for split in token_lists)
    return [train_caps, test_caps, ixtoword, wordtoix]


def write_captions_pickle(path: str, captions) -> None:
    """Save `captions.pickle` with protocol 2 (the original's), atomically (temporary file + rename)."""
    with atomic_path(path, ".pickle") as tmp, open(tmp, "wb") as f:
        pickle.dump(captions, f, protocol=2)


def check_captions_pickle(path: str, data, split: str, n_images: int, captions_per_image: int):
    if not (isinstance(data, (list, tuple)) and len(data) == 4 and isinstance(data[2], dict)
            and isinstance(data[3], dict)):
        raise InputError(f"{path}: expected [train_captions, test_captions, ixtoword, wordtoix]")
    caps = data[0] if split == "train" else data[1]
    if len(caps) != n_images * captions_per_image:
        raise InputError(
            f"{path}: holds {len(caps)} {split} captions for {n_images} images in {split}/filenames.pickle "
            f"({len(caps) / n_images:.2f} per image), but CAPTIONS_PER_IMAGE={captions_per_image} needs "
            f"{n_images * captions_per_image}. Set TEXT.CAPTIONS_PER_IMAGE to the value the pickle was built with "
            "(CUB 10, COCO 5), or delete captions.pickle to rebuild it from text/"
        )
    n_words = len(data[2])
    for i, c in enumerate(caps):
        if len(c) == 0 or min(c) <= 0 or max(c) >= n_words:
            raise InputError(f"{path}: {split} caption {i} is empty or has a word id outside 1..{n_words - 1}: {c}")
    return [list(c) for c in caps], data[2], data[3]
