"""GAN-INT-CLS training: one step per variant, the WGAN critic loop and clipping, wrong images of other classes,
training from an hd5 file, exact resumption, port checkpoints, SRCNN sampling copies and the hd5 converter.

Most tests shrink the nets (ngf = ndf = 8) by patching the factory's classes, so that they run in seconds on a CPU;
`test_gan_cls_int_step_and_snapshots` uses the port-sized nets.
"""
import io
import json
import os
import pathlib

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import models.gan_int_cls as gic
from datasets import build_dataset
from miscc.checkpoint import load_checkpoint
from miscc.config import load_config
from miscc.errors import InputError, run_cli
from miscc.reed_hd5 import ReedHd5Dataset, write_reed_hd5
from models.damsm import build_text_encoder
from models.gan_int_cls.dataset import WrongImageDataset
from models.gan_int_cls.sampling import UpscalingGenerator, sample_hd5
from models.gan_int_cls.trainer import GANINTCLSTrainer
from models.registry import get_family
from models.srcnn import SRCNN
from tools import convert_hd5
from tools.make_shapes import generate_shapes
from trainers.base import STATE_FILE
from trainers.runtime import Runtime
from trainers.sampling import encode_sentences, sample_test_set

ROOT = pathlib.Path(__file__).resolve().parents[3]
CFG = str(ROOT / "cfg" / "shapes_gan_int_cls.yml")
CPU = Runtime(device=torch.device("cpu"))
EMB = 16


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """24 train / 8 test shapes images (64 px) and an untrained RNN text encoder saved as text_encoder1.pth."""
    root = tmp_path_factory.mktemp("intcls")
    generate_shapes(root / "data", n_train=24, n_test=8, image_size=64)
    cfg = load_config(CFG, {"DATA_DIR": str(root / "data"), "TEXT.EMBEDDING_DIM": EMB})
    train = build_dataset(cfg, "train")
    torch.manual_seed(0)
    torch.save(build_text_encoder(cfg, train.n_words).state_dict(), root / "text_encoder1.pth")
    return root


# the port's terms (the shipped shapes config trains with our paired term instead: test_the_shapes_config_...)
PORT = {"INTCLS.L1_COEF": 50.0, "INTCLS.L2_COEF": 100.0, "TRAIN.PIXEL_WEIGHT": 0.0, "TRAIN.PAIRED_CANDIDATES": 1,
        "TRAIN.EMA": False, "TRAIN.AMP": "none", "TRAIN.GENERATOR_LR": 0.0002}


def make_cfg(root, **overrides):
    values = {"DATA_DIR": str(root / "data"), "TRAIN.NET_E": str(root / "text_encoder1.pth"),
              "TEXT.EMBEDDING_DIM": EMB, "TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_EPOCH": 1, "TRAIN.LOG_INTERVAL": 1,
              "TRAIN.IMAGE_INTERVAL": 1000, "INTCLS.PROJECTED_DIM": 8, **PORT}
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(CFG, values)


@pytest.fixture
def small_nets(monkeypatch):
    """Narrow nets (width 8) for speed, whatever INTCLS.NGF / NDF say."""
    class SmallG(gic.generator):
        def __init__(self, *args, **kw):
            super().__init__(*args, **{**kw, "ngf": 8})

    class SmallD(gic.discriminator):
        def __init__(self, *args, **kw):
            super().__init__(*args, **{**kw, "ndf": 8})

    monkeypatch.setattr(gic, "generator", SmallG)
    monkeypatch.setattr(gic, "discriminator", SmallD)


def trainer_for(cfg, out, train_set="build"):
    if isinstance(train_set, str):
        train_set = build_dataset(cfg, "train")
    return GANINTCLSTrainer(cfg, CPU, str(out), train_set)


def record_losses(trainer):
    """Make `trainer.train_step` append its losses (as floats) and the G-iteration count to a list."""
    log = []
    step = trainer.train_step

    def recorded(batch):
        losses = step(batch)
        log.append(({k: float(v) for k, v in losses.items()}, trainer.gen_iteration))
        return losses

    trainer.train_step = recorded
    return log


def params(module):
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


# ---- one step per variant ------------------------------------------------------------------------------------------

def test_gan_cls_int_step_and_snapshots(shapes, tmp_path):
    """Port-sized nets: one D and one G step with every term, then the port's and main.py's snapshot files."""
    cfg = make_cfg(shapes, TRAIN__MAX_STEPS=1, INTCLS__PROJECTED_DIM=128, INTCLS__NGF=64, INTCLS__NDF=64)
    t = trainer_for(cfg, tmp_path)
    g0, d0 = params(t.netG), params(t.netD)
    log = record_losses(t)
    t.fit()
    (losses, gen_iter), = log
    assert set(losses) == {"errD", "D_real", "D_fake", "D_wrong", "errG", "G_adv", "G_int", "G_fm", "G_l1"}
    assert all(np.isfinite(v) for v in losses.values()) and gen_iter == 1
    assert losses["G_int"] > 0 and losses["G_l1"] > 0 and 0 < losses["D_wrong"] < 1
    assert not torch.equal(g0, params(t.netG)) and not torch.equal(d0, params(t.netD))
    model = tmp_path / "Model"
    assert sorted(os.listdir(model)) == ["disc_1.pth", "gen_1.pth", "netG_epoch_1.pth", STATE_FILE]
    assert (tmp_path / "Image" / "G_epoch_1.png").is_file()
    gen = load_checkpoint(str(model / "gen_1.pth"))
    assert "netG.0.weight" in gen and not any(k.startswith("module.") for k in gen)
    assert gen["netG.0.weight"].shape == (100 + 128, 512, 4, 4)  # [text 128, noise 100] -> 512, the port's layer
    same = load_checkpoint(str(model / "netG_epoch_1.pth"))  # no EMA: the sampling G is the live G
    assert all(torch.equal(gen[k], same[k]) for k in gen)
    spec = get_family("gan_int_cls")
    net = spec.load_generator(spec.build_generator(cfg), str(model / "netG_epoch_1.pth"))
    assert torch.equal(params(net), params(t.netG))
    disc = load_checkpoint(str(model / "disc_1.pth"))
    assert disc["netD_2.0.weight"].shape == (1, 512 + 128, 4, 4)


@pytest.mark.parametrize("kind, overrides, expected", [
    ("gan", {"INTCLS__CLS": False, "INTCLS__INT": False}, {"errD", "D_real", "D_fake", "errG", "G_adv", "G_fm",
                                                           "G_l1"}),
    ("wgan-gp", {"INTCLS__DITER": 1, "INTCLS__L1_COEF": 0.0, "INTCLS__L2_COEF": 0.0},
     {"errD", "D_real", "D_fake", "D_wrong", "GP", "errG", "G_adv", "G_int"}),
    ("vanilla_gan", {"TRAIN__NET_E": "/nonexistent/text_encoder1.pth"},
     {"errD", "D_real", "D_fake", "errG", "G_adv", "G_fm", "G_l1"}),
])
def test_one_step_per_variant(shapes, tmp_path, small_nets, kind, overrides, expected):
    cfg = make_cfg(shapes, INTCLS__TYPE=kind, **overrides)
    t = trainer_for(cfg, tmp_path)
    loader = t.epoch_loader(0)
    losses = {k: float(v) for k, v in t.train_step(t.make_batch(next(iter(loader)))).items()}
    assert set(losses) == expected
    assert all(np.isfinite(v) for v in losses.values())
    assert t.gen_iteration == 1
    if kind == "wgan-gp":
        assert losses["GP"] > 0
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in t.netD.modules())  # per-sample penalty
    if kind == "vanilla_gan":  # unconditional: no text encoder is loaded, the nets take no text
        assert t.text_encoder is None and t.netG.projection is None and t.netD.projector is None


def test_imle_trains_each_captions_nearest_draw_with_the_pixel_term(shapes, tmp_path, small_nets):
    """TRAIN.PAIRED_CANDIDATES 3 with TRAIN.PIXEL_WEIGHT (ours, for `shapes`): per caption the noise whose image lies
    nearest its real image, and G's loss gains the weighted squared pixel distance (logged as G_pixel)."""
    cfg = make_cfg(shapes, TRAIN__PIXEL_WEIGHT=10.0, TRAIN__PAIRED_CANDIDATES=3, INTCLS__L1_COEF=0.0)
    t = trainer_for(cfg, tmp_path)
    b = t.make_batch(next(iter(t.epoch_loader(0))))
    torch.manual_seed(5)
    chosen = t.nearest_noise(b)
    torch.manual_seed(5)
    noise = torch.randn(3 * len(b), t.z_dim)
    with torch.no_grad():
        imgs = t.netG(b.embed.repeat(3, 1), noise)
    dist = (imgs - b.images.repeat(3, 1, 1, 1)).pow(2).flatten(1).mean(1).view(3, len(b))
    best = dist.argmin(0)
    assert torch.equal(chosen, noise.view(3, len(b), -1)[best, torch.arange(len(b))])
    assert best.ne(0).any()  # not simply the first draw
    losses = {k: float(v) for k, v in t.train_step(b).items()}
    assert "G_pixel" in losses and "G_l1" not in losses and np.isfinite(losses["G_pixel"]) and losses["G_pixel"] > 0


def test_the_shapes_config_trains_the_paired_term_and_the_others_keep_the_ports():
    shapes = load_config(CFG)
    assert (shapes.TRAIN.PIXEL_WEIGHT, shapes.TRAIN.PAIRED_CANDIDATES, shapes.INTCLS.L1_COEF,
            shapes.INTCLS.L2_COEF, shapes.TRAIN.EMA, shapes.TRAIN.MAX_EPOCH) == (50.0, 4, 0.0, 0.0, True, 12)
    for name in ("birds_gan_int_cls", "flowers_gan_int_cls", "shapes_bert_gan_int_cls"):
        c = load_config(str(ROOT / "cfg" / f"{name}.yml"))
        assert (c.TRAIN.PIXEL_WEIGHT, c.TRAIN.PAIRED_CANDIDATES, c.INTCLS.L1_COEF, c.INTCLS.L2_COEF) == \
            (0.0, 1, 50.0, 100.0), name


@pytest.mark.parametrize("overrides, message", [
    ({"TRAIN__PAIRED_CANDIDATES": 4, "INTCLS__L1_COEF": 0.0}, "TRAIN.PAIRED_CANDIDATES 4 .* needs a paired term"),
    ({"TRAIN__PAIRED_CANDIDATES": 0}, "TRAIN.PAIRED_CANDIDATES is 0: expected an integer >= 1"),
    ({"TRAIN__PIXEL_WEIGHT": -1.0}, "TRAIN.PIXEL_WEIGHT is -1.0: expected a number >= 0"),
])
def test_paired_settings_are_checked(shapes, tmp_path, small_nets, overrides, message):
    with pytest.raises(InputError, match=message):
        trainer_for(make_cfg(shapes, **overrides), tmp_path)


def test_wgan_critic_loop_and_clipping(shapes, tmp_path, small_nets):
    """6 batches = 6 critic iterations; G's first step is due after 100 (warm-up), so it comes at the epoch's last
    batch (the port's loop ends with the epoch); D's weights stay clipped."""
    cfg = make_cfg(shapes, INTCLS__TYPE="wgan", INTCLS__CLIP_VALUE=0.01)
    t = trainer_for(cfg, tmp_path)
    assert max(float(p.detach().abs().max()) for p in t.netD.parameters()) <= 0.01  # clipped before the first D step
    g0 = params(t.netG)
    log = record_losses(t)
    t.fit()
    assert [g for _, g in log] == [0, 0, 0, 0, 0, 1]
    assert "errG" not in log[0][0] and "errG" in log[-1][0]
    assert all(np.isfinite(v) for losses, _ in log for v in losses.values())
    assert max(float(p.detach().abs().max()) for p in t.netD.parameters()) <= 0.01
    assert not torch.equal(g0, params(t.netG))
    assert load_checkpoint(str(tmp_path / "Model" / STATE_FILE))["extra"] == {"gen_iteration": 1, "critic_done": 0}


def test_wgan_diter_after_warmup(shapes, tmp_path, small_nets):
    cfg = make_cfg(shapes, INTCLS__TYPE="vanilla_wgan", INTCLS__DITER=2, INTCLS__L1_COEF=0.0,
                   INTCLS__L2_COEF=0.0, TRAIN__NET_E="")
    t = trainer_for(cfg, tmp_path)
    t.gen_iteration = 30  # past the warm-up: DITER critic steps per G step
    log = record_losses(t)
    t.fit()
    assert [g for _, g in log] == [30, 31, 31, 32, 32, 33]


# ---- wrong images ---------------------------------------------------------------------------------------------------

def test_wrong_images_come_from_other_classes(shapes, tmp_path, small_nets):
    cfg = make_cfg(shapes)
    base = build_dataset(cfg, "train", augment=False)
    assert len(np.unique(base.class_ids)) > 1
    wrapped = WrongImageDataset(base)
    torch.manual_seed(3)
    items = [wrapped[i] for i in range(len(wrapped))]
    for item in items:
        assert base.class_ids[item["wrong_index"]] != item["class_id"]
        assert torch.equal(item["wrong_img"], base.get_imgs(item["wrong_index"])[-1])
    # after make_batch sorts by caption length, row k's wrong image still belongs to row k's item
    t = trainer_for(cfg, tmp_path, base)
    raw = torch.utils.data.default_collate(items[:4])
    b = t.make_batch(raw)
    for k in range(4):
        src = next(i for i in range(4) if torch.equal(b.images[k], items[i]["imgs"][-1]))
        assert torch.equal(b.wrong_images[k], items[src]["wrong_img"])
    assert b.embed.shape == (4, EMB)


def test_image_size_must_be_64(shapes, tmp_path):
    cfg = make_cfg(shapes, TREE__BRANCH_NUM=2)
    with pytest.raises(ValueError, match=r"TREE.BRANCH_NUM=2.*TREE.BRANCH_NUM: 1 and TREE.BASE_SIZE: 64"):
        trainer_for(cfg, tmp_path)


# ---- hd5 ------------------------------------------------------------------------------------------------------------

def _png_bytes(rng, size):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tiny_hd5(tmp_path):
    rng = np.random.default_rng(0)

    def examples(n, prefix):
        return [(f"{prefix}_{i:03d}", _png_bytes(rng, 80), rng.standard_normal(24).astype(np.float32),
                 f"class_{i % 3:05d}", f"caption {i} of {prefix}") for i in range(n)]

    path = tmp_path / "tiny.hdf5"
    write_reed_hd5(str(path), {"train": examples(12, "tr"), "test": examples(6, "te")})
    return path


def test_train_from_hd5_and_sample(shapes, tmp_path, tiny_hd5, small_nets):
    cfg = make_cfg(shapes, INTCLS__TEXT_SOURCE="hd5", INTCLS__HD5_PATH=str(tiny_hd5), INTCLS__EMBED_DIM=24,
                   TRAIN__NET_E="", DATA_DIR="", TRAIN__MAX_STEPS=1)
    t = trainer_for(cfg, tmp_path / "run", None)
    assert isinstance(t.train_set, ReedHd5Dataset) and t.text_encoder is None
    log = record_losses(t)
    t.fit()
    (losses, _), = log
    assert {"D_wrong", "G_int"} <= set(losses) and all(np.isfinite(v) for v in losses.values())

    spec = get_family("gan_int_cls")
    net = spec.load_generator(spec.build_generator(cfg), str(tmp_path / "run" / "Model" / "gen_1.pth")).eval()
    out = tmp_path / "samples"
    result = sample_hd5(net, ReedHd5Dataset(str(tiny_hd5), "test"), str(out), z_dim=100, device="cpu", batch_size=4)
    assert result["n"] == 6
    records = json.loads((out / "captions.json").read_text())
    assert [r["file"] for r in records] == [f"te_{i:03d}_0.png" for i in range(6)]
    assert records[1]["caption"] == "caption 1 of te" and records[1]["class"] == "class_00001"
    assert Image.open(out / "single" / "te_000_0.png").size == (64, 64)
    # our text encoder's sentences do not fit a generator of 24-d hd5 embeddings
    with pytest.raises(ValueError, match="new sentences cannot be encoded"):
        spec.generate(net, torch.randn(2, 100), torch.randn(2, EMB), None, None)


def test_hd5_embedding_size_mismatch(shapes, tmp_path, tiny_hd5, small_nets):
    cfg = make_cfg(shapes, INTCLS__TEXT_SOURCE="hd5", INTCLS__HD5_PATH=str(tiny_hd5), INTCLS__EMBED_DIM=1024)
    with pytest.raises(ValueError, match=r"tiny.hdf5 gives 24-d text embeddings but the model expects 1024"):
        trainer_for(cfg, tmp_path, None)
    cfg = make_cfg(shapes, INTCLS__TEXT_SOURCE="hd5", INTCLS__HD5_PATH=str(tmp_path / "missing.hdf5"))
    with pytest.raises(FileNotFoundError, match="INTCLS.HD5_PATH not found: .*missing.hdf5"):
        trainer_for(cfg, tmp_path, None)


# ---- resumption and port checkpoints ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["encoder", "hd5"])
def test_resume_continues_exactly(shapes, tmp_path, small_nets, source, tiny_hd5):
    """Also from an hd5 file, whose wrong/interpolation partners are drawn from torch's restored generator."""
    over = dict(TRAIN__BATCH_SIZE=12 if source == "encoder" else 6, TRAIN__SNAPSHOT_INTERVAL=1)  # 2 batches/epoch
    if source == "hd5":
        over.update(INTCLS__TEXT_SOURCE="hd5", INTCLS__HD5_PATH=str(tiny_hd5), INTCLS__EMBED_DIM=24, TRAIN__NET_E="",
                    DATA_DIR="")
    data = "build" if source == "encoder" else None
    full = trainer_for(make_cfg(shapes, TRAIN__MAX_EPOCH=2, **over), tmp_path / "full", data)
    torch.manual_seed(123)
    full.fit()
    part = trainer_for(make_cfg(shapes, TRAIN__MAX_EPOCH=1, **over), tmp_path / "part", data)
    torch.manual_seed(123)
    part.fit()
    torch.manual_seed(999)
    resumed = trainer_for(make_cfg(shapes, TRAIN__MAX_EPOCH=2, **over), tmp_path / "part", data)
    resumed.resume()
    assert (resumed.epoch, resumed.step, resumed.gen_iteration) == (1, 2, 2)
    resumed.fit()
    assert resumed.gen_iteration == full.gen_iteration == 4
    assert torch.equal(params(full.netG), params(resumed.netG))
    assert torch.equal(params(full.netD), params(resumed.netD))


class Killed(Exception):
    pass


def test_mid_epoch_resume_keeps_the_critic_count(shapes, tmp_path, small_nets, capsys):
    """A rolling state after every step; the run dies before step 10 (epoch 1, batch 3, one critic iteration into
    a DITER=2 cycle): the resumed run ends bit-identical to an uninterrupted one. A new GENERATOR_LR is honoured."""
    over = dict(INTCLS__TYPE="vanilla_wgan", INTCLS__DITER=2, INTCLS__L1_COEF=0.0, INTCLS__L2_COEF=0.0,
                TRAIN__NET_E="", TRAIN__MAX_EPOCH=2, TRAIN__SNAPSHOT_INTERVAL=5, TRAIN__CHECKPOINT_STEPS=1)

    def run(out, crash_at=None):
        t = trainer_for(make_cfg(shapes, **over), out)
        t.gen_iteration = 30  # past the warm-up: DITER critic steps per G step
        step = t.train_step

        def train_step(batch):
            if t.step == crash_at:
                raise Killed
            return step(batch)

        t.train_step = train_step
        torch.manual_seed(123)
        t.fit()
        return t

    full = run(tmp_path / "full")
    with pytest.raises(Killed):
        run(tmp_path / "part", crash_at=9)
    state = load_checkpoint(str(tmp_path / "part" / "Model" / STATE_FILE))
    assert (state["epoch"], state["epoch_batch"], state["extra"]) == (1, 3, {"gen_iteration": 34, "critic_done": 1})
    torch.manual_seed(999)
    resumed = trainer_for(make_cfg(shapes, **over), tmp_path / "part")
    resumed.resume()
    resumed.fit()
    assert resumed.gen_iteration == full.gen_iteration == 36
    assert torch.equal(params(full.netG), params(resumed.netG))
    assert torch.equal(params(full.netD), params(resumed.netD))

    capsys.readouterr()
    faster = trainer_for(make_cfg(shapes, **{**over, "TRAIN__GENERATOR_LR": 1e-3}), tmp_path / "part")
    faster.resume()
    assert faster.optG.param_groups[0]["lr"] == 1e-3 and faster.optD.param_groups[0]["lr"] == 2e-4
    assert "resume: TRAIN.GENERATOR_LR 0.0002 -> 0.001" in capsys.readouterr().out


def test_loads_port_checkpoints(shapes, tmp_path, small_nets):
    """TRAIN.NET_G = a port `gen_<e>.pth` (DataParallel `module.` keys) and its `disc_<e>.pth` beside it."""
    cfg = make_cfg(shapes)
    g, d = gic.build_gan_int_cls(cfg)
    for net, name in ((g, "gen_7.pth"), (d, "disc_7.pth")):
        torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / name)
    t = trainer_for(make_cfg(shapes, TRAIN__NET_G=str(tmp_path / "gen_7.pth")), tmp_path / "run")
    assert t.epoch == 8
    assert torch.equal(params(t.netG), params(g)) and torch.equal(params(t.netD), params(d))
    os.remove(tmp_path / "disc_7.pth")
    with pytest.raises(FileNotFoundError, match="disc_7.pth"):
        trainer_for(make_cfg(shapes, TRAIN__NET_G=str(tmp_path / "gen_7.pth")), tmp_path / "run")


# ---- sampling with SRCNN ------------------------------------------------------------------------------------------

def test_srcnn_copies_when_sampling(shapes, tmp_path, small_nets):
    torch.manual_seed(0)
    torch.save(SRCNN().state_dict(), tmp_path / "srcnn_x3.pth")
    cfg = make_cfg(shapes, INTCLS__SRCNN_WEIGHTS=str(tmp_path / "srcnn_x3.pth"), INTCLS__SRCNN_SCALE=3)
    spec = get_family("gan_int_cls")
    net = spec.build_generator(cfg).eval()
    assert isinstance(net, UpscalingGenerator)
    test_set = build_dataset(cfg, "test")
    encoder = build_text_encoder(cfg, test_set.n_words)
    encoder.load_state_dict(torch.load(shapes / "text_encoder1.pth", weights_only=True))
    encoder.eval()
    result = sample_test_set(lambda *a: spec.generate(net, *a), encoder, test_set, str(tmp_path / "valid"),
                             z_dim=100, device="cpu", n_samples=3, batch_size=4, save_extras=spec.save_extras)
    records = json.loads(pathlib.Path(result["captions"]).read_text())
    assert len(records) == 3
    for r in records:
        stem = os.path.join(result["folder"], r["file"][:-4])
        assert Image.open(stem + ".png").size == (64, 64)
        assert Image.open(stem + "_x3.png").size == (192, 192)
    ids, lens, _ = encode_sentences(["a red circle"], test_set)
    stages, att = spec.generate_stages(net, torch.randn(1, 100), encoder(ids, lens)[1], None, None)
    assert [s.shape[-1] for s in stages] == [64, 192] and att == []

    cfg = make_cfg(shapes, INTCLS__SRCNN_WEIGHTS=str(tmp_path / "none_x3.pth"))
    with pytest.raises(FileNotFoundError, match="INTCLS.SRCNN_WEIGHTS not found: .*none_x3.pth"):
        spec.build_generator(cfg)


# ---- converter ----------------------------------------------------------------------------------------------------

def test_convert_hd5_round_trip(shapes, tmp_path, capsys):
    out = tmp_path / "shapes.hdf5"
    args = ["--cfg", CFG, "--gpu", "-1", "--out", str(out), "--captions_per_image", "3", "--valid_fraction", "0.2",
            "--set", f"DATA_DIR={shapes / 'data'}", f"TRAIN.NET_E={shapes / 'text_encoder1.pth'}",
            f"TEXT.EMBEDDING_DIM={EMB}"]
    assert convert_hd5.main(args) == 0
    assert f"{EMB}-d embeddings" in capsys.readouterr().out
    cfg = make_cfg(shapes)
    train, test = build_dataset(cfg, "train", augment=False), build_dataset(cfg, "test", augment=False)
    tr, va, te = (ReedHd5Dataset(str(out), s) for s in ("train", "valid", "test"))
    assert len(tr) + len(va) == 3 * train.n_images and len(te) == 3 * test.n_images
    assert not set(tr.classes) & set(va.classes)  # valid holds whole classes
    encoder = build_text_encoder(cfg, train.n_words)
    encoder.load_state_dict(torch.load(shapes / "text_encoder1.pth", weights_only=True))
    encoder.eval()
    with h5py.File(out, "r") as f:
        for split, ds in (("train", train), ("test", test)):
            key = sorted(f[split].keys())[1]
            ex = f[split][key]
            name = ex["name"][()].decode()
            index = ds.filenames.index(name)
            assert key == f"{name}_1"
            assert ex["img"][()].tobytes() == pathlib.Path(ds.image_paths[index]).read_bytes()
            assert ex["class"][()].decode() == f"class_{ds.class_ids[index]:05d}"
            txt = ex["txt"][()].decode()
            assert txt.endswith("\n")
            captions = [ds.caption_text(index * ds.captions_per_image + j) for j in range(ds.captions_per_image)]
            assert txt.rstrip("\n") in captions
            ids, lens, _ = encode_sentences([txt.rstrip("\n")], ds)
            with torch.no_grad():
                expected = encoder(ids, lens)[1][0].numpy()
            np.testing.assert_allclose(ex["embeddings"][()], expected, rtol=1e-5, atol=1e-6)
    assert run_cli(convert_hd5.main, args[:-1] + ["TEXT.EMBEDDING_DIM=32"]) == 2  # the encoder file has 16-d vectors
    assert "text_encoder1.pth" in capsys.readouterr().err
