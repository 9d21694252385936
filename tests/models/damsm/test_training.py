"""DAMSM pre-training (pretrain_DAMSM.py, models/damsm/trainer.py): release files, learning-rate schedule,
exact resume."""
import os

import pytest
import torch

import pretrain_DAMSM
from miscc.checkpoint import load_checkpoint
from miscc.config import load_config
from miscc.errors import InputError
from models.damsm import build_image_encoder, build_text_encoder
from models.damsm.trainer import DAMSMTrainer
from tests.helpers import tiny_shapes
from trainers.base import STATE_FILE
from trainers.runtime import Runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SHAPES_CFG = os.path.join(ROOT, "cfg", "DAMSM", "shapes.yml")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("damsm_train"), n_train=24, n_test=16)


def _args(data_dir, out, epochs):
    return ["--cfg", SHAPES_CFG, "--gpu", "-1", "--output_dir", str(out), "--set", f"DATA_DIR={data_dir}",
            "TRAIN.BATCH_SIZE=8", f"TRAIN.MAX_EPOCH={epochs}", "TRAIN.SNAPSHOT_INTERVAL=1", "TRAIN.LOG_INTERVAL=1",
            "TEXT.EMBEDDING_DIM=16", "DAMSM.VALID_BATCHES=1", "DAMSM.RPREC_SAMPLES=16", "DATA.CACHE_IMAGES=1"]


def test_pretrain_writes_release_files_and_resumes_exactly(data_dir, tmp_path):
    assert pretrain_DAMSM.main(_args(data_dir, tmp_path / "full", 2)) == 0
    model_dir = tmp_path / "full" / "Model"
    assert sorted(os.listdir(model_dir)) == sorted(["image_encoder1.pth", "image_encoder2.pth", STATE_FILE,
                                                    "text_encoder1.pth", "text_encoder2.pth"])
    assert (tmp_path / "full" / "Image" / "attention_maps2.png").stat().st_size > 0
    log = (tmp_path / "full" / "Log" / "train.log").read_text()
    assert "valid/R_precision=" in log and "train/w_loss0=" in log

    cfg = load_config(SHAPES_CFG, {"DATA_DIR": data_dir, "TEXT.EMBEDDING_DIM": 16})
    text_state = load_checkpoint(str(model_dir / "text_encoder2.pth"))
    n_words = text_state["encoder.weight"].shape[0]
    build_text_encoder(cfg, n_words).load_state_dict(text_state)  # strict: the released layout
    build_image_encoder(cfg).load_state_dict(load_checkpoint(str(model_dir / "image_encoder2.pth")))
    assert not torch.equal(text_state["encoder.weight"],
                           load_checkpoint(str(model_dir / "text_encoder1.pth"))["encoder.weight"])

    assert pretrain_DAMSM.main(_args(data_dir, tmp_path / "part", 1)) == 0
    assert pretrain_DAMSM.main(_args(data_dir, tmp_path / "part", 2) + ["--resume"]) == 0
    for name in ("text_encoder2.pth", "image_encoder2.pth"):
        full = load_checkpoint(str(model_dir / name))
        part = load_checkpoint(str(tmp_path / "part" / "Model" / name))
        assert all(torch.equal(full[k], part[k]) for k in full), name


def test_learning_rate_schedule(data_dir, tmp_path):
    """AttnGAN: ×0.98 every epoch until ENCODER_LR/10, then constant; ENCODER_LR_DECAY_EPOCHS spaces the steps."""
    from datasets import build_dataset

    def trainer(**overrides):
        cfg = load_config(SHAPES_CFG, {"DATA_DIR": data_dir, "TEXT.EMBEDDING_DIM": 16, **overrides})
        return DAMSMTrainer(cfg, Runtime(device=torch.device("cpu")), str(tmp_path), build_dataset(cfg, "train"),
                            None)

    every_epoch = trainer()
    assert every_epoch.lr_for_epoch(0) == pytest.approx(0.002)
    assert every_epoch.lr_for_epoch(3) == pytest.approx(0.002 * 0.98 ** 3)
    floor = every_epoch.lr_for_epoch(1000)
    assert 0.0002 * 0.98 <= floor <= 0.0002  # stops once at or below a tenth
    spaced = trainer(**{"TRAIN.ENCODER_LR_DECAY_EPOCHS": 10})
    assert [spaced.lr_for_epoch(e) for e in (9, 10, 25)] == pytest.approx([0.002, 0.002 * 0.98, 0.002 * 0.98 ** 2])
    spaced.set_learning_rates(25)
    assert spaced.optimizer.param_groups[0]["lr"] == pytest.approx(0.002 * 0.98 ** 2)


def test_pretrain_resume_honours_learning_rate_and_refuses_embedding_size(data_dir, tmp_path, capsys):
    from trainers.base import ResumeRefusedError

    assert pretrain_DAMSM.main(_args(data_dir, tmp_path, 1)) == 0
    capsys.readouterr()
    assert pretrain_DAMSM.main(_args(data_dir, tmp_path, 2) + ["TRAIN.ENCODER_LR=0.001", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resume: TRAIN.ENCODER_LR 0.002 -> 0.001" in out and "resume: TRAIN.MAX_EPOCH 1 -> 2" in out
    log = (tmp_path / "Log" / "train.log").read_text()
    assert f"valid/lr={0.001 * 0.98:.4f}" in log.splitlines()[-2] + log.splitlines()[-1]
    with pytest.raises(ResumeRefusedError, match=r"TEXT\.EMBEDDING_DIM 16 -> 8"):
        pretrain_DAMSM.main(_args(data_dir, tmp_path, 3) + ["TEXT.EMBEDDING_DIM=8", "--resume"])


def test_validation_is_seeded_and_leaves_training_randomness(data_dir, tmp_path):
    """Shuffled validation batches, the same at every call, drawn without touching the global random streams."""
    from datasets import build_dataset

    cfg = load_config(SHAPES_CFG, {"DATA_DIR": data_dir, "TEXT.EMBEDDING_DIM": 16, "TRAIN.BATCH_SIZE": 4,
                                   "DAMSM.VALID_BATCHES": 2, "DAMSM.RPREC_SAMPLES": 16, "WORKERS": 0})
    trainer = DAMSMTrainer(cfg, Runtime(device=torch.device("cpu")), str(tmp_path), build_dataset(cfg, "train"),
                           build_dataset(cfg, "test"))
    torch.manual_seed(3)
    first = trainer.end_of_epoch(0)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert trainer.end_of_epoch(0) == first
    assert torch.equal(torch.rand(1), after)


def test_validation_interval_validates_every_n_epochs_and_the_last(data_dir, tmp_path):
    """DAMSM.VALID_INTERVAL 2 over 3 epochs: validation after epochs 2 and 3 only (0-based 1 and 2); 0: never."""
    from datasets import build_dataset

    cfg = load_config(SHAPES_CFG, {"DATA_DIR": data_dir, "TEXT.EMBEDDING_DIM": 16, "TRAIN.BATCH_SIZE": 4,
                                   "TRAIN.MAX_EPOCH": 3, "DAMSM.VALID_INTERVAL": 2, "DAMSM.VALID_BATCHES": 1,
                                   "DAMSM.RPREC_SAMPLES": 16, "WORKERS": 0})
    trainer = DAMSMTrainer(cfg, Runtime(device=torch.device("cpu")), str(tmp_path), build_dataset(cfg, "train"),
                           build_dataset(cfg, "test"))
    assert [bool(trainer.end_of_epoch(e)) for e in range(3)] == [False, True, True]
    assert "R_precision" in trainer.end_of_epoch(2)
    cfg.DAMSM.VALID_INTERVAL = 0
    assert [trainer.end_of_epoch(e) for e in range(3)] == [{}, {}, {}]


def test_swap_negatives_option_reaches_the_loss_and_names_unknown_words(data_dir, tmp_path):
    """DAMSM.SWAP_NEGATIVES: the trainer maps the groups to vocabulary ids and its step uses them (a hard negative
    can only raise w_loss0 / s_loss0); an unknown word is named before training starts."""
    from datasets import build_dataset, build_dataloader, prepare_data

    def trainer(groups):
        cfg = load_config(SHAPES_CFG, {"DATA_DIR": data_dir, "TEXT.EMBEDDING_DIM": 16,
                                       "DAMSM.SWAP_NEGATIVES": groups})
        return DAMSMTrainer(cfg, Runtime(device=torch.device("cpu")), str(tmp_path), build_dataset(cfg, "train"),
                            None)

    with pytest.raises(InputError, match="hexagon"):
        trainer(["circle hexagon"])
    t = trainer(["circle square triangle"])
    assert t.swap_groups == [[t.train_set.wordtoix[w] for w in ("circle", "square", "triangle")]]
    batch = prepare_data(next(iter(build_dataloader(t.train_set, batch_size=8, shuffle=False, drop_last=True,
                                                    workers=0))), "cpu")
    from models.damsm.losses import damsm_losses
    t.text_encoder.eval(), t.image_encoder.eval()  # no dropout: both calls see the same encoders
    _, plain, _ = damsm_losses(t.image_encoder, t.text_encoder, batch, t.gammas, t.rt)
    _, hard, _ = damsm_losses(t.image_encoder, t.text_encoder, batch, t.gammas, t.rt, t.swap_groups)
    assert hard["s_loss0"] > plain["s_loss0"] and torch.equal(hard["s_loss1"], plain["s_loss1"])


def test_rprecision_encodes_each_distinct_caption_once_with_the_same_codes(data_dir):
    """caption_codes (R-precision's text side): the codes of every caption one at a time, in the captions' order,
    from one encoder pass per distinct caption (repeats, however padded, share it)."""
    from models.damsm.trainer import caption_codes, sentence_codes

    cfg = load_config(SHAPES_CFG, {"DATA_DIR": data_dir, "TEXT.EMBEDDING_DIM": 16})
    torch.manual_seed(0)
    encoder = build_text_encoder(cfg, 47).eval()
    a, b = torch.tensor([3, 5, 7, 0, 0, 0]), torch.tensor([4, 2, 0, 0, 0, 0])
    a_padded_otherwise = torch.tensor([3, 5, 7, 0, 9, 9])  # the same caption: ids past its length do not count
    captions = [(a, 3), (b, 2), (a_padded_otherwise, 3), (b, 2), (a, 3)]
    seen = []
    encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].size(0)))
    with torch.no_grad():
        codes = caption_codes(encoder, captions, "cpu", batch_size=500)
        one_by_one = torch.cat([sentence_codes(encoder, c[None], torch.tensor([n]), "cpu") for c, n in captions])
    assert seen[0] == 2 and codes.shape == (5, 16)
    torch.testing.assert_close(codes, one_by_one)
    assert torch.equal(codes[0], codes[2]) and torch.equal(codes[0], codes[4]) and torch.equal(codes[1], codes[3])
