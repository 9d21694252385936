"""Dataset classifier: training on a small generated shapes set, checkpoint format, attribute scoring."""
import os

import pytest
import torch

from eval.classifier import (CELL_PREFIX, EMPTY, DatasetClassifier, load_classifier, predict_logits,
                             score_attributes)
from eval.train_classifier import load_images, load_split, main, train_classifier
from miscc.errors import run_cli

make_shapes = pytest.importorskip("tools.make_shapes")


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    make_shapes.generate_shapes(out, n_train=160, n_test=40, seed=0, image_size=64)
    return str(out)


@pytest.fixture(scope="module")
def trained(shapes_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cls") / "shapes_classifier.pth")
    summary = train_classifier(shapes_dir, out, size=32, epochs=30, batch_size=32, lr=3e-3, width=8,
                               log=lambda m: None)
    return summary, out


def test_training_summary_and_checkpoint(trained, shapes_dir):
    summary, out = trained
    assert summary["fit_split"] == "train" and summary["n_fit"] == 160 and summary["n_eval"] == 40
    ckpt = torch.load(out, weights_only=True)  # plain data, no code
    assert ckpt["format"] == "t2i-eval-classifier/1" and ckpt["image_size"] == 32
    assert ckpt["num_classes"] == len(ckpt["heads"]["class"]) == len(summary["class_ids"]) <= 18
    assert [h for h in ckpt["heads"] if h.startswith(CELL_PREFIX)] == [CELL_PREFIX + p for p in make_shapes.POSITIONS]
    assert ckpt["heads"][CELL_PREFIX + "center"][0] == EMPTY and len(ckpt["heads"][CELL_PREFIX + "center"]) == 19
    # the loaded model reproduces the reported held-out accuracy
    model = load_classifier(out)
    keys, class_ids = load_split(shapes_dir, "test")
    logits = predict_logits(model, load_images(shapes_dir, keys, 32))
    labels = torch.tensor([summary["class_ids"].index(c) for c in class_ids])
    assert float((logits["class"].argmax(1) == labels).float().mean()) == pytest.approx(summary["accuracy"]["class"])
    assert len(summary["losses"]) == 30 and summary["losses"][-1] < 0.2 * summary["losses"][0]
    # it fits its training scenes, far above the all-"empty" guess (~0.86 of cells are empty)
    cells = [v for h, v in summary["fit_accuracy"].items() if h.startswith(CELL_PREFIX)]
    assert sum(cells) / len(cells) > 0.95
    assert summary["attribute_accuracy_real"]["n"] == 40


def test_missing_class_info_is_refused(shapes_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "noclass"
    shutil.copytree(shapes_dir, copy)
    os.remove(copy / "test" / "class_info.pickle")
    with pytest.raises(FileNotFoundError, match=r"test/class_info.pickle.*no class labels"):
        load_split(str(copy), "test")
    assert run_cli(main, ["--data_dir", str(copy), "--out", str(tmp_path / "x.pth")]) == 2
    assert "class_info.pickle" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def _scene_logits(model, scenes):
    """Logits whose argmax is exactly the given scenes: [{position: "<color> <shape>"}]."""
    logits = {h: torch.zeros(len(scenes), len(v)) for h, v in model.heads.items()}
    for i, scene in enumerate(scenes):
        for head in model.cell_heads:
            label = scene.get(head[len(CELL_PREFIX):], EMPTY)
            logits[head][i, model.heads[head].index(label)] = 5.0
    return logits


def test_score_attributes_rules():
    contents = [EMPTY] + [f"{c} {s}" for s in make_shapes.SHAPES for c in make_shapes.COLORS]
    model = DatasetClassifier({"class": ["1", "2"], **{CELL_PREFIX + p: contents for p in make_shapes.POSITIONS}},
                              image_size=16, width=4, depth=2)
    scene = {"top left": "red circle", "right": "blue square"}
    captions = [
        "a red circle in the top left corner and a blue square on the right",  # all right
        "a green circle in the top left corner",  # wrong colour (and so wrong position of a green object)
        "a red circle at the bottom",  # nothing there
        "a blue square",  # no position: anywhere counts; but 1 object named, 2 predicted
        "a big red square in the top left corner",  # right colour and place, wrong shape
    ]
    r = score_attributes(model, _scene_logits(model, [scene] * len(captions)), captions)
    assert r["value"] == pytest.approx(2 / 5)  # captions 0 and 3
    assert r["n_objects"] == 6 and r["n_positions"] == 5
    assert r["color"] == pytest.approx(4 / 6)  # misses: green at top left, red at the empty bottom cell
    assert r["shape"] == pytest.approx(4 / 6)  # misses: the empty bottom cell, a square where the circle is
    assert r["position"] == pytest.approx(3 / 5)
    assert r["object"] == pytest.approx(3 / 6)
    assert r["count"] == pytest.approx(1 / 5)  # only caption 0 names as many objects as are predicted
    # the shapes bar's measures: anywhere in the image / in the named cell
    assert r["color_any"] == pytest.approx(5 / 6)  # only green is drawn nowhere
    assert r["color_shape_any"] == pytest.approx(4 / 6)  # no green circle, no red square anywhere
    assert r["color_at_position"] == pytest.approx(3 / 5)  # positioned: red@tl, blue@right, green@tl x, red@bottom x, red@tl
    assert r["all_three"] == pytest.approx(2 / 5)  # the red square at top left is a circle
    # split by caption: the two objects of caption 0, the one object of each other caption
    assert r["color_any_2obj"] == r["color_shape_any_2obj"] == r["all_three_2obj"] == 1.0
    assert r["color_any_1obj"] == pytest.approx(3 / 4) and r["color_shape_any_1obj"] == pytest.approx(2 / 4)
    assert r["color_at_position_1obj"] == pytest.approx(1 / 3) and r["all_three_1obj"] == 0.0
    # split by whether the caption names the object's place: only "a blue square" leaves it open
    assert r["color_any_unplaced"] == r["color_shape_any_unplaced"] == 1.0
    assert r["color_any_placed"] == pytest.approx(4 / 5) and r["color_shape_any_placed"] == pytest.approx(3 / 5)
    perfect = score_attributes(model, _scene_logits(model, [scene]), [captions[0]],
                               parse_caption=make_shapes.parse_caption)
    assert perfect["value"] == perfect["count"] == 1.0
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        score_attributes(model, _scene_logits(model, [scene, scene]), ["a red circle"])
    plain = DatasetClassifier({"class": ["1", "2"]}, image_size=16, width=4, depth=2)
    with pytest.raises(ValueError, match="cell heads"):
        score_attributes(plain, {"class": torch.zeros(1, 2)}, ["a red circle"])


def test_load_classifier_refuses_other_files(tmp_path):
    path = tmp_path / "netG.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a classifier written by eval.train_classifier"):
        load_classifier(str(path))


def test_cub_metadata_uses_the_test_classes(shared_dir):
    """CUB's AttnGAN splits are class-disjoint (150 train / 50 test classes): fit and evaluate within test."""
    from eval.train_classifier import choose_fit_split

    cub = shared_dir / "assets" / "cub_meta"
    train, test = load_split(str(cub), "train"), load_split(str(cub), "test")
    assert len(train[0]) == 8855 and len(test[0]) == 2933
    fit, held, fit_name, held_name = choose_fit_split(train, test, seed=0)
    assert fit_name == "test (80%)" and len(fit[0]) + len(held[0]) == 2933
    assert set(fit[0]).isdisjoint(held[0]) and set(held[1]) <= set(test[1])
    assert all(int(k.split(".")[0]) == c for k, c in zip(fit[0], fit[1]))  # ids follow the filename prefix


def test_shipped_shapes_classifier_reads_unseen_real_images(tmp_path):
    """eval/shapes_classifier.pth (what the demo scores with) reads real shapes images of another seed: the
    per-object measures of the shapes bar are near 1 on real images, so a generator can reach 0.8-0.9."""
    from eval.train_classifier import first_captions
    from tools.demo import SHIPPED_CLASSIFIER

    model = load_classifier(SHIPPED_CLASSIFIER)
    assert model.image_size == 64 and len(model.cell_heads) == 9
    out = str(tmp_path / "unseen")
    make_shapes.generate_shapes(out, n_train=4, n_test=60, seed=12345, image_size=256)
    keys, _ = load_split(out, "test")
    r = score_attributes(model, predict_logits(model, load_images(out, keys, 64)), first_captions(out, keys))
    assert r["n"] == 60
    assert r["color_any"] >= 0.97 and r["color_shape_any"] >= 0.93 and r["color_at_position"] >= 0.95
