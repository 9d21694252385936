"""The public entry of the data code: `build_dataset(cfg, split)` and everything the code base imports from here.

The jobs live in `data_utils/` (layouts and metadata, images, captions, random draws, `TextDataset`, batches); this
module re-exports their public names, so `from datasets import TextDataset, build_dataset, prepare_data` works as
before. (The top-level `data/` folder is the user's data, not code.)
"""
from __future__ import annotations

import os

from data_utils.batches import Batch, build_dataloader, prepare_data
from data_utils.captions import build_captions, read_caption_lines, write_captions_pickle
from data_utils.images import open_rgb
from data_utils.layout import (CUSTOM_IMAGE_EXTS, LAYOUTS, SPLITS, CorruptImageError, DatasetLayoutError,
                               bbox_crop_box, expected_layout, load_bboxes, load_class_ids, load_filenames)
from data_utils.sampling import ordered_subset
from data_utils.text_dataset import FLIP_MODES, TextDataset
from miscc.errors import MissingFileError
from miscc.text import swap_pad_id

__all__ = [
    "Batch", "build_dataloader", "prepare_data", "build_captions", "read_caption_lines", "write_captions_pickle",
    "open_rgb", "CUSTOM_IMAGE_EXTS", "LAYOUTS", "SPLITS", "CorruptImageError", "DatasetLayoutError",
    "bbox_crop_box", "expected_layout", "load_bboxes", "load_class_ids", "load_filenames", "ordered_subset",
    "FLIP_MODES", "TextDataset", "swap_pad_id", "load_bert_tokenizer", "build_dataset"
]


# ----------------------------------------------------------------------------------------------------------------
# Config entry point
# ----------------------------------------------------------------------------------------------------------------

def load_bert_tokenizer(path: str):
    """A transformers tokenizer from a local folder (`local_files_only=True`: nothing is downloaded)."""
    if not path:
        raise MissingFileError("TEXT.ENCODER is 'bert' but TEXT.BERT_PATH is empty: set it to a local model "
                                "folder holding the tokenizer files (tokenizer.json or vocab.txt)")
    if not os.path.isdir(path):
        raise MissingFileError(f"TEXT.BERT_PATH not found: {path} (a local folder with the tokenizer files, "
                                "e.g. tokenizer.json or vocab.txt, is required)")
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise MissingFileError(f"cannot load a tokenizer from TEXT.BERT_PATH {path}: {e}") from e


def build_dataset(cfg, split, **kwargs) -> TextDataset:
    """The TextDataset a config describes (DATA_DIR, DATA.LAYOUT, TREE, TEXT, DATA.*); `kwargs` override
    constructor arguments (e.g. augment=False, every_caption=True)."""
    from miscc.config import data_layout, resolve_path
    if not cfg.DATA_DIR:
        raise DatasetLayoutError("DATA_DIR is empty: set it in the config or pass --data_dir")
    args = dict(
        layout=data_layout(cfg), base_size=cfg.TREE.BASE_SIZE, branch_num=cfg.TREE.BRANCH_NUM,
        words_num=cfg.TEXT.WORDS_NUM, captions_per_image=cfg.TEXT.CAPTIONS_PER_IMAGE,
        skip_corrupt=cfg.DATA.SKIP_CORRUPT, cache_images=cfg.DATA.CACHE_IMAGES, flip=cfg.DATA.FLIP,
        random_crop=cfg.DATA.RANDOM_CROP, flip_word_pairs=[p.split(":") for p in cfg.DATA.FLIP_WORD_PAIRS],
        strict_text=cfg.DATA.STRICT_TEXT, load_scale=cfg.DATA.LOAD_SCALE,
    )
    if cfg.TEXT.ENCODER == "bert" and "bert_tokenizer" not in kwargs:
        args["bert_tokenizer"] = load_bert_tokenizer(resolve_path(cfg.TEXT.BERT_PATH))
    args.update(kwargs)
    return TextDataset(resolve_path(cfg.DATA_DIR), split, **args)
