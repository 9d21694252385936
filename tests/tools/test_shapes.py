"""The synthetic `shapes` dataset: layout, determinism, AttnGAN-compatible pickles, and captions/attributes/pixels
that agree with each other (shared/reference/shapes_spec.md)."""
import json
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from miscc.safe_pickle import safe_load_pickle
from miscc.text import tokenize_caption
from tools.make_shapes import (BACKGROUNDS, COLORS, EXAMPLE_CAPTIONS, POSITIONS, SHAPES, caption_lexicon,
                               generate_shapes, main, parse_caption)

N_TRAIN, N_TEST, SIZE = 40, 10, 256


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "shapes"
    summary = generate_shapes(out, n_train=N_TRAIN, n_test=N_TEST, seed=0)
    return out, summary


@pytest.fixture(scope="module")
def records(data):
    """(key, attributes, captions as text lines, decoded image array) for every image."""
    out, _ = data
    attrs = json.loads((out / "attributes.json").read_text())
    rows = []
    for split in ("train", "test"):
        for key in safe_load_pickle(out / split / "filenames.pickle"):
            lines = (out / "text" / f"{key}.txt").read_text().splitlines()
            img = np.asarray(Image.open(out / "images" / f"{key}.png"))
            rows.append((key, attrs[key], lines, img))
    return rows


def test_same_seed_is_byte_identical_and_other_seed_differs(data, tmp_path):
    out, _ = data
    again, other = tmp_path / "again", tmp_path / "other"
    generate_shapes(again, n_train=N_TRAIN, n_test=N_TEST, seed=0)
    generate_shapes(other, n_train=N_TRAIN, n_test=N_TEST, seed=1)
    ref = _files(out)
    assert _files(again) == ref
    changed = _files(other)
    assert changed.keys() == ref.keys()
    assert changed["attributes.json"] != ref["attributes.json"]
    assert sum(changed[k] != ref[k] for k in ref if k.startswith("images/")) > (N_TRAIN + N_TEST) // 2


def test_layout_and_metadata_pickles(data):
    out, summary = data
    train = safe_load_pickle(out / "train" / "filenames.pickle")
    test = safe_load_pickle(out / "test" / "filenames.pickle")
    assert train == [f"train_{i:05d}" for i in range(N_TRAIN)]
    assert test == [f"test_{i:05d}" for i in range(N_TEST)]
    for split, keys in (("train", train), ("test", test)):
        for name in ("filenames.pickle", "class_info.pickle"):
            assert (out / split / name).read_bytes()[:2] == b"\x80\x02", f"{split}/{name} is not protocol 2"
        class_info = safe_load_pickle(out / split / "class_info.pickle")
        assert len(class_info) == len(keys) and all(type(c) is int and 1 <= c <= 18 for c in class_info)
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(train + test)
    assert sorted(p.stem for p in (out / "text").iterdir()) == sorted(train + test)
    img = Image.open(out / "images" / "train_00000.png")
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (SIZE, SIZE))
    assert (out / "example_filenames.txt").read_text().split() == ["example_captions"]
    examples = (out / "example_captions.txt").read_text().splitlines()
    assert examples == list(EXAMPLE_CAPTIONS) and len(examples) >= 3
    assert summary["n_train"] == N_TRAIN and summary["n_test"] == N_TEST
    assert summary["n_files"] == len(_files(out)) == 2 * (N_TRAIN + N_TEST) + 8


def test_caption_text_is_plain_lowercase_words(records):
    lexicon = caption_lexicon()
    for key, _, lines, _ in records:
        assert len(lines) == 10, key
        for line in lines:
            assert line.split(" ") == tokenize_caption(line), f"{key}: {line!r} is not lowercase words"
            assert set(line.split()) <= lexicon, f"{key}: {line!r} uses words outside the lexicon"
    for line in EXAMPLE_CAPTIONS:
        assert line.split(" ") == tokenize_caption(line) and set(line.split()) <= lexicon


def test_captions_pickle_decodes_to_the_text_files(data, records):
    out, summary = data
    assert (out / "captions.pickle").read_bytes()[:2] == b"\x80\x02"
    train_caps, test_caps, ixtoword, wordtoix = safe_load_pickle(out / "captions.pickle")
    assert ixtoword[0] == "<end>" and wordtoix["<end>"] == 0
    assert {w: i for i, w in ixtoword.items()} == wordtoix
    assert sorted(ixtoword) == list(range(len(ixtoword))) == list(range(summary["n_words"]))
    assert 30 <= len(ixtoword) <= 80, "the vocabulary should be a few dozen words"
    assert len(train_caps) == 10 * N_TRAIN and len(test_caps) == 10 * N_TEST
    flat = train_caps + test_caps
    for i, (key, _, lines, _) in enumerate(records):
        for j, line in enumerate(lines):
            ids = flat[i * 10 + j]
            assert 0 not in ids
            assert [ixtoword[t] for t in ids] == line.split(), f"{key} caption {j}"
    # Vocabulary order: first appearance over train captions, then test captions (miscc.text.build_vocabulary).
    first_seen = list(dict.fromkeys(w for _, _, lines, _ in records for line in lines for w in line.split()))
    assert [ixtoword[i] for i in range(1, len(ixtoword))] == first_seen


def test_captions_agree_with_attributes(records):
    sized = with_background = 0
    for key, attrs, lines, _ in records:
        objects = attrs["objects"]
        by_color = {o["color"]: o for o in objects}
        positioned = 0
        for line in lines:
            parsed = parse_caption(line, with_size=True)
            assert sorted((p["color"], p["shape"]) for p in parsed) == sorted(
                (o["color"], o["shape"]) for o in objects), f"{key}: {line!r}"
            for p in parsed:
                assert p["position"] in (None, by_color[p["color"]]["position"]), f"{key}: {line!r}"
                assert p["size"] in (None, by_color[p["color"]]["size"]), f"{key}: {line!r}"
                sized += p["size"] is not None
            positioned += all(p["position"] is not None for p in parsed)
            words = set(line.split())
            named = {bg for bg in BACKGROUNDS if words & ({bg, "grey"} if bg == "gray" else {bg})}
            assert named <= {attrs["background"]}, f"{key}: {line!r}"
            with_background += bool(named)
        assert positioned >= 8, f"{key}: only {positioned} of 10 captions name every position"
    assert sized > 0 and with_background > 0


def _alpha(img: np.ndarray, bg, color) -> np.ndarray:
    """Per-pixel coverage recovered from the colour, along the channel where object and background differ most."""
    c = int(np.argmax(np.abs(np.subtract(color, bg))))
    return (img[..., c].astype(float) - bg[c]) / (color[c] - bg[c])


def test_pixels_agree_with_attributes(records):
    ideal_fill = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
    for key, attrs, _, img in records:
        bg = BACKGROUNDS[attrs["background"]]
        covered = np.zeros(img.shape[:2], bool)
        for obj in attrs["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE, key
            covered[y0:y1, x0:x1] = True
            color = COLORS[obj["color"]]
            cx = (x0 + x1) // 2
            cy = y0 + 2 * (y1 - y0) // 3 if obj["shape"] == "triangle" else (y0 + y1) // 2
            assert (img[cy - 2:cy + 3, cx - 2:cx + 3] == color).all(), f"{key}: {obj['color']} not at its centroid"
            alpha = _alpha(img[y0:y1, x0:x1], bg, color)
            fill = alpha.sum() / alpha.size
            # Pixel-rounded boxes are up to 1 px larger on each side, so the fill is a little below the ideal.
            ideal = ideal_fill[obj["shape"]]
            assert ideal - 0.08 < fill <= ideal + 0.01, f"{key}: {obj['shape']} fills {fill:.2f} of its box"
            if obj["shape"] == "triangle":  # apex up: the top half holds a quarter of the area
                half = alpha.shape[0] // 2
                assert alpha[:half].sum() < 0.4 * alpha.sum(), key
            half_extent = (x1 - x0) / 2 / SIZE
            lo, hi = (0.11, 0.11) if obj["size"] == "small" else (0.22, 0.22)
            assert 0.9 * lo - 1 / SIZE <= half_extent <= 1.1 * hi + 1 / SIZE, f"{key}: {obj['size']} {half_extent}"
            row, col = divmod(POSITIONS.index(obj["position"]), 3)
            assert (int((y0 + y1) / 2 / (SIZE / 3)), int((x0 + x1) / 2 / (SIZE / 3))) == (row, col), key
        assert (img[~covered] == bg).all(), f"{key}: pixels outside the objects are not the background"
        corners = [(0, 0), (0, SIZE - 1), (SIZE - 1, 0), (SIZE - 1, SIZE - 1)]
        assert sum(not covered[c] for c in corners) >= 2, key


def test_class_ids_and_two_object_constraints(data, records):
    out, _ = data
    class_ids = safe_load_pickle(out / "train" / "class_info.pickle") + safe_load_pickle(
        out / "test" / "class_info.pickle")
    counts = {1: 0, 2: 0}
    for (key, attrs, _, _), cid in zip(records, class_ids):
        objects = attrs["objects"]
        counts[len(objects)] += 1
        first = objects[0]
        assert cid == SHAPES.index(first["shape"]) * 6 + list(COLORS).index(first["color"]) + 1, key
        for o in objects:
            assert set(o) == {"shape", "color", "size", "position", "bbox"}
            assert o["shape"] in SHAPES and o["color"] in COLORS and o["position"] in POSITIONS
            assert o["size"] in ("small", "large") and all(type(v) is int for v in o["bbox"])
        if len(objects) == 2:
            a, b = objects
            assert a["color"] != b["color"] and a["position"] != b["position"], key
            ax0, ay0, ax1, ay1 = a["bbox"]
            bx0, by0, bx1, by1 = b["bbox"]
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{key}: boxes overlap"
    assert counts[1] > 0 and counts[2] > 0


def test_parse_caption_on_free_text():
    assert parse_caption("There is a large blue square on the right, and a little yellow triangle at the bottom.",
                         with_size=True) == [
        {"shape": "square", "color": "blue", "position": "right", "size": "large"},
        {"shape": "triangle", "color": "yellow", "position": "bottom", "size": "small"},
    ]
    assert parse_caption("a big green triangle in the middle of a black background") == [
        {"shape": "triangle", "color": "green", "position": "center"}]
    assert parse_caption("In the upper left corner there is an orange circle") == [
        {"shape": "circle", "color": "orange", "position": "top left"}]
    assert parse_caption("a red circle and a blue square") == [
        {"shape": "circle", "color": "red", "position": None}, {"shape": "square", "color": "blue", "position": None}]
    assert parse_caption("a circle at the lower right") == [
        {"shape": "circle", "color": None, "position": "bottom right"}]
    assert parse_caption("the background is white") == []
    parsed = [parse_caption(c) for c in EXAMPLE_CAPTIONS]
    assert all(p and all(o["color"] and o["position"] for o in p) for p in parsed)


def test_rerun_removes_stale_files_and_bad_arguments_fail(tmp_path, capsys):
    out = tmp_path / "d"
    generate_shapes(out, n_train=6, n_test=3, seed=0)
    summary = main(["--out", str(out), "--n_train", "4", "--n_test", "2", "--seed", "3"])
    printed = capsys.readouterr().out
    assert f"wrote 4 train + 2 test images (256px, seed 3) to {out}" in printed
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "test_00000.png", "test_00001.png", "train_00000.png", "train_00001.png", "train_00002.png",
        "train_00003.png"]
    assert summary["n_files"] == 2 * 6 + 8
    with pytest.raises(ValueError, match=r"n_test must be an integer >= 1, got 0"):
        generate_shapes(out, n_train=4, n_test=0)
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--image_size", "8"])
    assert "image_size must be an integer >= 32, got 8" in capsys.readouterr().err


def test_every_shapes_config_keeps_every_caption_word(records):
    """A caption longer than TEXT.WORDS_NUM loses random words (AttnGAN's rule): on shapes that drops colours and
    positions from two-object captions (31 % of them at WORDS_NUM 20). The bound is the generator's longest
    caption, which the generated captions never exceed and two-object captions come close to."""
    from miscc.config import load_config
    from miscc.shapes_spec import max_caption_words

    longest = max_caption_words()
    lengths = [len(tokenize_caption(line)) for _, _, lines, _ in records for line in lines]
    assert max(lengths) <= longest and max(lengths) >= longest - 6
    assert max_caption_words(1) < longest
    root = pathlib.Path(__file__).resolve().parents[2] / "cfg"
    configs = sorted(root.glob("shapes*.yml")) + sorted(root.glob("DAMSM/shapes*.yml"))
    assert len(configs) >= 10
    for path in configs:
        assert load_config(str(path)).TEXT.WORDS_NUM >= longest, path.name
