"""The demo's plan (tools/demo.py): what it will run and how long each step takes on this machine."""
import pytest

from tests.helpers import tiny_shapes
from tools.demo import training_plan, validations

pytestmark = pytest.mark.usefixtures("one_thread")


def test_validation_count_follows_the_interval():
    assert validations(8, 1) == 8  # AttnGAN: every epoch
    assert validations(8, 4) == 2  # after epochs 4 and 8
    assert validations(10, 4) == 3  # 4, 8 and the last
    assert validations(8, 0) == 0


def test_damsm_plan_counts_its_validations(tmp_path):
    """The DAMSM step of the plan includes the timed validations: more of them, a longer estimate."""
    from datasets import build_dataset
    from miscc.config import load_config

    data = tiny_shapes(tmp_path, n_train=16, n_test=16)
    common = [f"DATA_DIR={data}", "TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=4", "TEXT.EMBEDDING_DIM=16",
              "DAMSM.RPREC_SAMPLES=12", "DAMSM.VALID_BATCHES=1", "WORKERS=0"]
    test = build_dataset(load_config("cfg/DAMSM/shapes.yml", {"DATA_DIR": data}), "test")
    epochs, steps, without = training_plan("cfg/DAMSM/shapes.yml", [*common, "DAMSM.VALID_INTERVAL=0"], 16, 40,
                                           test)
    assert (epochs, steps) == (4, 16) and without > 0
    _, _, every = training_plan("cfg/DAMSM/shapes.yml", [*common, "DAMSM.VALID_INTERVAL=1"], 16, 40, test)
    assert every > without
