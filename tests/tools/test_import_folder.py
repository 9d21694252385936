"""tools/import_folder.py: a folder of captioned images -> custom layout -> TextDataset round trip."""
import os
import pickle
import warnings

import pytest
import torch
from PIL import Image

from datasets import TextDataset
from miscc.errors import run_cli
from miscc.safe_pickle import safe_load_pickle
from tools.import_folder import FolderImportError, import_folder, main


def make_source(root, classes=("circle", "square"), per_class=5, ext="png", size=(40, 30)):
    """Images with same-named caption files, one sub-folder per class (classes=None: flat)."""
    made = []
    for c, cls in enumerate(classes or [None]):
        folder = root / cls if cls else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            stem = f"img_{i:02d}"
            Image.new("RGB", size, (50 * c, 20 * i, 200)).save(folder / f"{stem}.{ext}")
            what = cls or f"thing {i}"
            (folder / f"{stem}.txt").write_text(f"A {what} number {i}.\n\na big {what}\nred and blue {what}\n")
            made.append(f"{cls}/{stem}" if cls else stem)
    return made


def load(out, split="train", **kw):
    args = dict(layout="custom", base_size=8, branch_num=2, words_num=8, captions_per_image=3)
    args.update(kw)
    return TextDataset(out, split, **args)


def test_round_trip_with_class_folders(tmp_path):
    keys = make_source(tmp_path / "src")
    out = tmp_path / "data" / "shapes"
    summary = import_folder(str(tmp_path / "src"), str(out), test_fraction=0.2, seed=0)
    assert summary["n_train"] == 8 and summary["n_test"] == 2 and summary["captions_per_image"] == 3
    assert summary["image_ext"] == "png" and summary["n_classes"] == 2
    train = safe_load_pickle(out / "train" / "filenames.pickle")
    test = safe_load_pickle(out / "test" / "filenames.pickle")
    assert sorted(train + test) == sorted(keys) and not set(train) & set(test)
    assert (out / "images" / "circle" / "img_00.png").read_bytes() == \
        (tmp_path / "src" / "circle" / "img_00.png").read_bytes()
    assert (out / "text" / "square" / "img_03.txt").is_file()
    assert (out / "class_names.txt").read_text().split("\n")[:2] == ["0 circle", "1 square"]
    examples = (out / "example_filenames.txt").read_text().split()
    assert examples == [f"text/{k}" for k in sorted(test)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # captions.pickle exists: nothing rebuilt
        ds = load(out)
    assert ds.filenames == sorted(train)
    assert ds.class_ids.tolist() == [0 if k.startswith("circle") else 1 for k in ds.filenames]
    words = [ds.ixtoword[i] for i in ds.captions[0]]
    assert words == ["a", ds.filenames[0].split("/")[0], "number", ds.filenames[0][-1]]
    torch.manual_seed(0)
    item = ds[0]
    assert [tuple(t.shape) for t in item["imgs"]] == [(3, 8, 8), (3, 16, 16)]
    assert item["imgs"][-1][2].mean() > 0.5  # blue 200 everywhere
    assert ds.caption_text(2) == f"red and blue {ds.filenames[0].split('/')[0]}"
    assert len(load(out, "test", every_caption=True)) == 6


def test_split_is_seeded(tmp_path):
    make_source(tmp_path / "src", per_class=10)
    splits = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        import_folder(str(tmp_path / "src"), str(tmp_path / name), test_fraction=0.25, seed=seed)
        splits.append(safe_load_pickle(tmp_path / name / "test" / "filenames.pickle"))
    assert splits[0] == splits[1] and splits[0] != splits[2] and len(splits[0]) == 5


def test_flat_folder_one_class_per_image_and_jpeg(tmp_path):
    keys = make_source(tmp_path / "src", classes=None, per_class=6, ext="jpeg")
    out = tmp_path / "flat"
    summary = import_folder(str(tmp_path / "src"), str(out), test_fraction=0.5, seed=1, captions_per_image=2)
    assert summary["image_ext"] == "jpg" and summary["n_classes"] == 6
    ids = {}
    for split in ("train", "test"):
        for k, c in zip(safe_load_pickle(out / split / "filenames.pickle"),
                        safe_load_pickle(out / split / "class_info.pickle")):
            assert isinstance(c, int)
            ids[k] = c
    assert sorted(ids) == sorted(keys) and sorted(ids.values()) == list(range(6))
    ds = load(out, "test", captions_per_image=2)
    assert ds.image_paths[0].endswith(".jpg") and len(ds) == 3


def test_mixed_formats_become_png(tmp_path):
    make_source(tmp_path / "src", classes=("a",), per_class=2)
    Image.new("RGB", (20, 20), (9, 9, 9)).save(tmp_path / "src" / "a" / "other.jpg")
    (tmp_path / "src" / "a" / "other.txt").write_text("a dark square\nstill dark\nvery dark\n")
    out = tmp_path / "mixed"
    assert import_folder(str(tmp_path / "src"), str(out), seed=0)["image_ext"] == "png"
    with Image.open(out / "images" / "a" / "other.png") as im:
        assert im.format == "PNG" and im.size == (20, 20)


def test_fewer_captions_reported_and_cycled(tmp_path):
    make_source(tmp_path / "src", classes=("a",), per_class=3)
    (tmp_path / "src" / "a" / "img_01.txt").write_text("only one line here\n")
    out = tmp_path / "few"
    assert import_folder(str(tmp_path / "src"), str(out))["captions_per_image"] == 1  # default: the minimum
    with pytest.warns(UserWarning, match=r"img_01\.txt: 1 captions, fewer than CAPTIONS_PER_IMAGE=3"):
        summary = import_folder(str(tmp_path / "src"), str(tmp_path / "few3"), captions_per_image=3)
    assert summary["few_captions"] == ["a/img_01"]
    caps = pickle.loads((tmp_path / "few3" / "captions.pickle").read_bytes())
    assert len(caps[0]) + len(caps[1]) == 9


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(FolderImportError, match="is not a folder"):
        import_folder(str(tmp_path / "nothing"), str(tmp_path / "o1"))
    make_source(tmp_path / "src", classes=("a",), per_class=3)
    os.remove(tmp_path / "src" / "a" / "img_02.txt")
    with pytest.raises(FolderImportError, match=r"caption file not found: .*img_02\.txt"):
        import_folder(str(tmp_path / "src"), str(tmp_path / "o2"))
    (tmp_path / "src" / "a" / "img_02.txt").write_text("...\n\n")
    with pytest.raises(FolderImportError, match=r"img_02\.txt: no caption"):
        import_folder(str(tmp_path / "src"), str(tmp_path / "o3"))
    (tmp_path / "src" / "a" / "img_02.txt").write_text("fine now\n")
    (tmp_path / "src" / "a" / "img_01.png").write_bytes(b"garbage")
    with pytest.raises(FolderImportError, match=r"img_01\.png: not a readable image"):
        import_folder(str(tmp_path / "src"), str(tmp_path / "o4"))
    make_source(tmp_path / "src2", classes=("a",), per_class=2)
    Image.new("RGB", (8, 8)).save(tmp_path / "src2" / "top.png")
    (tmp_path / "src2" / "top.txt").write_text("top level\n")
    with pytest.raises(FolderImportError, match="mixes images at the top level"):
        import_folder(str(tmp_path / "src2"), str(tmp_path / "o5"))
    with pytest.raises(FolderImportError, match="test_fraction"):
        import_folder(str(tmp_path / "src2"), str(tmp_path / "o6"), test_fraction=1.0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FolderImportError, match="exists and is not empty"):
        import_folder(str(tmp_path / "src2"), str(tmp_path / "full"))


def test_command_line(tmp_path, capsys):
    make_source(tmp_path / "src", per_class=4)
    out = tmp_path / "cli"
    assert main(["--src", str(tmp_path / "src"), "--out", str(out), "--test_fraction", "0.25", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "imported 8 images (6 train, 2 test, 2 classes, png)" in printed
    assert "LAYOUT: 'custom'" in printed and "CAPTIONS_PER_IMAGE: 3" in printed
    assert run_cli(main, ["--src", str(tmp_path / "src"), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    vocab = set(safe_load_pickle(out / "captions.pickle")[3])
    assert vocab == {"<end>", "a", "big", "red", "and", "blue", "number", "circle", "square", "0", "1", "2", "3"}
    assert "vocabulary 13 words" in printed
