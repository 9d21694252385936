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


def test_generator_plan_times_the_steps_before_and_after_adv_start_epoch_apart(monkeypatch):
    """An AttnGAN config trains G alone before TRAIN.ADV_START_EPOCH: the plan times those steps (epoch 0) and the
    adversarial ones (that epoch) separately and adds them by count."""
    import bench.common

    per_step = {0: 1.0, 2: 10.0}  # seconds per step in a G-alone epoch and in an adversarial one
    monkeypatch.setattr(bench.common, "step_seconds", lambda cfg, n_words, batch, epoch=0: per_step[epoch])
    epochs, steps, seconds = training_plan("cfg/shapes_attn.yml", ["TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=3",
                                                                   "TRAIN.ADV_START_EPOCH=2"], 16, 40)
    assert (epochs, steps) == (3, 12)
    assert seconds == pytest.approx(8 * 1.0 + 4 * 10.0)
    per_step[3] = 10.0
    _, _, alone = training_plan("cfg/shapes_attn.yml", ["TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=3",
                                                        "TRAIN.ADV_START_EPOCH=3"], 16, 40)
    assert alone == pytest.approx(12 * 1.0)
