"""datasets.py on tiny generated data: captions, images, batches, sampling helpers, errors, cache, BERT path."""
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import (
    CorruptImageError, DatasetLayoutError, TextDataset, bbox_crop_box, build_dataloader, build_dataset,
    ordered_subset, prepare_data, swap_pad_id,
)
from miscc.config import load_config
from miscc.safe_pickle import UnsafePickleError

COLOURS = {"red": (230, 20, 20), "blue": (20, 20, 230)}


def write_pickle(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_custom(root, cpi=2, ext="png", size=(48, 36), class_info=True, extra_text=None):
    """A custom-layout folder: 3 red + 3 blue train images, 1 + 1 test; each caption names its colour."""
    train, test, cls_train, cls_test = [], [], [], []
    for c, colour in enumerate(COLOURS):
        for i in range(4):
            key = f"{colour}/{colour}_{i}"
            (train if i < 3 else test).append(key)
            (cls_train if i < 3 else cls_test).append(c + 1)
            os.makedirs(root / "images" / colour, exist_ok=True)
            os.makedirs(root / "text" / colour, exist_ok=True)
            img = Image.new("RGB", size, COLOURS[colour])
            img.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 2))  # white top-left quarter
            img.save(root / "images" / f"{key}.{ext}")
            lines = [f"a {colour} bird number {i}", "", f"This {colour} bird, with wings!"]
            if extra_text and key in extra_text:
                lines = extra_text[key]
            (root / "text" / f"{key}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_pickle(str(root / "train" / "filenames.pickle"), train)
    write_pickle(str(root / "test" / "filenames.pickle"), test)
    if class_info:
        write_pickle(str(root / "train" / "class_info.pickle"), cls_train)
        write_pickle(str(root / "test" / "class_info.pickle"), cls_test)
    return root


def custom_ds(root, split="train", **kw):
    """A TextDataset on a `make_custom` folder (warnings about the rebuilt vocabulary silenced)."""
    args = dict(layout="custom", base_size=8, branch_num=3, words_num=6, captions_per_image=2)
    args.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TextDataset(root, split, **args)


@pytest.fixture
def tiny(tmp_path):
    return make_custom(tmp_path / "tiny")


def words(ds, ids):
    return [ds.ixtoword[int(i)] for i in ids if int(i) != 0]


# ---------------------------------------------------------------- captions

def test_rebuilt_vocabulary_tokenisation_and_saved_pickle(tmp_path):
    root = make_custom(tmp_path / "d", extra_text={
        "red/red_0": ["A Café-bird: 3 wings, 2.5cm!!", "...", "  ", "naïve   BIRD\tsmall"],
    })
    with pytest.warns(UserWarning, match="does not match released text encoders"):
        ds = TextDataset(root, "train", layout="custom", base_size=8, branch_num=1, words_num=18,
                         captions_per_image=2)
    assert words(ds, ds.captions[0]) == ["a", "caf", "bird", "3", "wings", "2", "5cm"]  # non-ASCII dropped in-word
    assert words(ds, ds.captions[1]) == ["nave", "bird", "small"]  # "..." and blank lines are skipped
    assert ds.ixtoword[0] == "<end>" and ds.wordtoix["<end>"] == 0 and ds.n_words == len(ds.ixtoword)
    assert len(ds.captions) == 6 * 2
    path = root / "captions.pickle"
    assert path.read_bytes()[:2] == b"\x80\x02"  # protocol 2, like the original
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the saved pickle is reused: no rebuild warning
        again = TextDataset(root, "test", layout="custom", base_size=8, branch_num=1, captions_per_image=2)
    assert again.ixtoword == ds.ixtoword
    assert words(again, again.captions[0]) == ["a", "red", "bird", "number", "3"]
    assert ds.caption_text(0) == "A Café-bird: 3 wings, 2.5cm!!"
    assert ds.caption_text(1) == "naïve   BIRD\tsmall"


def test_get_caption_padding_and_ordered_subset(tiny):
    ds = custom_ds(tiny, words_num=6)
    short = [5, 3, 9]
    ds.captions[0] = short
    cap, n = ds.get_caption(0)
    assert n == 3 and cap.tolist() == [5, 3, 9, 0, 0, 0] and cap.dtype == torch.long
    long_caption = list(range(1, 21))  # 20 distinct ids in increasing order
    ds.captions[1] = long_caption
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        cap, n = ds.get_caption(1)
        kept = cap.tolist()
        assert n == 6 and len(kept) == 6 and 0 not in kept
        assert kept == sorted(kept) and set(kept) <= set(long_caption)  # a subset, in the original order
        seen.add(tuple(kept))
    assert len(seen) > 10  # a random subset, not the first six words
    torch.manual_seed(3)
    a = ds.get_caption(1)[0]
    torch.manual_seed(3)
    assert torch.equal(a, ds.get_caption(1)[0])
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    assert torch.equal(ds.get_caption(1, rng=g1)[0], ds.get_caption(1, rng=g2)[0])


def test_ordered_subset_torch_and_numpy():
    idx = ordered_subset(30, 18, torch.Generator().manual_seed(0))
    assert len(idx) == 18 and len(set(idx)) == 18 and np.all(np.diff(idx) > 0) and idx.max() < 30
    idx = ordered_subset(30, 18, np.random.default_rng(0))
    assert len(set(idx)) == 18 and np.all(np.diff(idx) > 0)


@pytest.mark.filterwarnings("ignore:.*does not match released text encoders")
def test_fewer_captions_warns_naming_file_and_repeats(tmp_path):
    root = make_custom(tmp_path / "d", extra_text={"blue/blue_1": ["only one caption here", ""]})
    with pytest.warns(UserWarning, match=r"blue_1\.txt: 1 captions, fewer than CAPTIONS_PER_IMAGE=2"):
        ds = TextDataset(root, "train", layout="custom", base_size=8, branch_num=1, captions_per_image=2)
    i = ds.filenames.index("blue/blue_1")
    assert ds.captions[2 * i] == ds.captions[2 * i + 1]  # repeated, so later images keep their caption indices
    assert words(ds, ds.captions[2 * i + 2]) == ["a", "blue", "bird", "number", "2"]


def test_caption_file_without_captions_is_an_error(tmp_path):
    root = make_custom(tmp_path / "d", extra_text={"red/red_2": ["", "!!!", ""]})
    with pytest.raises(ValueError, match=r"red_2\.txt: no non-empty caption"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TextDataset(root, "train", layout="custom", captions_per_image=2)


def test_captions_pickle_count_mismatch_names_captions_per_image(tiny):
    custom_ds(tiny, captions_per_image=2)  # builds captions.pickle with 2 per image
    with pytest.raises(ValueError, match=r"captions\.pickle: holds 12 train captions .* CAPTIONS_PER_IMAGE=3"):
        TextDataset(tiny, "train", layout="custom", captions_per_image=3)


def test_missing_class_info_gives_one_class_per_image(tmp_path):
    root = make_custom(tmp_path / "d", class_info=False)
    ds = custom_ds(root)
    assert ds.class_ids.dtype == np.int64 and ds.class_ids.tolist() == list(range(6))
    ds = custom_ds(make_custom(tmp_path / "e"))
    assert ds.class_ids.tolist() == [1, 1, 1, 2, 2, 2]


# ---------------------------------------------------------------- images and items

def test_item_shapes_range_and_fields(tiny):
    ds = custom_ds(tiny, base_size=8, branch_num=3)
    assert ds.imsizes == [8, 16, 32] and len(ds) == 6
    torch.manual_seed(0)
    item = ds[4]
    assert [tuple(t.shape) for t in item["imgs"]] == [(3, 8, 8), (3, 16, 16), (3, 32, 32)]
    for t in item["imgs"]:
        assert t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1
    big = item["imgs"][-1]
    # a blue image: blue channel near +1, red near -1 (apart from the white corner)
    assert big[2].mean() > 0.6 and big[0].median() < -0.7
    assert item["key"] == "blue/blue_1" and item["index"] == 4 and item["class_id"] == 2
    assert item["caption_index"] in (8, 9) and item["caption"].shape == (6,)
    assert 1 <= item["cap_len"] <= 6


def test_augmentation_reproducible_and_center_crop_deterministic(tiny):
    ds = custom_ds(tiny, base_size=8, branch_num=2)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(ds[0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0]["imgs"], outs[1]["imgs"]))
    assert outs[0]["caption_index"] == outs[1]["caption_index"]
    fixed = custom_ds(tiny, base_size=8, branch_num=2, augment=False)
    a, b = fixed.get_imgs(0), fixed.get_imgs(0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # 48x36 -> shorter edge int(16*76/64)=19 -> 25x19 -> centre crop 16 at (4, 2); the white quarter (x < 12.5,
    # y < 9.5 after the resize) is in the crop's top-left, so no flip happened
    assert a[-1][:, 0, 0].min() > 0.9 and a[-1][:, -1, -1].max() < 0.95
    flips = set()
    for seed in range(16):
        torch.manual_seed(seed)
        flips.add(bool(ds.get_imgs(0)[-1][1, 0, 0] > 0.5))
    assert flips == {True, False}  # the white corner is on the left in some draws, flipped away in others


def test_every_caption_length_and_mapping(tiny):
    ds = custom_ds(tiny, every_caption=True, captions_per_image=2)
    assert len(ds) == 12
    item = ds[7]
    assert item["index"] == 3 and item["caption_index"] == 7
    assert torch.equal(item["caption"], ds.get_caption(7)[0])


def test_prepare_data_sorts_and_masks(tiny):
    ds = custom_ds(tiny, words_num=8)
    ds.captions = [[1] * (1 + i % 5) for i in range(len(ds.captions))]  # lengths 1..5
    ds.every_caption = True
    loader = build_dataloader(ds, batch_size=12, shuffle=False, drop_last=False, workers=0)
    raw = next(iter(loader))
    b = prepare_data(raw, torch.device("cpu"))
    assert len(b) == 12
    assert b.cap_lens.tolist() == sorted(raw["cap_len"].tolist(), reverse=True)
    assert b.captions.shape == (12, 5) and b.mask.shape == (12, 5) and b.mask.dtype == torch.bool
    assert torch.equal(b.mask, b.captions == 0)
    assert torch.equal(b.mask.sum(1), 5 - b.cap_lens)
    for k in range(12):
        j = int(b.order[k])
        assert b.keys[k] == raw["key"][j] == ds.filenames[b.indices[k]]
        assert b.class_ids[k] == ds.class_ids[b.indices[k]]
        assert b.caption_indices[k] == raw["caption_index"][j]
        assert torch.equal(b.imgs[0][k], raw["imgs"][0][j])
    assert [tuple(t.shape) for t in b.imgs] == [(12, 3, 8, 8), (12, 3, 16, 16), (12, 3, 32, 32)]


def test_build_dataloader_rejects_empty_epoch(tiny):
    ds = custom_ds(tiny)
    with pytest.raises(ValueError, match="gives no batch"):
        build_dataloader(ds, batch_size=64, shuffle=True, drop_last=True, workers=0)


def test_dataloader_with_worker_is_reproducible(tiny):
    ds = custom_ds(tiny)
    runs = []
    for _ in range(2):  # two fresh runs under the same seed: same order, same captions, same crops
        torch.manual_seed(0)
        loader = build_dataloader(ds, batch_size=3, shuffle=True, drop_last=True, workers=1)
        runs.append([(b["index"].tolist(), b["caption_index"].tolist(), b["imgs"][-1]) for b in loader])
    for (i1, c1, x1), (i2, c2, x2) in zip(*runs):
        assert i1 == i2 and c1 == c2 and torch.equal(x1, x2)
    assert sorted(sum((r[0] for r in runs[0]), [])) == list(range(6))


# ---------------------------------------------------------------- sampling helpers

def test_mismatched_captions_come_from_other_classes(tiny):
    ds = custom_ds(tiny, words_num=4)
    red = ds.wordtoix["red"]
    caps, lens = ds.mismatched_captions(1, n=40, rng=np.random.default_rng(0))
    assert caps.shape == (40, 4) and lens.shape == (40,)
    assert lens.tolist() == sorted(lens.tolist(), reverse=True)
    assert not (caps == red).any() and (caps == ds.wordtoix["blue"]).any(1).float().mean() > 0.3
    assert torch.equal((caps != 0).sum(1), lens)
    a = ds.mismatched_captions(2, n=5, rng=torch.Generator().manual_seed(1))
    b = ds.mismatched_captions(2, n=5, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and not (a[0] == ds.wordtoix["blue"]).any()


def test_wrong_image_index_other_class(tiny):
    ds = custom_ds(tiny)
    rng = np.random.default_rng(0)
    picks = {ds.wrong_image_index(1, rng) for _ in range(50)}
    assert picks == {3, 4, 5}
    ds.class_ids[:] = 7
    with pytest.raises(ValueError, match="no image outside class 7"):
        ds.wrong_image_index(0)


# ---------------------------------------------------------------- bad input

def test_missing_data_dir_error_prints_expected_tree(tmp_path):
    missing = tmp_path / "nowhere" / "birds"
    with pytest.raises(DatasetLayoutError) as e:
        TextDataset(missing, "train", layout="cub")
    msg = str(e.value)
    assert str(missing) in msg and "layout 'cub'" in msg
    assert "CUB_200_2011/bounding_boxes.txt" in msg and "train/filenames.pickle" in msg


def test_missing_layout_files_listed_in_one_error(tiny):
    with pytest.raises(DatasetLayoutError) as e:
        TextDataset(tiny, "train", layout="cub")
    msg = str(e.value)
    assert os.path.join(str(tiny), "CUB_200_2011", "images.txt") in msg
    assert os.path.join(str(tiny), "CUB_200_2011", "bounding_boxes.txt") in msg
    os.remove(tiny / "test" / "filenames.pickle")
    with pytest.raises(DatasetLayoutError, match=r"test/filenames\.pickle"):
        TextDataset(tiny, "test", layout="custom")


def test_missing_image_error_and_skip(tiny):
    os.remove(tiny / "images" / "red" / "red_1.png")
    with pytest.raises(DatasetLayoutError, match=r"red_1\.png"):
        custom_ds(tiny)
    with pytest.warns(UserWarning, match=r"skipping 1 missing image.*red_1\.png"):
        ds = TextDataset(tiny, "train", layout="custom", captions_per_image=2, skip_corrupt=True,
                         base_size=8, branch_num=1)
    assert "red/red_1" not in ds.filenames and len(ds) == 5 and ds.n_skipped == 1
    assert len(ds.captions) == 10 and ds.class_ids.tolist() == [1, 1, 2, 2, 2]
    assert words(ds, ds.captions[2])[:2] == ["a", "red"] and "2" in words(ds, ds.captions[2])


def test_custom_layout_without_images_names_tried_paths(tiny):
    for p in (tiny / "images").rglob("*.png"):
        p.rename(p.with_suffix(".gif"))
    with pytest.raises(DatasetLayoutError, match=r"red_0\.png.*\n.*red_0\.jpg"):
        custom_ds(tiny)
    ds = custom_ds(tiny, image_ext="gif", augment=False, skip_corrupt=False)
    assert ds.image_paths[0].endswith("red_0.gif")


def test_corrupt_image_error_and_skip_corrupt(tiny):
    bad = tiny / "images" / "red" / "red_2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = custom_ds(tiny)
    with pytest.raises(CorruptImageError, match=r"red_2\.png: cannot read image"):
        ds[2]
    ds = custom_ds(tiny, skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*red_2\.png"):
        item = ds[2]
    assert item["index"] == 3 and ds.n_skipped == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per image
        assert ds[2]["index"] == 3
    assert ds.n_skipped == 1


def test_malicious_pickle_is_refused_and_not_executed(tiny, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with open(tiny / "train" / "filenames.pickle", "wb") as f:
        pickle.dump(Evil(), f, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"filenames\.pickle: refusing to load '(posix|nt|os)\.system'"):
        custom_ds(tiny)
    assert not marker.exists()


def test_bbox_crop_box_is_centred_and_clipped():
    assert bbox_crop_box((100, 50, 40, 80), 500, 400) == (60, 30, 180, 150)  # r = 60 around (120, 90)
    assert bbox_crop_box((0, 0, 100, 60), 500, 400) == (0, 0, 125, 105)  # clipped at the top-left corner


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout must be one of"):
        TextDataset("x", layout="birds")
    with pytest.raises(ValueError, match="split must be one of"):
        TextDataset("x", "val")
    with pytest.raises(ValueError, match="cache_images"):
        TextDataset("x", cache_images=2)


# ---------------------------------------------------------------- cache

def test_image_cache_avoids_reopening(tiny):
    ds = custom_ds(tiny, cache_images=-1)  # tiny: auto turns the cache on
    off = custom_ds(tiny, cache_images=0)
    assert ds.cache_images and not off.cache_images
    ds.get_imgs(0)
    os.remove(ds.image_paths[0])
    assert [t.shape[-1] for t in ds.get_imgs(0)] == [8, 16, 32]
    off.get_imgs(1)
    os.remove(off.image_paths[1])
    with pytest.raises(CorruptImageError, match=r"red_1\.png"):
        off.get_imgs(1)


def test_auto_cache_off_for_large_splits(tiny, monkeypatch):
    import data_utils.text_dataset
    monkeypatch.setattr(data_utils.text_dataset, "AUTO_CACHE_BYTES", 100)
    assert not custom_ds(tiny).cache_images
    assert custom_ds(tiny, cache_images=1).cache_images


# ---------------------------------------------------------------- config and BERT

def test_build_dataset_from_config(tiny):
    cfg = load_config(None, {"DATA_DIR": str(tiny), "DATASET_NAME": "shapes", "TREE.BASE_SIZE": 8,
                             "TREE.BRANCH_NUM": 2, "TEXT.WORDS_NUM": 5, "TEXT.CAPTIONS_PER_IMAGE": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset(cfg, "test", every_caption=True)
    assert ds.layout == "custom" and ds.imsizes == [8, 16] and ds.words_num == 5 and len(ds) == 4
    assert ds.bert_tokenizer is None and ds.pad_token_id is None
    cfg.TEXT.ENCODER = "bert"
    cfg.TEXT.BERT_PATH = str(tiny / "no_such_model")
    with pytest.raises(FileNotFoundError, match=r"TEXT\.BERT_PATH not found: .*no_such_model"):
        build_dataset(cfg, "train")
    cfg.DATA_DIR = ""
    with pytest.raises(DatasetLayoutError, match="DATA_DIR is empty"):
        build_dataset(cfg, "train")


def test_bert_captions_with_minilm(tiny, minilm_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(minilm_dir), local_files_only=True)
    ds = custom_ds(tiny, bert_tokenizer=tok, words_num=7)
    assert ds.n_words == 30522 and ds.pad_token_id == 0 and ds.bert_tokenizer is tok
    assert pickle.loads(pickle.dumps(ds)).captions == ds.captions  # DataLoader workers under spawn
    assert not (tiny / "captions.pickle").exists()  # the BERT path needs no word vocabulary
    assert ds.caption_text(1) == "This red bird, with wings!"
    expected = tok("This red bird, with wings!", add_special_tokens=False)["input_ids"]
    assert ds.captions[1] == expected and tok.cls_token_id not in expected
    cap, n = ds.get_caption(1)
    assert n == len(expected) and cap[:n].tolist() == expected and cap[n:].eq(0).all()
    assert [ds.ixtoword[i] for i in expected[:2]] == ["this", "red"]
    ds.captions[1] = expected * 2  # longer than words_num: ordered subset
    torch.manual_seed(0)
    cap, n = ds.get_caption(1)
    assert n == 7 and 0 not in cap.tolist()
    cfg = load_config(None, {"DATA_DIR": str(tiny), "DATA.LAYOUT": "custom", "TEXT.ENCODER": "bert",
                             "TEXT.BERT_PATH": str(minilm_dir), "TEXT.CAPTIONS_PER_IMAGE": 2,
                             "TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 8})
    built = build_dataset(cfg, "test")
    assert built.n_words == 30522 and built.caption_text(0) == "a red bird number 3"


def test_swap_pad_id_round_trip():
    ids = torch.tensor([0, 5, 1, 7, 0])
    swapped = swap_pad_id(ids, 1)
    assert swapped.tolist() == [1, 5, 0, 7, 1]
    assert torch.equal(swap_pad_id(swapped, 1), ids)
    assert swap_pad_id([3, 0, 4], 4) == [3, 4, 0]
    assert swap_pad_id([3, 0], 0) == [3, 0]


def test_flip_and_crop_are_config_choices(tmp_path):
    """DATA.FLIP none / text and DATA.RANDOM_CROP False: no flip or crop; 'text' flips swap left/right words."""
    lines = {k: ["a red bird on the left", "a red bird on the left"] for k in ("red/red_0",)}
    root = make_custom(tmp_path / "d", extra_text=lines)
    plain = custom_ds(root, base_size=8, branch_num=2, augment=False)
    centre = plain.get_imgs(0)
    none = custom_ds(root, base_size=8, branch_num=2, flip="none", random_crop=False)
    for seed in range(8):  # with neither flip nor crop every draw is the centre crop
        torch.manual_seed(seed)
        assert all(torch.equal(a, b) for a, b in zip(none[0]["imgs"], centre))
    # the vocabulary has 'left' but no 'right': a text flip could not mirror these captions
    with pytest.raises(ValueError, match="left.*right.*not in the vocabulary"):
        custom_ds(root, flip="text", flip_word_pairs=[("left", "right")])
    with pytest.raises(ValueError, match="DATA.FLIP"):
        custom_ds(root, flip="sometimes")


def test_text_flip_mirrors_image_and_caption(tmp_path):
    lines = {"red/red_0": ["a red bird on the left", "a red bird on the right"]}
    root = make_custom(tmp_path / "d", extra_text=lines)
    ds = custom_ds(root, base_size=8, branch_num=2, flip="text", random_crop=False, words_num=8)
    centre = custom_ds(root, base_size=8, branch_num=2, augment=False, words_num=8).get_imgs(0)
    ix = ds.wordtoix
    seen = set()
    for seed in range(24):
        torch.manual_seed(seed)
        item = ds[0]
        flipped = torch.equal(item["imgs"][-1], centre[-1].flip(-1))
        assert flipped or torch.equal(item["imgs"][-1], centre[-1])
        assert torch.equal(item["imgs"][0], centre[0].flip(-1) if flipped else centre[0])
        words = [ds.ixtoword[int(i)] for i in item["caption"][:item["cap_len"]]]
        side = words[-1]
        original = lines["red/red_0"][item["caption_index"] % 2].split()[-1]
        assert side == ({"left": "right", "right": "left"}[original] if flipped else original)
        seen.add((flipped, original))
    assert len(seen) == 4  # both captions, flipped and not
    assert ix["left"] != ix["right"]


def test_branch_images_cached_without_random_crop(tmp_path):
    root = make_custom(tmp_path / "d")
    ds = custom_ds(root, base_size=8, branch_num=2, flip="none", random_crop=False, cache_images=1)
    first = ds.get_imgs(0)
    assert 0 in ds._branch_cache and ds._branch_cache[0][0].dtype == torch.uint8
    assert all(torch.equal(a, b) for a, b in zip(first, ds.get_imgs(0)))
    cropped = custom_ds(root, base_size=8, branch_num=2, random_crop=True, cache_images=1)
    cropped.get_imgs(0)
    assert not cropped._branch_cache  # random crops differ per draw: only the decoded image is cached


def test_load_scale_one_keeps_the_whole_frame(tmp_path):
    """DATA.LOAD_SCALE 1.0: the image is the whole (square) frame resized to imsize, so an object at the border
    stays; AttnGAN's 76/64 cuts 8 % off every side even without a random crop."""
    root = make_custom(tmp_path / "d", size=(32, 32))
    whole = custom_ds(root, base_size=16, branch_num=1, augment=False, load_scale=1.0).get_imgs(0)[-1]
    cut = custom_ds(root, base_size=16, branch_num=1, augment=False).get_imgs(0)[-1]
    src = Image.open(root / "images" / "red" / "red_0.png").convert("RGB").resize((16, 16), Image.BILINEAR)
    expected = torch.from_numpy(np.array(src)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(whole, expected, atol=1e-6)
    assert (cut - expected).abs().max() > 0.1  # the 19-px resize, centre-cropped: a different (enlarged) view
    for bad in (0.5, "1", 5.0):
        with pytest.raises(ValueError, match="DATA.LOAD_SCALE"):
            custom_ds(root, load_scale=bad)
