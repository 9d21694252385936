"""Reed/GAN-INT-CLS hd5 files: the exact layout written, every string storage kind read back, image decoding
(grayscale, RGBA, explicit resize filter), wrong images from other classes, workers, and the converter core."""
import io
import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from miscc.errors import run_cli
from miscc.reed_hd5 import ReedHd5Dataset, convert_to_reed_hd5, describe_hd5, main, write_reed_hd5

D = 6


def _png(color, size=(64, 64), mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _noise_png(seed, size=(100, 80)):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# Four images in two classes, two captions each; embedding[0] = class number, embedding[1] = image number.
IMAGES = [("Image_0001", "class_00001", (250, 0, 0)), ("Image_0002", "class_00001", (0, 250, 0)),
          ("Image_0003", "class_00002", (0, 0, 250)), ("Image_0004", "class_00002", (250, 250, 0))]


def _examples():
    out = []
    for i, (name, cls, color) in enumerate(IMAGES):
        for c in range(2):
            emb = np.zeros(D, np.float32)
            emb[0], emb[1], emb[2] = int(cls[-1]), i, c
            out.append((name, _png(color), emb, cls, f"caption {c} of {name.lower()}, café\n"))
    return out


def _expected_image(color):
    return ((torch.tensor(color, dtype=torch.float32) - 127.5) / 127.5)[:, None, None].expand(3, 64, 64)


def test_writer_layout_matches_the_original_converters(tmp_path):
    path = tmp_path / "birds.hdf5"
    counts = write_reed_hd5(path, {"train": _examples(), 2: _examples()[:2]})
    assert counts == {"train": 8, "valid": 0, "test": 2}
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["test", "train", "valid"]
        assert sorted(f["train"].keys()) == [f"Image_000{i}_{c}" for i in range(1, 5) for c in range(2)]
        ex = f["train/Image_0003_1"]
        assert sorted(ex.keys()) == ["class", "embeddings", "img", "name", "txt"]
        assert ex["img"].dtype.kind == "V" and ex["img"][()].tobytes() == _png((0, 0, 250))
        assert ex["embeddings"].dtype == np.float32 and ex["embeddings"].shape == (D,)
        for n in ("name", "class", "txt"):
            info = h5py.check_string_dtype(ex[n].dtype)
            assert info is not None and info.length is None and info.encoding == "utf-8"  # vlen str
        assert ex["txt"][()].decode() == "caption 1 of image_0003, café\n"  # trailing newline kept
        assert ex["name"][()].decode() == "Image_0003" and ex["class"][()].decode() == "class_00002"
    with pytest.raises(ValueError, match="embedding"):
        write_reed_hd5(tmp_path / "bad.hdf5", {"train": [("x", _png(0), np.zeros((2, 3)), "c", "t")]})
    assert not (tmp_path / "bad.hdf5").exists()


def test_round_trip_sample_dict(tmp_path):
    path = tmp_path / "flowers.hdf5"
    write_reed_hd5(path, {"train": _examples()})
    ds = ReedHd5Dataset(path, split=0, seed=0)
    assert len(ds) == 8 and ds.keys[0] == "Image_0001_0"
    s = ds[5]  # Image_0003_1
    assert set(s) == {"right_images", "right_embed", "wrong_images", "wrong_embed", "inter_embed", "txt", "class",
                      "name"}
    assert s["right_images"].shape == (3, 64, 64) and s["right_images"].dtype == torch.float32
    torch.testing.assert_close(s["right_images"], _expected_image((0, 0, 250)))
    assert s["right_embed"].tolist() == [2, 2, 1, 0, 0, 0]
    assert s["txt"] == "caption 1 of image_0003, café" and s["class"] == "class_00002" and s["name"] == "Image_0003"
    assert s["inter_embed"].shape == (D,)
    # The wrong image and embedding belong to one example of the other class.
    for i in range(len(ds)):
        s = ds[i]
        assert s["wrong_embed"][0] != s["right_embed"][0]
        wrong_color = IMAGES[int(s["wrong_embed"][1])][2]
        torch.testing.assert_close(s["wrong_images"], _expected_image(wrong_color))


def test_wrong_images_reach_every_other_class_example(tmp_path):
    path = tmp_path / "d.hdf5"
    write_reed_hd5(path, {"train": _examples()})
    ds = ReedHd5Dataset(path, seed=3)
    picked = {int(ds[0]["wrong_embed"][1]) for _ in range(60)}
    assert picked == {2, 3}  # images of class_00002 only, both of them
    first, second = ReedHd5Dataset(path, seed=3), ReedHd5Dataset(path, seed=3)
    picks = [[int(d[i]["wrong_embed"][1]) for i in range(8)] for d in (first, second)]
    assert picks[0] == picks[1]  # the same seed gives the same partners


def _write_manual(path, kind):
    """A file written like h5py 2 / Python 2 converters would: strings as vlen str, vlen bytes or fixed |S."""
    with h5py.File(path, "w") as f:
        for split in ("train", "valid", "test"):
            f.create_group(split)
        for i, (name, cls, color) in enumerate(IMAGES):
            ex = f["train"].create_group(f"{name}_0")
            txt = f"a bird number {i}\n"
            for field, value in (("name", name), ("class", cls), ("txt", txt)):
                if kind == "vlen-str":
                    ex.create_dataset(field, data=value)  # h5py 3 default for a Python str
                elif kind == "vlen-bytes":
                    ex.create_dataset(field, data=value.encode(), dtype=h5py.string_dtype("ascii"))
                else:
                    ex.create_dataset(field, data=np.bytes_(value.encode()))
            ex.create_dataset("img", data=np.void(_png(color)))
            ex.create_dataset("embeddings", data=np.full(1024, i, np.float32))


@pytest.mark.parametrize("kind", ["vlen-str", "vlen-bytes", "fixed"])
def test_reader_accepts_every_string_storage(tmp_path, kind):
    path = tmp_path / f"{kind}.hdf5"
    _write_manual(path, kind)
    with h5py.File(path, "r") as f:
        dt = f["train/Image_0002_0/txt"].dtype
        assert (dt.kind == "S") == (kind == "fixed")
    ds = ReedHd5Dataset(path, "train", seed=1)
    s = ds[1]
    assert s["txt"] == "a bird number 1" and s["class"] == "class_00001" and s["name"] == "Image_0002"
    assert s["right_embed"].shape == (1024,) and s["right_embed"][0] == 1
    assert s["wrong_embed"][0] in (2, 3)
    summary = describe_hd5(str(path))["train"]
    assert summary["classes"] == 2
    expected = {"vlen-str": "vlen utf-8", "vlen-bytes": "vlen ascii", "fixed": "fixed 16 ascii"}[kind]
    assert summary["strings"]["txt"] == expected


def test_grayscale_rgba_and_resize_filter(tmp_path):
    gray = _png(77, mode="L")
    rgba = _png((10, 200, 30, 5), mode="RGBA")
    big = _noise_png(0)
    examples = [("gray", gray, np.zeros(D), "A", "g"), ("rgba", rgba, np.zeros(D), "B", "r"),
                ("big", big, np.zeros(D), "C", "b")]
    path = tmp_path / "modes.hdf5"
    write_reed_hd5(path, {"test": examples})
    bicubic = ReedHd5Dataset(path, "test", seed=0)
    by_name = {bicubic[i]["name"]: bicubic[i] for i in range(3)}
    g = by_name["gray"]["right_images"]
    assert g.shape == (3, 64, 64) and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert g[0, 0, 0].item() == pytest.approx((77 - 127.5) / 127.5)
    torch.testing.assert_close(by_name["rgba"]["right_images"], _expected_image((10, 200, 30)))  # alpha dropped
    src = Image.open(io.BytesIO(big))

    def expected(resample):
        arr = np.asarray(src.resize((64, 64), resample=resample), dtype=np.float32).transpose(2, 0, 1)
        return (torch.from_numpy(arr.copy()) - 127.5) / 127.5

    torch.testing.assert_close(by_name["big"]["right_images"], expected(Image.BICUBIC))
    nearest = ReedHd5Dataset(path, "test", resize_filter=Image.NEAREST, seed=0)
    big_nearest = next(nearest[i] for i in range(3) if nearest[i]["name"] == "big")["right_images"]
    torch.testing.assert_close(big_nearest, expected(Image.NEAREST))
    assert not torch.equal(big_nearest, by_name["big"]["right_images"])
    small = ReedHd5Dataset(path, "test", image_size=32, seed=0)
    assert small[0]["right_images"].shape == (3, 32, 32)


def test_errors_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        ReedHd5Dataset(tmp_path / "nope.hdf5")
    path = tmp_path / "d.hdf5"
    write_reed_hd5(path, {"train": _examples()})
    with pytest.raises(ValueError, match="split must be one of"):
        ReedHd5Dataset(path, split=3)
    with pytest.raises(ValueError, match="'valid' is empty"):
        ReedHd5Dataset(path, split="valid")
    with h5py.File(path, "a") as f:
        del f["train/Image_0001_0/embeddings"]
    ds = ReedHd5Dataset(path, seed=0)
    with pytest.raises(KeyError, match=r"train/Image_0001_0.*embeddings"):
        ds[0]
    ds.close()
    write_reed_hd5(path, {"train": _examples()[:4]})  # one class only
    with pytest.raises(ValueError, match="at least two classes"):
        ReedHd5Dataset(path, seed=0)[0]
    with h5py.File(path, "w") as f:
        f.create_group("other")
    with pytest.raises(KeyError, match="no 'train' group"):
        ReedHd5Dataset(path)


def test_lazy_file_handles_pickling_and_workers(tmp_path):
    path = tmp_path / "d.hdf5"
    write_reed_hd5(path, {"train": _examples()})
    ds = ReedHd5Dataset(path, seed=0)
    assert ds._file is None  # nothing open until the first item
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))  # the open h5py handle is not pickled
    assert clone._file is None and clone[3]["name"] == "Image_0002"
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["right_images"].shape == (4, 3, 64, 64)
    assert batches[1]["txt"][3] == "caption 1 of image_0004, café"
    assert batches[0]["class"] == ["class_00001"] * 4


def test_convert_to_reed_hd5(tmp_path):
    files = {}
    for i, (name, cls, color) in enumerate(IMAGES[:3]):
        p = tmp_path / f"{name}.png"
        p.write_bytes(_png(color))
        files[name] = (f"{cls}/{name}", str(p), cls, [f"{name} caption {c}" for c in range(10)])
    table = {c: np.random.default_rng(abs(hash(c)) % 2 ** 32).normal(size=4).astype(np.float32)
             for _, _, _, caps in files.values() for c in caps}
    calls = []

    def embed_fn(captions):
        calls.append(len(captions))
        return np.stack([table[c] for c in captions])

    out = tmp_path / "converted.hdf5"
    items = list(files.values())
    counts = convert_to_reed_hd5(out, {"train": [items[0], items[2]], "test": [items[1]]}, embed_fn,
                                 rng=np.random.default_rng(0), batch_images=1)
    assert counts == {"train": 10, "valid": 0, "test": 5}
    assert calls == [5, 5, 5]
    with h5py.File(out, "r") as f:
        assert sorted(f["test"].keys()) == [f"Image_0002_{c}" for c in range(5)]
        for split in ("train", "test"):
            for k in f[split]:
                ex = f[split][k]
                name = ex["name"][()].decode()
                txt = ex["txt"][()].decode()
                assert txt.endswith("\n") and txt[:-1] in files[name][3]
                np.testing.assert_array_equal(ex["embeddings"][()], table[txt[:-1]])
                assert ex["img"][()].tobytes() == open(files[name][1], "rb").read()
                assert ex["class"][()].decode() == files[name][2]
    ds = ReedHd5Dataset(out, "train", seed=0)
    assert ds[0]["right_embed"].shape == (4,) and ds[0]["wrong_images"].shape == (3, 64, 64)
    batched = []
    convert_to_reed_hd5(tmp_path / "batched.hdf5", {"train": items}, lambda caps: batched.append(len(caps))
                        or np.stack([table[c] for c in caps]), batch_images=2)
    assert batched == [10, 5]  # captions of up to 2 images per embed_fn call
    with pytest.raises(ValueError, match="embed_fn returned shape"):
        convert_to_reed_hd5(tmp_path / "x.hdf5", {"train": list(files.values())}, lambda caps: np.zeros((1, 4)))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        convert_to_reed_hd5(tmp_path / "y.hdf5", {"train": [("k", str(tmp_path / "missing.jpg"), "c", ["a"])]},
                            embed_fn)


def test_inspect_cli(tmp_path, capsys):
    path = tmp_path / "d.hdf5"
    write_reed_hd5(path, {"train": _examples()})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "train examples=8" in out and "classes=2" in out and "embedding_shape=(6,)" in out
    assert "'txt': 'vlen utf-8'" in out
    assert run_cli(main, ["inspect", str(tmp_path / "missing.hdf5")]) == 2
    assert "missing.hdf5" in capsys.readouterr().err
