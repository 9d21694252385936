"""The real AttnGAN birds metadata (../shared/assets/cub_meta) through our loaders: safe unpickling, caption ids
identical to the released captions.pickle, and the CUB bounding-box crop on placeholder images."""
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import TextDataset, bbox_crop_box, build_captions, load_bboxes, load_class_ids, load_filenames
from miscc.safe_pickle import safe_load_pickle
from miscc.text import encode_tokens, read_caption_file, tokenize_caption


@pytest.fixture(scope="module")
def cub_meta(shared_dir):
    path = shared_dir / "assets" / "cub_meta"
    if not (path / "captions.pickle").is_file():
        pytest.skip(f"{path} has no captions.pickle")
    return path


@pytest.fixture(scope="module")
def official(cub_meta):
    train_caps, test_caps, ixtoword, wordtoix = safe_load_pickle(cub_meta / "captions.pickle")
    return dict(train=train_caps, test=test_caps, ixtoword=ixtoword, wordtoix=wordtoix,
                keys={s: load_filenames(str(cub_meta), s) for s in ("train", "test")})


def test_official_pickles_load_through_restricted_unpickler(cub_meta, official):
    assert len(official["ixtoword"]) == 5450 and official["ixtoword"][0] == "<end>"
    assert official["wordtoix"]["yellow"] == 12 and official["ixtoword"][12] == "yellow"
    assert len(official["train"]) == 88550 and len(official["test"]) == 29330
    first = " ".join(official["ixtoword"][i] for i in official["train"][0])
    assert first == "a bird with a very long wing span and a long pointed beak"
    keys = official["keys"]
    assert len(keys["train"]) == 8855 and len(keys["test"]) == 2933
    assert keys["train"][0] == "002.Laysan_Albatross/Laysan_Albatross_0002_1027"
    assert not set(keys["train"]) & set(keys["test"])
    for split in ("train", "test"):
        ids = load_class_ids(str(cub_meta), split, len(keys[split]))  # train: numpy int64 scalars (Python 2)
        assert ids.dtype == np.int64
        assert ids.tolist() == [int(k.split(".")[0]) for k in keys[split]]


def test_official_coco_filenames_load(shared_dir):
    coco = shared_dir / "assets" / "coco_meta"
    if not (coco / "train" / "filenames.pickle").is_file():
        pytest.skip(f"{coco} has no filenames.pickle")
    train, test = load_filenames(str(coco), "train"), load_filenames(str(coco), "test")
    assert len(train) == 82783 and len(test) == 40470
    assert all(k.startswith("COCO_train2014_") for k in train) and all(k.startswith("COCO_val2014_") for k in test)
    assert load_class_ids(str(coco), "train", len(train)).tolist()[:3] == [0, 1, 2]  # no class_info: one per image


def test_tokenising_text_reproduces_official_caption_ids(cub_meta, official):
    wordtoix = official["wordtoix"]
    for split in ("train", "test"):
        ours = []
        for key in official["keys"][split]:
            for tokens in read_caption_file(str(cub_meta / "text" / f"{key}.txt"), 10):
                ours.append(encode_tokens(tokens, wordtoix))
        assert len(ours) == len(official[split])
        mismatch = [i for i, (a, b) in enumerate(zip(ours, official[split])) if a != list(b)]
        assert not mismatch, f"{split}: {len(mismatch)} captions differ, first {mismatch[0]}"


def test_rebuilt_vocabulary_has_the_official_words(cub_meta, official):
    """`build_captions` (the captions.pickle-missing path) finds the same 5,450 words in another order."""
    train, test, ixtoword, wordtoix = build_captions(str(cub_meta), official["keys"]["train"],
                                                     official["keys"]["test"], 10)
    assert set(wordtoix) == set(official["wordtoix"]) and ixtoword[0] == "<end>"
    assert wordtoix != official["wordtoix"]  # dict order differs: never pair a rebuilt pickle with released encoders
    for ours, theirs in ((train, official["train"]), (test, official["test"])):
        assert len(ours) == len(theirs)
        for i in range(0, len(ours), 997):
            assert [ixtoword[w] for w in ours[i]] == [official["ixtoword"][w] for w in theirs[i]]


def _centred_keys(cub_meta, keys, n):
    """Keys whose 1.5x box crop fits without clipping on the left/top (so the box must land at the centre)."""
    boxes = load_bboxes(str(cub_meta))
    out = []
    for k in keys:
        x, y, w, h = boxes[k]
        r = int(max(w, h) * 0.75)
        if int((2 * x + w) / 2) - r >= 0 and int((2 * y + h) / 2) - r >= 0:
            out.append(k)
            if len(out) == n:
                break
    return out, boxes


def test_cub_layout_crops_around_the_bounding_box(cub_meta, official, tmp_path):
    root = tmp_path / "birds"
    (root / "CUB_200_2011").mkdir(parents=True)
    os.symlink(cub_meta / "text", root / "text")
    for name in ("images.txt", "bounding_boxes.txt"):
        os.symlink(cub_meta / "CUB_200_2011" / name, root / "CUB_200_2011" / name)
    chosen = {}
    for split in ("train", "test"):
        keys, boxes = _centred_keys(cub_meta, official["keys"][split], 3)
        chosen[split] = keys
        positions = [official["keys"][split].index(k) for k in keys]
        (root / split).mkdir()
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(keys, f, protocol=2)
        class_ids = load_class_ids(str(cub_meta), split, len(official["keys"][split]))[positions]
        with open(root / split / "class_info.pickle", "wb") as f:
            pickle.dump(class_ids, f, protocol=2)
        for k in keys:  # a grey placeholder, the bird box painted red, big enough for an unclipped crop
            x, y, w, h = boxes[k]
            x1, y1, x2, y2 = bbox_crop_box(boxes[k], 10 ** 6, 10 ** 6)
            img = Image.new("RGB", (max(500, x2 + 7), max(400, y2 + 5)), (128, 128, 128))
            img.paste((230, 10, 10), (int(x), int(y), int(x + w), int(y + h)))
            (root / "CUB_200_2011" / "images" / os.path.dirname(k)).mkdir(parents=True, exist_ok=True)
            img.save(root / "CUB_200_2011" / "images" / f"{k}.jpg", quality=95)
    sub = lambda split: [list(official[split][official["keys"][split].index(k) * 10 + j])  # noqa: E731
                         for k in chosen[split] for j in range(10)]
    with open(root / "captions.pickle", "wb") as f:
        pickle.dump([sub("train"), sub("test"), official["ixtoword"], official["wordtoix"]], f, protocol=2)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # official pickle present: no rebuild warning, no missing captions
        ds = TextDataset(root, "test", layout="cub", augment=False, words_num=18, captions_per_image=10)
    assert ds.n_words == 5450 and ds.filenames == chosen["test"] and len(ds) == 3
    assert ds.class_ids.tolist() == [int(k.split(".")[0]) for k in chosen["test"]]
    for index, key in enumerate(chosen["test"]):
        x, y, w, h = ds.bboxes[index]
        imgs = ds.get_imgs(index)
        assert [tuple(t.shape) for t in imgs] == [(3, 64, 64), (3, 128, 128), (3, 256, 256)]
        big = imgs[-1]
        red = (big[0] > 0.5) & (big[1] < -0.5)
        rows, cols = torch.nonzero(red, as_tuple=True)
        # the crop is a square of side 2r around the box centre, resized to 304 and centre-cropped to 256
        scale = 304 / (2 * int(max(w, h) * 0.75))
        assert abs(rows.float().mean().item() - 127.5) < 3 and abs(cols.float().mean().item() - 127.5) < 3, key
        assert abs((cols.max() - cols.min() + 1).item() - min(256, w * scale)) < 4, key
        assert abs((rows.max() - rows.min() + 1).item() - min(256, h * scale)) < 4, key
        corner = big[:, :4, :4]
        assert (corner - (128 / 127.5 - 1)).abs().max() < 0.05  # the grey margin around the box
        item = ds[index]
        words = [ds.ixtoword[int(i)] for i in item["caption"][: item["cap_len"]]]
        tokens = tokenize_caption(ds.caption_text(item["caption_index"]))
        if len(tokens) <= 18:
            assert words == tokens and item["cap_len"] == len(tokens)
        else:  # an ordered subset of the sentence's words
            it = iter(tokens)
            assert item["cap_len"] == 18 and all(w in it for w in words)
    train = TextDataset(root, "train", layout="cub", base_size=299, branch_num=1, captions_per_image=10)
    torch.manual_seed(0)
    assert [tuple(t.shape) for t in train[0]["imgs"]] == [(3, 299, 299)]  # the DAMSM setting
