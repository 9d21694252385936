"""The demo (tools/demo.py): its plan (what it will run and how long each step takes on this machine) and the
shipped shapes DAMSM it trains against."""
import pytest

from datasets import build_dataset
from miscc.config import load_config
from models.damsm.trainer import damsm_r_precision
from tests.helpers import tiny_shapes
from tools.demo import SHIPPED_DAMSM, own_extra_encoder, shipped_text_encoder, training_plan, validations
from trainers.common import load_damsm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_validation_count_follows_the_interval():
    assert validations(8, 1) == 8  # AttnGAN: every epoch
    assert validations(8, 4) == 2  # after epochs 4 and 8
    assert validations(10, 4) == 3  # 4, 8 and the last
    assert validations(8, 0) == 0


@pytest.mark.parametrize("adv, magp, timed", [(1, 1, [1, 2, 3]), (4, 1, [2, 3, 4, 5]), (1, 2, [2, 3, 4, 5])])
def test_timed_steps_advance_the_step_counter_over_whole_intervals(adv, magp, timed):
    """The plan's step times (`bench.common.time_train_steps`) count steps as the training loop does and time a
    whole number of TRAIN.ADV_INTERVAL / SSA.MAGP_INTERVAL, whose steps differ in work by their number."""
    import torch

    from bench.common import time_train_steps

    class Trainer:
        cfg, step, seen = load_config(None, {"TRAIN.ADV_INTERVAL": adv, "SSA.MAGP_INTERVAL": magp}), 0, []

        def train_step(self, batch):
            self.seen.append(self.step)

    trainer = Trainer()
    time_train_steps(trainer, None, 4, torch.device("cpu"), steps=3)
    assert trainer.seen[-len(timed):] == timed and trainer.step == trainer.seen[-1] + 1


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
    adversarial ones (that epoch) separately and adds them by count; likewise the epochs with and without
    TRAIN.PERCEPTUAL_EXTRA's second image encoder, and those with and without TRAIN.PAIRED_ANCHOR's second draw."""
    import bench.common

    per_step = {0: 1.0, 2: 10.0}  # seconds per step in a G-alone epoch and in an adversarial one
    monkeypatch.setattr(bench.common, "step_seconds", lambda cfg, n_words, batch, epoch=0, cold=False: per_step[epoch])
    monkeypatch.setattr(bench.common, "forward_seconds", lambda cfg, n_words, batch: 0.0)
    epochs, steps, seconds = training_plan("cfg/shapes_attn.yml", ["TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=3",
                                                                   "TRAIN.ADV_START_EPOCH=2"], 16, 40)
    assert (epochs, steps) == (3, 12)
    assert seconds == pytest.approx(8 * 1.0 + 4 * 10.0)
    per_step[3] = 10.0
    _, _, alone = training_plan("cfg/shapes_attn.yml", ["TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=3",
                                                        "TRAIN.ADV_START_EPOCH=3"], 16, 40)
    assert alone == pytest.approx(12 * 1.0)
    per_step[1] = 2.0  # and the epochs before TRAIN.PERCEPTUAL_EXTRA_EPOCHS apart again (a second image encoder)
    _, _, extra = training_plan("cfg/shapes_attn.yml", ["TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=3",
                                                        "TRAIN.ADV_START_EPOCH=2", "TRAIN.PERCEPTUAL_EXTRA=x.pth",
                                                        "TRAIN.PERCEPTUAL_EXTRA_EPOCHS=1"], 16, 40)
    assert extra == pytest.approx(4 * 1.0 + 4 * 2.0 + 4 * 10.0)
    per_step.update({0: 3.0, 2: 1.0})  # the epochs before TRAIN.PAIRED_ANCHOR_EPOCHS render each caption twice
    _, _, anchored = training_plan("cfg/shapes_attn.yml", ["TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=3",
                                                           "TRAIN.ADV_START_EPOCH=0", "TRAIN.PERCEPTUAL_EXTRA=",
                                                           "TRAIN.PAIRED_ANCHOR_EPOCHS=2"], 16, 40)
    assert anchored == pytest.approx(8 * 3.0 + 4 * 1.0)


def test_generator_plan_counts_cold_first_steps_snapshots_and_grids(monkeypatch):
    """What the demo's plan under-read before (8.6 min run against a 6.4 min plan on a Zen 4): the first steps meet
    every image and its flip for the first time, so they are timed without the real-feature cache; each snapshot
    adds TRAIN.EMA_BN_BATCHES generator forwards and a grid, each TRAIN.IMAGE_INTERVAL steps a grid."""
    import bench.common

    monkeypatch.setattr(bench.common, "step_seconds",
                        lambda cfg, n_words, batch, epoch=0, cold=False: 5.0 if cold else 1.0)
    monkeypatch.setattr(bench.common, "forward_seconds", lambda cfg, n_words, batch: 0.5)
    base = ["TRAIN.BATCH_SIZE=4", "TRAIN.MAX_EPOCH=4", "TRAIN.PERCEPTUAL_EXTRA=", "TRAIN.PAIRED_ANCHOR_EPOCHS=0",
            "TRAIN.SNAPSHOT_INTERVAL=2", "TRAIN.EMA_BN_BATCHES=10", "TRAIN.IMAGE_INTERVAL=4"]
    # 16 images, flips ('text'): the first 8 of 16 steps are cold; 2 snapshots x (10 + 1) forwards + 4 grids
    _, steps, seconds = training_plan("cfg/shapes_attn.yml", base, 16, 40)
    assert steps == 16 and seconds == pytest.approx(8 * 5.0 + 8 * 1.0 + (2 * 11 + 4) * 0.5)
    _, _, unflipped = training_plan("cfg/shapes_attn.yml", [*base, "DATA.FLIP=none"], 16, 40)
    assert unflipped == pytest.approx(4 * 5.0 + 12 * 1.0 + 26 * 0.5)
    _, _, uncached = training_plan("cfg/shapes_attn.yml", [*base, "TRAIN.REAL_FEATURE_CACHE_MB=0",
                                                           "TRAIN.EMA_BN_BATCHES=0"], 16, 40)
    assert uncached == pytest.approx(16 * 1.0 + 6 * 0.5)


def test_shipped_damsm_reads_the_shapes_data_and_matches_images_to_their_captions(tmp_path):
    """The encoders in DAMSMencoders/shapes serve any shapes set of the default seed (same word ids: vocabulary.txt),
    load strictly with the shapes configs, and are trained: R-precision on 100 test images, each against its own
    caption and 99 of other classes, is far above chance (1 %). Another seed orders the words differently: refused,
    naming the vocabulary file, so the demo trains its own DAMSM."""
    data = tiny_shapes(tmp_path, n_train=24, n_test=100, seed=0)
    path, why = shipped_text_encoder(data)
    assert path == f"{SHIPPED_DAMSM}/text_encoder12.pth" and why == ""
    cfg = load_config("cfg/DAMSM/shapes.yml", {"DATA_DIR": data, "TRAIN.NET_E": path})
    text_encoder, image_encoder = load_damsm(cfg, 47, "cpu")
    r_precision, _ = damsm_r_precision(image_encoder, text_encoder, build_dataset(cfg, "test"), "cpu", n_samples=100)
    assert r_precision >= 90.0, r_precision
    for name in ("cfg/shapes_attn.yml", "cfg/shapes_ssa.yml", "cfg/shapes_dfgan.yml", "cfg/shapes_gan_int_cls.yml"):
        assert load_config(name).TRAIN.NET_E == "DAMSMencoders/shapes/text_encoder12.pth", name

    other, why = shipped_text_encoder(tiny_shapes(tmp_path, n_train=24, n_test=8, seed=1))
    assert other is None and "vocabulary.txt" in why and "captions.pickle" in why


def test_a_demo_with_its_own_damsm_reads_its_own_early_image_encoder():
    """cfg/shapes_attn.yml's TRAIN.PERCEPTUAL_EXTRA names the shipped DAMSM's epoch-4 image encoder; a demo that
    pre-trains its own DAMSM passes that run's epoch-4 snapshot instead, and configs without the key get nothing."""
    assert load_config("cfg/shapes_attn.yml").TRAIN.PERCEPTUAL_EXTRA == "DAMSMencoders/shapes/image_encoder4.pth"
    own = own_extra_encoder("cfg/shapes_attn.yml", "output/demo/damsm/Model/text_encoder12.pth", shipped=False)
    assert own == ["TRAIN.PERCEPTUAL_EXTRA=output/demo/damsm/Model/image_encoder4.pth"]
    assert own_extra_encoder("cfg/shapes_attn.yml", "x/text_encoder12.pth", shipped=True) == []
    assert own_extra_encoder("cfg/shapes_ssa.yml", "x/text_encoder12.pth", shipped=False) == []
