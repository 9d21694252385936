"""Text-image datasets in AttnGAN's on-disk format (A/code/datasets.py), without its global config.

Layouts under DATA_DIR (the layout is an argument, never guessed from the path as the original's `'birds' in path`):

- cub: `CUB_200_2011/images/<key>.jpg`, cropped to a square of side 1.5*max(w, h) centred on the bounding box from
  `CUB_200_2011/{images,bounding_boxes}.txt` (zipped by row), clipped to the image;
- coco: `images/<key>.jpg`;
- custom: `images/<key>.<ext>` (ext: png, jpg or jpeg, found once from the first key), no box.

All layouts share `text/<key>.txt` (one caption per line), `{train,test}/filenames.pickle`, optional
`{train,test}/class_info.pickle` (missing: every image its own class) and optional `captions.pickle`
(`[train_captions, test_captions, ixtoword, wordtoix]`, filename-major; missing: rebuilt from `text/`). Pickles are
read with `miscc.safe_pickle.safe_load_pickle`, so they cannot run code.

Randomness (caption choice, the ordered subset kept from long captions, random crop, flip) is drawn from torch's
global generator, like torchvision's transforms. A DataLoader seeds every worker from the main process's torch
generator, so `torch.manual_seed(SEED)` makes an epoch reproducible and the workers draw different streams (a
per-dataset numpy generator would be copied into every worker and repeat the same numbers). The sampling helpers
(`get_caption`, `mismatched_captions`, `wrong_image_index`) also accept an explicit `rng` (a `torch.Generator` or a
`numpy.random.Generator`).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data_utils.captions import (build_captions, check_captions_pickle, fill_captions, read_caption_lines,
                                 write_captions_pickle)
from data_utils.images import open_rgb
from data_utils.layout import (CUSTOM_IMAGE_EXTS, LAYOUTS, SPLITS, CorruptImageError, bbox_crop_box, layout_error,
                               load_bboxes, load_class_ids, load_filenames)
from data_utils.sampling import ordered_subset, rand_float, rand_int
from miscc.classes import other_class_indices
from miscc.errors import InputError
from miscc.safe_pickle import safe_load_pickle
from miscc.text import swap_pad_id

AUTO_CACHE_BYTES = 1.5e9  # cache_images=-1 caches when the decoded images fit in this many bytes
FLIP_MODES = ("random", "none", "text")


class TextDataset(Dataset):
    """Images with captions in AttnGAN's format; one item = the image at every TREE branch and one caption.

    Items are dicts: `imgs` (list of FloatTensor[3, s, s] in [-1, 1], s = base_size * 2**i), `caption`
    (LongTensor[words_num], zero-padded), `cap_len`, `class_id`, `key`, `index` (image index) and `caption_index`
    (`index * captions_per_image + j`). An item draws one caption of its image at random; with `every_caption` the
    dataset has `n_images * captions_per_image` items and item i is caption `i % captions_per_image` of image
    `i // captions_per_image` (SSA-GAN's `datasets_everycap`, for sampling every test caption once).

    Images (AttnGAN `get_imgs`): CUB box crop, Resize(int(imsize*load_scale)) of the shorter edge (AttnGAN:
    load_scale 76/64), then RandomCrop(imsize)
    and a random horizontal flip (augment=False: CenterCrop, no flip), imsize = base_size * 2**(branch_num-1); every
    branch but the last is a Resize of that crop. DAMSM uses branch_num=1, base_size=299. The Resize output is cached
    as uint8 after the first decode when `cache_images` is 1, or -1 (auto) and the split fits in AUTO_CACHE_BYTES; the
    cache lives in each process (DataLoader workers keep theirs with `persistent_workers`, see `build_dataloader`).
    Without a random crop the per-branch images themselves are cached (uint8 tensors), so a step does no PIL work.

    Augmentation is configurable because AttnGAN's breaks captions that describe positions (a flipped "circle on the
    left" is on the right; a 76/64 crop moves objects by up to 16 %): `random_crop` (AttnGAN: True) and `flip`:
    "random" (AttnGAN), "none", or "text" (flip, and swap the words of `flip_word_pairs` in the caption's ids, so
    "a circle on the left" flipped becomes "a circle on the right"). Even without a random crop, AttnGAN's 76/64
    resize cuts 8 % off every side; `load_scale` 1.0 keeps the whole frame (on `shapes` the cut hides objects at the
    border: the shapes classifier reads colour+shape right on 50 % of the centre-cropped real test images, 96 % of
    the whole ones).

    With `bert_tokenizer` (a transformers tokenizer) the captions are the raw caption lines tokenised without special
    tokens (WordPiece ids, padded with 0, see `swap_pad_id`); `captions.pickle` is then not used and `n_words` is the
    tokenizer's vocabulary size.

    A missing image (at construction) or an undecodable one (when read) raises an error naming the file; with
    `skip_corrupt=True` missing images are dropped from the index with a warning, and an item whose image fails to
    decode is replaced by the next readable item (the image is remembered as bad in that process and counted in
    `n_skipped`).
    """

    def __init__(self, data_dir, split="train", *, layout="cub", base_size=64, branch_num=3, words_num=18,
                 captions_per_image=10, augment=True, every_caption=False, bert_tokenizer=None,
                 skip_corrupt=False, cache_images=-1, image_ext=None, flip="random", random_crop=True,
                 flip_word_pairs=(("left", "right"),), strict_text=False, load_scale=76 / 64):
        if layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        for name, value in (("base_size", base_size), ("branch_num", branch_num), ("words_num", words_num),
                            ("captions_per_image", captions_per_image)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if flip not in FLIP_MODES:
            raise InputError(f"flip (DATA.FLIP) must be one of {FLIP_MODES}, got {flip!r}")
        if not isinstance(load_scale, (int, float)) or not 1.0 <= load_scale <= 4.0:
            raise InputError(f"load_scale (DATA.LOAD_SCALE) must be a number from 1.0 (the whole image) to 4.0, "
                             f"got {load_scale!r} (AttnGAN: 76/64 = 1.1875)")
        if cache_images not in (-1, 0, 1):
            raise InputError(f"cache_images must be -1 (auto), 0 (off) or 1 (on), got {cache_images!r}")
        self.data_dir = os.fspath(data_dir)
        self.split, self.layout = split, layout
        self.base_size, self.branch_num = int(base_size), int(branch_num)
        self.words_num, self.captions_per_image = int(words_num), int(captions_per_image)
        self.augment, self.every_caption, self.skip_corrupt = augment, every_caption, skip_corrupt
        self.strict_text = strict_text
        self.flip = flip if augment else "none"
        self.random_crop = bool(random_crop and augment)
        self.imsizes = [self.base_size * 2 ** i for i in range(self.branch_num)]
        self.imsize = self.imsizes[-1]
        self.load_size = int(self.imsize * load_scale)
        self.n_skipped = 0
        self._bad = set()

        self._check_layout()
        self.filenames = load_filenames(self.data_dir, split)
        self.class_ids = load_class_ids(self.data_dir, split, len(self.filenames))
        self.image_paths, self.bboxes = self._find_images(image_ext)
        self.bert_tokenizer = bert_tokenizer  # kept for encoding free sentences (gen_example) and decoding ids
        self.pad_token_id = None
        if bert_tokenizer is None:
            self._load_word_captions()
        else:
            self._load_bert_captions(bert_tokenizer)
        self._drop_missing_images()

        n_bytes = len(self.filenames) * self.load_size * self.load_size * 3
        self.cache_images = bool(cache_images == 1 or (cache_images == -1 and n_bytes < AUTO_CACHE_BYTES))
        self._cache: dict[int, np.ndarray] = {}
        self._branch_cache: dict[int, list[torch.Tensor]] = {}
        self._text_cache: dict[int, list[str]] = {}
        self._flip_ids = self._flip_id_map(flip_word_pairs) if self.flip == "text" else None

    # --- construction ---------------------------------------------------------------------------------------------

    def _check_layout(self):
        d = self.data_dir
        if not os.path.isdir(d):
            raise layout_error(d, self.layout, [d], "DATA_DIR not found")
        required = [os.path.join(d, self.split, "filenames.pickle")]
        if self.layout == "cub":
            required += [os.path.join(d, "CUB_200_2011", f) for f in ("images.txt", "bounding_boxes.txt")]
            required.append(os.path.join(d, "CUB_200_2011", "images"))
        else:
            required.append(os.path.join(d, "images"))
        missing = [p for p in required if not os.path.exists(p)]
        if missing:
            raise layout_error(d, self.layout, missing)

    def _find_images(self, image_ext):
        d, keys = self.data_dir, self.filenames
        bboxes = None
        if self.layout == "cub":
            root, ext = os.path.join(d, "CUB_200_2011", "images"), "jpg"
            table = load_bboxes(d)
            missing = [k for k in keys if k not in table]
            if missing:
                raise InputError(f"{os.path.join(d, 'CUB_200_2011', 'images.txt')}: no entry for key '{missing[0]}' "
                                 f"({len(missing)} keys of {self.split}/filenames.pickle missing)")
            bboxes = [table[k] for k in keys]
        elif self.layout == "coco":
            root, ext = os.path.join(d, "images"), image_ext or "jpg"
        else:
            root = os.path.join(d, "images")
            ext = image_ext
            if ext is None:
                tried = [os.path.join(root, f"{keys[0]}.{e}") for e in CUSTOM_IMAGE_EXTS]
                found = [e for e, p in zip(CUSTOM_IMAGE_EXTS, tried) if os.path.isfile(p)]
                if not found:
                    raise layout_error(d, self.layout, tried, f"no image for the first key '{keys[0]}'; tried")
                ext = found[0]
        ext = ext.lstrip(".")
        return [os.path.join(root, f"{k}.{ext}") for k in keys], bboxes

    def _load_word_captions(self):
        path = os.path.join(self.data_dir, "captions.pickle")
        if os.path.isfile(path):
            data = safe_load_pickle(path)
        else:
            other = "test" if self.split == "train" else "train"
            other_pickle = os.path.join(self.data_dir, other, "filenames.pickle")
            if not os.path.isfile(other_pickle):
                raise layout_error(self.data_dir, self.layout, [path, other_pickle],
                                    "captions.pickle is missing, and rebuilding it needs both splits' keys")
            warnings.warn(
                f"{path} not found: building it from {os.path.join(self.data_dir, 'text')} (vocabulary over "
                "train+test). A rebuilt vocabulary does not match released text encoders (size mismatch for "
                "encoder.weight): use the released captions.pickle with released checkpoints."
            )
            keys = {self.split: self.filenames, other: load_filenames(self.data_dir, other)}
            data = build_captions(self.data_dir, keys["train"], keys["test"], self.captions_per_image,
                                  self.strict_text)
            try:
                write_captions_pickle(path, data)
            except OSError as e:
                warnings.warn(f"could not save {path} ({e}); it will be rebuilt next time")
        self.captions, self.ixtoword, self.wordtoix = check_captions_pickle(
            path, data, self.split, len(self.filenames), self.captions_per_image)
        self.n_words = len(self.ixtoword)
        self._raw_text = None

    def _load_bert_captions(self, tokenizer):
        text_dir = os.path.join(self.data_dir, "text")
        paths = [os.path.join(text_dir, k + ".txt") for k in self.filenames]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise layout_error(self.data_dir, self.layout, missing, "caption files not found")
        lines = []
        for p in paths:
            lines += fill_captions(read_caption_lines(p, self.captions_per_image, strict=self.strict_text),
                                    self.captions_per_image, p)
        ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
        pad = tokenizer.pad_token_id
        if pad is None and any(0 in c for c in ids):
            raise InputError(f"tokenizer {tokenizer.name_or_path!r} has no pad token and uses id 0 for text; our "
                             "captions pad with 0, so give it a pad token")
        for i, c in enumerate(ids):
            if not c:
                raise InputError(f"{paths[i // self.captions_per_image]}: caption '{lines[i]}' tokenises to nothing")
        self.pad_token_id = pad
        self.captions = [swap_pad_id(list(c), pad) for c in ids]
        vocab = {i: w for w, i in tokenizer.get_vocab().items()}
        if pad:
            vocab[0], vocab[pad] = vocab.get(pad, "[PAD]"), vocab.get(0, "")
        self.ixtoword = vocab
        self.wordtoix = {w: i for i, w in vocab.items()}
        self.n_words = len(tokenizer)
        self._raw_text = lines

    def _drop_missing_images(self):
        missing = [i for i, p in enumerate(self.image_paths) if not os.path.isfile(p)]
        if not missing:
            return
        if not self.skip_corrupt:
            raise layout_error(self.data_dir, self.layout, [self.image_paths[i] for i in missing],
                                f"{len(missing)} image(s) of {self.split}/filenames.pickle not found "
                                "(DATA.SKIP_CORRUPT: True drops them)")
        warnings.warn(f"skipping {len(missing)} missing image(s) of the {self.split} split, first: "
                      f"{self.image_paths[missing[0]]}")
        keep = np.setdiff1d(np.arange(len(self.filenames)), missing)
        if len(keep) == 0:
            raise layout_error(self.data_dir, self.layout, [self.image_paths[i] for i in missing],
                                "no image of the split exists")
        cpi = self.captions_per_image
        self.n_skipped += len(missing)
        self.filenames = [self.filenames[i] for i in keep]
        self.class_ids = self.class_ids[keep]
        self.image_paths = [self.image_paths[i] for i in keep]
        if self.bboxes is not None:
            self.bboxes = [self.bboxes[i] for i in keep]
        self.captions = [self.captions[i * cpi + j] for i in keep for j in range(cpi)]
        if self._raw_text is not None:
            self._raw_text = [self._raw_text[i * cpi + j] for i in keep for j in range(cpi)]

    # --- captions -------------------------------------------------------------------------------------------------

    @property
    def n_images(self) -> int:
        return len(self.filenames)

    def get_caption(self, caption_index: int, rng=None) -> tuple[torch.Tensor, int]:
        """Caption `caption_index` as LongTensor[words_num] (zero-padded; a longer caption keeps a random ordered
        subset of words_num words) and its length."""
        ids = self.captions[caption_index]
        out = torch.zeros(self.words_num, dtype=torch.long)
        if len(ids) <= self.words_num:
            out[: len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            return out, len(ids)
        keep = ordered_subset(len(ids), self.words_num, rng)
        out[:] = torch.as_tensor(ids, dtype=torch.long)[torch.from_numpy(keep)]
        return out, self.words_num

    def caption_text(self, caption_index: int) -> str:
        """The sentence of caption `caption_index` as written in `text/<key>.txt` (for BERT/CLIP scoring and logs).

        Without the text file, the caption's words are joined from the vocabulary (lowercase, no punctuation).
        """
        if self._raw_text is not None:
            return self._raw_text[caption_index]
        index, j = divmod(caption_index, self.captions_per_image)
        if index not in self._text_cache:
            path = os.path.join(self.data_dir, "text", self.filenames[index] + ".txt")
            self._text_cache[index] = (read_caption_lines(path, self.captions_per_image, warn=False,
                                                          strict=self.strict_text)
                                       if os.path.isfile(path) else [])
        lines = self._text_cache[index]
        if lines:
            return lines[j % len(lines)]
        return " ".join(self.ixtoword[i] for i in self.captions[caption_index])

    def mismatched_captions(self, class_id: int, n: int = 99, rng=None) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` captions of random images whose class is not `class_id`, sorted by length (descending), with their
        lengths: the negatives of R-precision (DM-GAN `get_mis_caption`). DM-GAN drew indices with the inclusive
        `random.randint(0, N)`, which could reach one past the last image or caption; ours stay in range."""
        others = other_class_indices(self.class_ids, class_id, f"the {self.split} split")
        caps = torch.zeros(n, self.words_num, dtype=torch.long)
        lens = torch.zeros(n, dtype=torch.long)
        for r in range(n):
            index = int(others[rand_int(len(others), rng)])
            cap_index = index * self.captions_per_image + rand_int(self.captions_per_image, rng)
            caps[r], lens[r] = self.get_caption(cap_index, rng)
        lens, order = torch.sort(lens, descending=True, stable=True)
        return caps[order], lens

    def wrong_image_index(self, index: int, rng=None) -> int:
        """A random image index whose class differs from image `index`'s (GAN-INT-CLS's mismatched image)."""
        others = other_class_indices(self.class_ids, self.class_ids[index], f"the {self.split} split")
        return int(others[rand_int(len(others), rng)])

    # --- images ---------------------------------------------------------------------------------------------------

    def _decode(self, index: int) -> np.ndarray:
        """The box-cropped image, shorter edge resized to load_size, as uint8 HxWx3 (cached when enabled)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        path = self.image_paths[index]
        try:  # CUB boxes are in stored-pixel coordinates, as AttnGAN read them: no EXIF rotation there
            img = open_rgb(path, exif_orientation=self.bboxes is None)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise CorruptImageError(f"{path}: cannot read image ({type(e).__name__}: {e}); "
                                    "DATA.SKIP_CORRUPT: True skips unreadable images") from e
        if self.bboxes is not None:
            img = img.crop(bbox_crop_box(self.bboxes[index], *img.size))
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        if short != self.load_size:  # torchvision Resize(int): shorter edge to load_size, bilinear
            new_long = int(self.load_size * long / short)
            img = img.resize((self.load_size, new_long) if w <= h else (new_long, self.load_size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        if self.cache_images:
            self._cache[index] = arr
        return arr

    def get_imgs(self, index: int, rng=None, flip: bool | None = None) -> list[torch.Tensor]:
        """Image `index` at every branch size, FloatTensor[3, s, s] in [-1, 1]: cropped (random or centre) as
        configured, flipped when `flip` is True (None: drawn at random unless DATA.FLIP is 'none')."""
        branches = self._branch_cache.get(index)
        if branches is None:
            branches = self._branch_images(index, rng)
            if self.cache_images and not self.random_crop:
                self._branch_cache[index] = branches
        if flip is None:
            flip = self.flip != "none" and rand_float(rng) < 0.5
        return [(t.flip(-1) if flip else t).float().div_(127.5).sub_(1.0) for t in branches]

    def _branch_images(self, index: int, rng=None) -> list[torch.Tensor]:
        """uint8 [3, s, s] per branch from one (random or centre) crop of the decoded image."""
        arr = self._decode(index)
        h, w = arr.shape[:2]
        s = self.imsize
        if self.random_crop:
            top, left = rand_int(h - s + 1, rng), rand_int(w - s + 1, rng)
        else:
            top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        crop = Image.fromarray(np.ascontiguousarray(arr[top: top + s, left: left + s]))
        out = []
        for size in self.imsizes:
            im = crop if size == s else crop.resize((size, size), Image.BILINEAR)
            out.append(torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).contiguous())
        return out

    def _flip_id_map(self, pairs) -> dict[int, int]:
        """{word id: id of its mirror word} for DATA.FLIP 'text' (both directions of every pair in the vocabulary)."""
        mapping = {}
        for pair in pairs:
            if len(pair) != 2:
                raise InputError(f"DATA.FLIP_WORD_PAIRS entries must be two words, got {pair!r}")
            a, b = (self._word_id(w) for w in pair)
            if a is None or b is None:
                raise InputError(f"DATA.FLIP 'text': the word pair {list(pair)} is not in the vocabulary of "
                                 f"{self.data_dir} (a flip could not swap it in the captions)")
            mapping[a], mapping[b] = b, a
        return mapping

    def _word_id(self, word: str) -> int | None:
        if self.bert_tokenizer is not None:
            ids = self.bert_tokenizer(word, add_special_tokens=False)["input_ids"]
            return swap_pad_id(list(ids), self.pad_token_id)[0] if len(ids) == 1 else None
        return self.wordtoix.get(word)

    def mirror_caption(self, caption: torch.Tensor) -> torch.Tensor:
        """Caption ids with every DATA.FLIP_WORD_PAIRS word replaced by its mirror word."""
        out = caption.clone()
        for a, b in self._flip_ids.items():
            out[caption == a] = b
        return out

    # --- items ----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_images * (self.captions_per_image if self.every_caption else 1)

    def _item(self, i: int) -> dict:
        if self.every_caption:
            index, j = divmod(i, self.captions_per_image)
        else:
            index, j = i, rand_int(self.captions_per_image)
        if index in self._bad:
            raise CorruptImageError(self.image_paths[index])
        flip = self.flip != "none" and rand_float() < 0.5
        imgs = self.get_imgs(index, flip=flip)
        caption_index = index * self.captions_per_image + j
        caption, cap_len = self.get_caption(caption_index)
        if flip and self._flip_ids:
            caption = self.mirror_caption(caption)
        return dict(imgs=imgs, caption=caption, cap_len=cap_len, class_id=int(self.class_ids[index]),
                    key=self.filenames[index], index=index, caption_index=caption_index)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            try:
                return self._item(j)
            except CorruptImageError:
                if not self.skip_corrupt:
                    raise
                index = j // self.captions_per_image if self.every_caption else j
                if index not in self._bad:
                    self._bad.add(index)
                    self.n_skipped += 1
                    warnings.warn(f"skipping unreadable image {self.image_paths[index]} ({self.n_skipped} skipped)")
        raise CorruptImageError(f"no readable image in the {self.split} split of {self.data_dir}")
