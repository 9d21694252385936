"""tools/probe_text_codes.py: what a text encoder's codes hold of a shapes caption (the README's "Why SSA-GAN, DF-GAN
and GAN-INT-CLS as published fall short")."""
import pytest
import torch

from datasets import build_dataset
from miscc.config import load_config
from miscc.errors import InputError
from miscc.shapes_spec import COLORS, POSITIONS
from tests.helpers import tiny_shapes
from tools.probe_text_codes import caption_targets, main, probe_text_codes, score_probe, train_probe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes_1000(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("probe"), n_train=1000, n_test=100)


def test_targets_follow_the_caption():
    t = caption_targets(["a big red circle on the left and a small blue square in the top right corner",
                         "there is a green triangle"])
    red, blue = 1 + list(COLORS).index("red"), 1 + list(COLORS).index("blue")
    assert t["cells"][0].tolist() == [0, 0, blue, red, 0, 0, 0, 0, 0]
    assert t["cells"][1].tolist() == [-1] * len(POSITIONS)  # no place named: no cell is known
    assert t["pairs"].sum(1).tolist() == [2, 1]
    with pytest.raises(InputError, match="names no coloured shape"):
        caption_targets(["a picture"])


def test_the_probe_reads_two_objects_where_the_codes_hold_them(shapes_1000):
    """Codes that do hold both objects' colours at their cells (the cell targets one-hot, plus noise) are read for
    two-object captions too (99.8 % on the full 4,000-image set; here, from 1,000 images, >= 85 %): a low score on
    real codes is the codes', not the probe's."""
    data = shapes_1000
    texts = {}
    for split in ("train", "test"):
        ds = build_dataset(load_config("cfg/shapes_ssa.yml", {"DATA_DIR": data}), split, augment=False)
        texts[split] = [ds.caption_text(i) for i in range(len(ds.captions))]

    def oracle(t):
        cells = t["cells"].clamp(min=0)
        code = torch.nn.functional.one_hot(cells, 1 + len(COLORS)).flatten(1).float()
        return torch.cat((code, t["pairs"]), 1) + 0.05 * torch.randn(len(cells), code.size(1) + t["pairs"].size(1))

    torch.manual_seed(0)
    y_tr, y_te = caption_targets(texts["train"]), caption_targets(texts["test"])
    probe = train_probe(oracle(y_tr), y_tr, words=False, epochs=10)
    scores = score_probe(probe, oracle(y_te), y_te)
    assert scores["color_at_cell_2obj"] >= 85.0 and scores["color_shape_2obj"] >= 95.0, scores


def test_the_shipped_sentence_code_places_one_object_of_two(shapes_1000, capsys):
    """The shipped DAMSM's sentence code: one-object captions' colour at the named cell is recovered, two-object
    captions' far less (the code names one object's place, not both). And the command line prints its table."""
    data = shapes_1000
    cfg = load_config("cfg/shapes_ssa.yml", {"DATA_DIR": data})
    r = probe_text_codes(cfg, ("sentence",), epochs=10)["sentence"]
    assert r["color_at_cell_1obj"] >= 90.0, r
    assert r["color_at_cell_2obj"] <= r["color_at_cell_1obj"] - 20.0, r

    assert main(["--cfg", "cfg/shapes_ssa.yml", "--data_dir", data, "--features", "sentence", "--epochs", "1"]) == 0
    assert "| sentence |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--cfg", "cfg/shapes_ssa.yml", "--data_dir", data, "--features", "pooled"])
