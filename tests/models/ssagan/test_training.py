"""SSA-GAN training (models/ssagan/trainer.py): one step per variant, D-step semantics, exact resumption, release files,
continuing from TRAIN.NET_G, registry sampling with masks, mask pictures, DDP rank consistency, the shipped configs."""
import copy
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from datasets import build_dataset
from miscc.checkpoint import load_checkpoint
from miscc.config import load_config
from models.damsm import build_image_encoder, build_text_encoder
from models.registry import get_family
from models.ssagan import hinge_d_loss, magp_loss
from models.ssagan.sampling import mask_figure, save_last_mask, write_example_masks
from models.ssagan.trainer import SSAGANTrainer
from tools.make_shapes import generate_shapes
from trainers.base import STATE_FILE
from trainers.common import DrawMemory, encode_captions, load_damsm
from trainers.optim import gan_step
from trainers.runtime import Runtime, setup_runtime, shutdown_runtime, unwrap
from trainers.sampling import generate_sentences, sample_test_set

CPU = Runtime(device=torch.device("cpu"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 24/8-image shapes set at 32 px and untrained DAMSM encoders saved as text_encoder1.pth/image_encoder1.pth."""
    root = tmp_path_factory.mktemp("ssa")
    data = root / "shapes"
    generate_shapes(data, n_train=24, n_test=8, image_size=32)
    base = _overrides(data)
    cfg = load_config(None, base)
    train_set = build_dataset(cfg, "train")
    torch.manual_seed(0)
    torch.save(build_text_encoder(cfg, train_set.n_words).state_dict(), root / "text_encoder1.pth")
    torch.save(build_image_encoder(cfg).state_dict(), root / "image_encoder1.pth")
    base["TRAIN.NET_E"] = str(root / "text_encoder1.pth")
    return {"root": root, "overrides": base, "train_set": train_set}


def _overrides(data_dir):
    return {
        "MODEL": "ssagan", "DATA_DIR": str(data_dir), "DATASET_NAME": "shapes", "WORKERS": 0, "SEED": 3,
        "TREE.BRANCH_NUM": 1, "TREE.BASE_SIZE": 32, "TRAIN.NF": 4, "TRAIN.BATCH_SIZE": 6, "TRAIN.MAX_EPOCH": 1,
        "TRAIN.SNAPSHOT_INTERVAL": 1, "TRAIN.EMA": False, "TRAIN.LOG_INTERVAL": 1, "TRAIN.IMAGE_INTERVAL": 1000,
        "TEXT.EMBEDDING_DIM": 16, "TEXT.WORDS_NUM": 20, "DAMSM.IMAGE_ENCODER": "small", "DAMSM.IMAGE_SIZE": 32,
    }


def _cfg(tiny, **extra):
    return load_config(None, {**tiny["overrides"], **{k.replace("__", "."): v for k, v in extra.items()}})


def _flat(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _first_batch(trainer):
    return trainer.make_batch(next(iter(trainer.epoch_loader(0))))


@pytest.mark.parametrize("variant", ["separate", "joint", "finetune", "ema"])
def test_one_step_per_variant(tiny, tmp_path, variant):
    cfg = _cfg(tiny, SSA__MAGP_MODE="joint" if variant == "joint" else "separate",
               TRAIN__FINETUNE_TEXT_ENCODER=variant == "finetune", TRAIN__EMA=variant == "ema")
    t = SSAGANTrainer(cfg, CPU, str(tmp_path), tiny["train_set"])
    before = {k: _flat(m).clone() for k, m in
              {"G": t.netG, "D": t.netD, "text": t.text_encoder, "image": t.image_encoder}.items()}
    g_init = before["G"]
    losses = t.train_step(_first_batch(t))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert {"errD", "errD_real", "errD_mismatch", "errD_fake", "MAGP", "errG", "errG_adv", "DAMSM_G"} <= set(losses)
    assert ("DAMSM_E" in losses) == (variant == "finetune")
    assert not torch.equal(_flat(t.netG), before["G"]) and not torch.equal(_flat(t.netD), before["D"])
    # The encoders move only when fine-tuned (their DAMSM step on real images).
    assert torch.equal(_flat(t.text_encoder), before["text"]) == (variant != "finetune")
    assert torch.equal(_flat(t.image_encoder), before["image"]) == (variant != "finetune")
    # 'separate' takes two D steps (hinge, then MA-GP), 'joint' one.
    d_steps = {int(s["step"]) for s in t.optD.state.values()}
    assert d_steps == ({1} if variant == "joint" else {2})
    if variant == "ema":
        decay = min(0.999, 1 / 10)  # the EMA warm-up at step 0 (trainers.base.EMA)
        assert torch.allclose(_flat(t.ema.shadow), decay * g_init + (1 - decay) * _flat(t.netG), atol=1e-7)
    assert {p.requires_grad for p in t.netD.parameters()} == {True}  # D unfrozen again after G's step


def test_channels_last_is_the_same_generator_in_another_layout(tiny, tmp_path):
    """TRAIN.CHANNELS_LAST keeps G's weights (and so its activations) channels_last: the same initial weights and
    images (float rounding), a step with the word grid, IMLE candidates and the anchor trains it, the snapshot
    loads into a plain G and samples as the trained one does."""
    extra = dict(GAN__WORD_GRID=4, GAN__WORD_CONTEXT_LAYERS=1, TRAIN__PAIRED_CANDIDATES=3, TRAIN__PAIRED_ANCHOR=0.3,
                 TRAIN__PIXEL_WEIGHT=1.0)
    plain = SSAGANTrainer(_cfg(tiny, **extra), CPU, str(tmp_path / "plain"), tiny["train_set"])
    t = SSAGANTrainer(_cfg(tiny, TRAIN__CHANNELS_LAST=True, **extra), CPU, str(tmp_path / "cl"), tiny["train_set"])
    convs = [m.weight for m in unwrap(t.netG).modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not any(w.is_contiguous() for w in convs if w.size(-1) > 1)  # (1x1 kernels are both)
    assert torch.equal(_flat(t.netG), _flat(plain.netG))
    batch = _first_batch(t)
    words, sent, mask = encode_captions(t.text_encoder, batch)
    noise = torch.randn(len(sent), 100)
    with torch.no_grad():
        assert torch.allclose(t.netG(noise, sent, words, mask)[0], plain.netG(noise, sent, words, mask)[0],
                              atol=1e-5)
    before = _flat(t.netG).clone()
    losses = t.train_step(batch)
    assert all(torch.isfinite(v) for v in losses.values()) and not torch.equal(_flat(t.netG), before)
    t.save_snapshot(1)
    fresh = SSAGANTrainer(_cfg(tiny, **extra), CPU, str(tmp_path / "fresh"), tiny["train_set"])
    path = os.path.join(t.model_dir, "netG_001.pth")
    unwrap(fresh.netG).load_state_dict(load_checkpoint(path))
    with torch.no_grad():
        ours = unwrap(t.netG).eval()(noise, sent, words, mask)[0]
        assert torch.allclose(unwrap(fresh.netG).eval()(noise, sent, words, mask)[0], ours, atol=1e-5)


def test_word_grid_trains_and_samples_from_the_words(tiny, tmp_path):
    """GAN.WORD_GRID: G's word map learns in a step (its gradient reaches the Transformer layer), and the family's
    generate / generate_masks pass the words and their padding, so sampling reads them too."""
    cfg = _cfg(tiny, GAN__WORD_GRID=4, GAN__WORD_CONTEXT_LAYERS=1)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path), tiny["train_set"])
    grid = unwrap(t.netG).word_grid
    before = _flat(grid).clone()
    t.train_step(_first_batch(t))
    assert not torch.equal(_flat(grid), before)
    spec, net = get_family("ssagan"), unwrap(t.netG).eval()
    batch = _first_batch(t)
    words, sent, mask = encode_captions(t.text_encoder, batch)
    noise = torch.randn(len(sent), 100)
    with torch.no_grad():
        image, masks = spec.generate(net, noise, sent, words, mask)
        other = spec.generate(net, noise, sent, words.roll(1, dims=0), mask.roll(1, dims=0))[0]
        assert torch.equal(spec.generate_masks(net, noise, sent, words, mask)[1][0], masks[0])
    assert image.shape == (len(sent), 3, 32, 32) and not torch.allclose(image, other)


def test_d_word_layers_train_from_the_hinge_loss(tiny, tmp_path):
    """GAN.D_WORD_CONTEXT_LAYERS: D's word map learns in D's step; G's step leaves it alone (D frozen there)."""
    t = SSAGANTrainer(_cfg(tiny, GAN__D_WORD_CONTEXT_LAYERS=1, SSA__MAGP_MODE="joint"), CPU, str(tmp_path),
                      tiny["train_set"])
    before = _flat(t.netD.word_grid).clone()
    batch = _first_batch(t)
    words, sent, mask = encode_captions(t.text_encoder, batch)
    fake = t.netG(torch.randn(len(sent), 100), sent)[0]
    t.discriminator_step(batch.imgs[-1], fake, sent, words, mask)
    after_d = _flat(t.netD.word_grid).clone()
    assert not torch.equal(after_d, before)
    t.generator_step(fake, words, sent, batch, batch.imgs[-1], True, None, mask)
    assert torch.equal(_flat(t.netD.word_grid), after_d)


def test_perceptual_weight_adds_the_perceptual_term(tiny, tmp_path):
    out = {}
    for weight in (0.0, 2.0):
        torch.manual_seed(0)
        t = SSAGANTrainer(_cfg(tiny, TRAIN__PERCEPTUAL_WEIGHT=weight), CPU, str(tmp_path / str(weight)),
                          tiny["train_set"])
        out[weight] = t.train_step(_first_batch(t))
    assert "perceptual" not in out[0.0] and out[2.0]["perceptual"] > 0
    g = out[2.0]
    assert g["errG"].item() == pytest.approx((g["errG_adv"] + g["DAMSM_G"] + 2.0 * g["perceptual"]).item(), rel=1e-5)
    assert g["errG_adv"].item() == pytest.approx(out[0.0]["errG_adv"].item(), rel=1e-5)


def test_perceptual_extra_adds_the_term_in_a_second_encoders_features_for_its_epochs(tiny, tmp_path):
    """TRAIN.PERCEPTUAL_EXTRA (as the AttnGAN trainer): the perceptual term again in a second image encoder's
    features, at PERCEPTUAL_WEIGHT; the DAMSM's own encoder given, it equals `perceptual`; after
    TRAIN.PERCEPTUAL_EXTRA_EPOCHS epochs it is gone, and so are its cached real features."""
    cfg = _cfg(tiny, TRAIN__PERCEPTUAL_WEIGHT=2.0, TRAIN__PERCEPTUAL_EXTRA=str(tiny["root"] / "image_encoder1.pth"),
               TRAIN__PERCEPTUAL_EXTRA_EPOCHS=1, TRAIN__REAL_FEATURE_CACHE_MB=16)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path), tiny["train_set"])
    g = t.train_step(_first_batch(t))
    assert g["perceptual_extra"].item() == pytest.approx(g["perceptual"].item(), rel=1e-5)
    assert g["errG"].item() == pytest.approx(
        (g["errG_adv"] + g["DAMSM_G"] + 2.0 * (g["perceptual"] + g["perceptual_extra"])).item(), rel=1e-5)
    assert len(t.real_cache) == 2 * cfg.TRAIN.BATCH_SIZE  # the batch's images in both encoders
    t.epoch = 1
    later = t.train_step(t.make_batch(next(iter(t.epoch_loader(1)))))
    assert "perceptual_extra" not in later and "perceptual" in later
    assert set(t.real_cache._store) == {id(t.image_encoder)}  # the second encoder's features dropped


def test_swap_lambda_adds_the_hard_negative_term(tiny, tmp_path):
    """TRAIN.SMOOTH.SWAP_LAMBDA: G's DAMSM word and sentence terms grow by the hard-negative term (softplus, log 2
    where the untrained encoders cannot tell a caption from its negative)."""
    out = {}
    for lam in (0.0, 5.0):
        torch.manual_seed(0)
        t = SSAGANTrainer(_cfg(tiny, TRAIN__SMOOTH__SWAP_LAMBDA=lam, DAMSM__SWAP_NEGATIVES=["circle square triangle"]),
                          CPU, str(tmp_path / str(lam)), tiny["train_set"])
        out[lam] = t.train_step(_first_batch(t))
    for key in ("w_loss", "s_loss"):
        assert out[5.0][key] > out[0.0][key] + 1.0, (key, out)


def test_adv_start_epoch_and_pixel_weight_train_g_alone_on_the_paired_terms(tiny, tmp_path):
    """Before TRAIN.ADV_START_EPOCH: no D step, errG = DAMSM + w·pixel (the pixel term is the mean squared distance
    to the caption's real image); from it on, D steps again and the adversarial term is back."""
    t = SSAGANTrainer(_cfg(tiny, TRAIN__PIXEL_WEIGHT=3.0, TRAIN__ADV_START_EPOCH=1), CPU, str(tmp_path),
                      tiny["train_set"])
    batch = _first_batch(t)
    d_before = [p.detach().clone() for p in t.netD.parameters()]
    g_before = [p.detach().clone() for p in t.netG.parameters()]
    seen = []
    t.netG.register_forward_hook(lambda m, args, out: seen.append(out[0].detach()))
    g = t.train_step(batch)
    assert "errD" not in g and g["errG_adv"].item() == 0
    assert all(torch.equal(a, b) for a, b in zip(d_before, t.netD.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(g_before, t.netG.parameters()))
    expected = torch.nn.functional.mse_loss(seen[-1].float(), batch.imgs[-1].float())
    assert g["pixel"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert g["errG"].item() == pytest.approx((g["DAMSM_G"] + 3.0 * g["pixel"]).item(), rel=1e-5)
    t.epoch = 1
    g = t.train_step(batch)
    assert "errD" in g and g["errG_adv"].item() != 0
    assert not all(torch.equal(a, b) for a, b in zip(d_before, t.netD.parameters()))


def test_adv_interval_steps_d_every_nth_step_with_g_term_at_n_times_and_magp_counting_d_steps(tiny, tmp_path):
    """TRAIN.ADV_INTERVAL 2 with SSA.MAGP_INTERVAL 2: D steps on steps 0, 2, 4 only and the penalty comes on D steps
    0 and 2 (steps 0 and 4); errG has the adversarial term at 2·COEFF.ADV on those steps and none between."""
    t = SSAGANTrainer(_cfg(tiny, TRAIN__PIXEL_WEIGHT=1.0, TRAIN__ADV_INTERVAL=2, SSA__MAGP_INTERVAL=2), CPU,
                      str(tmp_path), tiny["train_set"])
    batch = _first_batch(t)
    penalised = []
    for step in range(5):
        t.step = step
        d_before = [p.detach().clone() for p in t.netD.parameters()]
        g = t.train_step(batch)
        d_moved = not all(torch.equal(a, b) for a, b in zip(d_before, t.netD.parameters()))
        paired = g["DAMSM_G"] + g["pixel"] + t.cfg.TRAIN.PERCEPTUAL_WEIGHT * g.get("perceptual", 0.0)
        if step % 2:
            assert "errD" not in g and g["errG_adv"].item() == 0 and not d_moved
            assert g["errG"].item() == pytest.approx(float(paired), rel=1e-5)
        else:
            assert "errD" in g and d_moved
            penalised.append("MAGP" in g)
            expected = paired + 2 * t.cfg.TRAIN.COEFF.ADV * g["errG_adv"]
            assert g["errG"].item() == pytest.approx(float(expected), rel=1e-5)
    assert penalised == [True, False, True]
    with pytest.raises(ValueError, match="TRAIN.ADV_INTERVAL is 0: expected a whole number of steps >= 1"):
        SSAGANTrainer(_cfg(tiny, TRAIN__ADV_INTERVAL=0), CPU, str(tmp_path), tiny["train_set"])


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_discriminator_step_is_the_original_update(tiny, tmp_path, mode):
    """'separate': Adam step on the hinge loss, then one on +MA-GP (so the penalty is minimised); 'joint': one step
    on their sum. Checked against a replica that calls the model losses directly."""
    cfg = _cfg(tiny, SSA__MAGP_MODE=mode, SSA__MAGP_P=2.0, SSA__MAGP_WEIGHT=5.0)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path), tiny["train_set"])
    batch = _first_batch(t)
    real = batch.imgs[-1]
    sent = torch.randn(real.size(0), 16)
    fake = torch.rand_like(real) * 2 - 1
    replica = copy.deepcopy(t.netD)
    opt = torch.optim.Adam(replica.parameters(), lr=cfg.SSA.DISCRIMINATOR_LR, betas=(cfg.SSA.BETA1, cfg.SSA.BETA2))
    t.discriminator_step(real, fake, sent)

    def hinge():
        return hinge_d_loss(replica, real, fake, sent).total

    def penalty():
        return magp_loss(replica, real, sent, 2.0, 5.0)

    for make_loss in ([lambda: hinge() + penalty()] if mode == "joint" else [hinge, penalty]):
        opt.zero_grad()
        make_loss().backward()
        opt.step()
    assert torch.allclose(_flat(t.netD), _flat(replica), atol=1e-6)


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_magp_interval_penalises_every_nth_step_at_n_times_the_weight(tiny, tmp_path, mode):
    """SSA.MAGP_INTERVAL 3 (StyleGAN2's lazy regularisation): steps 0 and 3 are the original update with the
    penalty weighted 3x, steps 1 and 2 the hinge step alone; the log has MAGP on the penalised steps only."""
    cfg = _cfg(tiny, SSA__MAGP_MODE=mode, SSA__MAGP_P=2.0, SSA__MAGP_WEIGHT=5.0, SSA__MAGP_INTERVAL=3)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path), tiny["train_set"])
    real = _first_batch(t).imgs[-1]
    sent = torch.randn(real.size(0), 16)
    fake = torch.rand_like(real) * 2 - 1
    replica = copy.deepcopy(t.netD)
    opt = torch.optim.Adam(replica.parameters(), lr=cfg.SSA.DISCRIMINATOR_LR, betas=(cfg.SSA.BETA1, cfg.SSA.BETA2))

    def hinge():
        return hinge_d_loss(replica, real, fake, sent).total

    def penalty():
        return magp_loss(replica, real, sent, 2.0, 15.0)

    logged = []
    for step in range(4):
        t.step = step
        logged.append("MAGP" in t.discriminator_step(real, fake, sent))
        if step % 3:
            losses = [hinge]
        else:
            losses = [lambda: hinge() + penalty()] if mode == "joint" else [hinge, penalty]
        for make_loss in losses:
            opt.zero_grad()
            make_loss().backward()
            opt.step()
        assert torch.allclose(_flat(t.netD), _flat(replica), atol=1e-6), step
    assert logged == [True, False, False, True]


def test_discriminator_steps_lower_hinge_loss_and_penalty(tiny, tmp_path):
    cfg = _cfg(tiny, SSA__MAGP_P=2.0, SSA__MAGP_WEIGHT=1.0, SSA__DISCRIMINATOR_LR=0.005)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path), tiny["train_set"])
    real = _first_batch(t).imgs[-1]
    sent = torch.randn(real.size(0), 16, generator=torch.Generator().manual_seed(0))
    fake = torch.rand(real.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    first = t.discriminator_step(real, fake, sent)
    for _ in range(6):
        last = t.discriminator_step(real, fake, sent)
    assert float(last["errD"]) < float(first["errD"]) - 0.05
    # With G fixed the penalty step alone must shrink the gradient norm it measures.
    before = magp_loss(t.netD, real, sent, 2.0, 1.0).item()
    for _ in range(3):
        gan_step(magp_loss(t.netD, real, sent, 2.0, 1.0), t.optD, t.scaler, module=t.netD, rt=t.rt)
    after = magp_loss(t.netD, real, sent, 2.0, 1.0).item()
    assert after < before


def test_resume_equals_uninterrupted_run(tiny, tmp_path):
    kw = dict(TRAIN__FINETUNE_TEXT_ENCODER=True, TRAIN__EMA=True)
    full = SSAGANTrainer(_cfg(tiny, TRAIN__MAX_EPOCH=2, **kw), CPU, str(tmp_path / "full"), tiny["train_set"])
    torch.manual_seed(123)
    full.fit()
    part = SSAGANTrainer(_cfg(tiny, TRAIN__MAX_EPOCH=1, **kw), CPU, str(tmp_path / "part"), tiny["train_set"])
    torch.manual_seed(123)
    part.fit()
    torch.manual_seed(999)  # whatever happens between the runs must not matter
    resumed = SSAGANTrainer(_cfg(tiny, TRAIN__MAX_EPOCH=2, **kw), CPU, str(tmp_path / "part"), tiny["train_set"])
    resumed.resume()
    assert (resumed.epoch, resumed.step) == (1, 4)
    resumed.fit()
    for name in ("netG", "netD", "text_encoder", "image_encoder"):
        assert torch.equal(_flat(getattr(full, name)), _flat(getattr(resumed, name))), name
    assert torch.equal(_flat(full.ema.shadow), _flat(resumed.ema.shadow))
    model = tmp_path / "part" / "Model"
    assert sorted(os.listdir(model)) == sorted(
        [f"netG_00{e}.pth" for e in (1, 2)] + [f"netD_00{e}.pth" for e in (1, 2)]
        + [f"text_encoder{e}.pth" for e in (1, 2)] + [f"image_encoder{e}.pth" for e in (1, 2)] + [STATE_FILE])
    # netG_%03d.pth holds the EMA weights, as plain keys (no `module.`).
    g_state = load_checkpoint(str(model / "netG_002.pth"))
    assert not any(k.startswith("module.") for k in g_state)
    assert torch.equal(torch.cat([g_state[k].flatten() for k, _ in resumed.ema.shadow.named_parameters()]),
                       _flat(resumed.ema.shadow))
    images = sorted(os.listdir(tmp_path / "part" / "Image"))
    assert images == ["G_epoch_1.png", "G_epoch_1_masks.png", "G_epoch_2.png", "G_epoch_2_masks.png"]


def test_snapshot_files_and_continue_from_net_g(tiny, tmp_path):
    t = SSAGANTrainer(_cfg(tiny), CPU, str(tmp_path / "a"), tiny["train_set"])
    t.fit()
    net_g = tmp_path / "a" / "Model" / "netG_001.pth"
    spec = get_family("ssagan")
    cfg = _cfg(tiny, TRAIN__NET_G=str(net_g))
    net = spec.load_generator(spec.build_generator(cfg), str(net_g))  # strict
    cont = SSAGANTrainer(cfg, CPU, str(tmp_path / "b"), tiny["train_set"])
    assert cont.epoch == 1  # wt: netG_001 = one epoch done, the next one is the second
    assert torch.equal(_flat(cont.netG), _flat(net))
    assert torch.equal(_flat(cont.netD), _flat(t.netD))
    os.remove(tmp_path / "a" / "Model" / "netD_001.pth")
    with pytest.raises(FileNotFoundError, match="netD_001.pth"):
        SSAGANTrainer(cfg, CPU, str(tmp_path / "c"), tiny["train_set"])


def test_sampling_writes_images_masks_and_captions(tiny, tmp_path):
    cfg = _cfg(tiny)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path / "run"), tiny["train_set"])
    t.fit()
    spec = get_family("ssagan")
    net = spec.load_generator(spec.build_generator(cfg), str(tmp_path / "run" / "Model" / "netG_001.pth")).eval()
    test_set = build_dataset(cfg, "test")
    text_encoder, _ = load_damsm(cfg, test_set.n_words, "cpu", with_image_encoder=False)
    out = tmp_path / "valid"
    result = sample_test_set(lambda *a: spec.generate(net, *a), text_encoder, test_set, str(out), z_dim=100,
                             device="cpu", n_samples=8, batch_size=4, save_extras=spec.save_extras)
    assert result["n"] == 8
    records = json.loads((out / "captions.json").read_text())
    assert len(records) == 8 and {r["caption_index"] // 10 for r in records} == set(range(8))
    for r in records:
        img = Image.open(out / "single" / r["file"])
        mask = Image.open(out / "single" / r["file"].replace(".png", "_mask.png"))
        assert img.size == (32, 32) and img.mode == "RGB"
        assert mask.size == (32, 32) and mask.mode == "L"
    stages, att = spec.generate_stages(net, torch.zeros(2, 100), torch.zeros(2, 16), None, None)
    assert len(stages) == 1 and stages[0].shape == (2, 3, 32, 32) and att == []


def test_mask_figure_and_example_masks(tiny, tmp_path):
    cfg = _cfg(tiny)
    spec = get_family("ssagan")
    torch.manual_seed(0)
    net = spec.build_generator(cfg).eval()
    with torch.no_grad():
        images, masks = net(torch.randn(2, 100), torch.randn(2, 16))
    assert [m.size(-1) for m in masks] == [4, 8, 16, 32]
    fig = mask_figure(images, masks, ["a red circle", "a blue square"])
    assert fig.width == 5 * (128 + 2)  # the image + 4 masks, 32-px images shown at 128 px
    dataset = tiny["train_set"]
    text_encoder, _ = load_damsm(cfg, dataset.n_words, "cpu", with_image_encoder=False)
    sentences = [dataset.caption_text(0), dataset.caption_text(15)]
    with torch.no_grad():
        written = write_example_masks(net, text_encoder, dataset, sentences, str(tmp_path), z_dim=100, device="cpu")
        drawn = generate_sentences(lambda *a: spec.generate_stages(net, *a), text_encoder, dataset, sentences,
                                   str(tmp_path), z_dim=100, device="cpu")
    assert sorted(os.path.basename(p) for p in written) == ["0_s_0_masks.png", "0_s_1_masks.png"]
    assert sorted(os.path.basename(p) for p in drawn) == ["0_s_0_g0.png", "0_s_1_g0.png"]
    # Same noise as gen_example: the figure's first tile is the example image (32 px shown at 128).
    for j in (0, 1):
        figure = np.asarray(Image.open(tmp_path / f"0_s_{j}_masks.png"))
        assert figure.shape[1] == 5 * (128 + 2)
        assert np.array_equal(figure[:128:4, :128:4], np.asarray(Image.open(tmp_path / f"0_s_{j}_g0.png")))


def test_save_last_mask_writes_the_full_size_mask(tmp_path):
    masks = [torch.rand(2, 1, 4, 4), torch.tensor([0.0, 0.25, 0.5, 1.0]).repeat(2, 1, 4, 1)]
    save_last_mask(masks, 1, str(tmp_path / "sub" / "key_s0"))
    png = np.asarray(Image.open(tmp_path / "sub" / "key_s0_mask.png"))
    assert png.dtype == np.uint8 and png.shape == (4, 4)
    assert png[0].tolist() == [0, 64, 128, 255]  # rounded, not truncated


def test_bad_settings_are_named(tiny, tmp_path):
    with pytest.raises(ValueError, match="SSA.MAGP_MODE must be one of .* got 'both'"):
        SSAGANTrainer(_cfg(tiny, SSA__MAGP_MODE="both"), CPU, str(tmp_path), tiny["train_set"])
    with pytest.raises(ValueError, match="SSA.MAGP_INTERVAL is 0: expected a whole number of steps >= 1"):
        SSAGANTrainer(_cfg(tiny, SSA__MAGP_INTERVAL=0), CPU, str(tmp_path), tiny["train_set"])
    with pytest.raises(ValueError, match="REAL_FEATURE_CACHE_MB .* cannot be used with TRAIN.FINETUNE_TEXT_ENCODER"):
        SSAGANTrainer(_cfg(tiny, TRAIN__REAL_FEATURE_CACHE_MB=10, TRAIN__FINETUNE_TEXT_ENCODER=True), CPU,
                      str(tmp_path), tiny["train_set"])
    with pytest.raises(ValueError, match="TRAIN.BATCH_SIZE must be >= 2"):
        SSAGANTrainer(_cfg(tiny, TRAIN__BATCH_SIZE=1), CPU, str(tmp_path), tiny["train_set"])
    with pytest.raises(FileNotFoundError, match="image_encoder7.pth"):
        SSAGANTrainer(_cfg(tiny, TRAIN__NET_E=str(tiny["root"] / "text_encoder7.pth"),
                           TRAIN__FINETUNE_TEXT_ENCODER=True), CPU, str(tmp_path), tiny["train_set"])


def test_bert_finetune_trains_projections_only(tiny, tmp_path, minilm_dir):
    cfg = _cfg(tiny, TEXT__ENCODER="bert", TEXT__BERT_PATH=str(minilm_dir), TRAIN__FINETUNE_TEXT_ENCODER=True)
    train_set = build_dataset(cfg, "train")
    torch.manual_seed(0)
    path = tmp_path / "bert" / "text_encoder1.pth"
    path.parent.mkdir()
    torch.save(build_text_encoder(cfg, train_set.n_words).state_dict(), path)
    torch.save(build_image_encoder(cfg).state_dict(), path.parent / "image_encoder1.pth")
    cfg.TRAIN.NET_E = str(path)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path / "run"), train_set)
    trunk = _flat(t.text_encoder.embedder).clone()
    proj = _flat(t.text_encoder.sent_proj).clone()
    losses = t.train_step(_first_batch(t))
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.equal(_flat(t.text_encoder.embedder), trunk)
    assert not torch.equal(_flat(t.text_encoder.sent_proj), proj)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, overrides, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    rt = setup_runtime(gpu_id=-1)
    torch.manual_seed(rank)  # different noise and crops per rank
    cfg = load_config(None, {**overrides, "TRAIN.BATCH_SIZE": 3, "TRAIN.FINETUNE_TEXT_ENCODER": True,
                             "TRAIN.EMA": True, "TRAIN.MAX_STEPS": 2})
    t = SSAGANTrainer(cfg, rt, out, build_dataset(cfg, "train"))
    t.fit()
    torch.save({k: _flat(unwrap(m)) for k, m in t.modules().items()}, os.path.join(result_dir, f"{rank}.pt"))
    shutdown_runtime(rt)


def test_ddp_ranks_stay_identical(tiny, tmp_path):
    """Two gloo processes (G, encoders under DDP; D by averaged gradients): every model is the same on both ranks
    after two steps, and it has trained."""
    mp.spawn(_ddp_worker, args=(_free_port(), tiny["overrides"], str(tmp_path / "run"), str(tmp_path)), nprocs=2,
             join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    assert set(r0) == {"netG", "netD", "netG_ema", "text_encoder", "image_encoder"}
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    fresh = SSAGANTrainer(_cfg(tiny), CPU, str(tmp_path / "fresh"), tiny["train_set"])
    assert not torch.equal(r0["netD"], _flat(fresh.netD))
    assert (tmp_path / "run" / "Model" / "netG_001.pth").is_file()


SHIPPED = ["bird_ssa", "coco_ssa", "shapes_ssa", "shapes_ssa_bert"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    cfg = load_config(os.path.join(ROOT, "cfg", f"{name}.yml"))
    # shapes_ssa.yml samples from the EMA of G with its own BatchNorm statistics (the originals keep no EMA)
    assert cfg.MODEL == "ssagan" and cfg.TRAIN.EMA is (name == "shapes_ssa") and cfg.B_VALIDATION is False
    assert cfg.TRAIN.EMA_BN_BATCHES == 100
    assert cfg.TREE.BRANCH_NUM == 1 and cfg.SSA.MAGP_MODE == "separate"
    # shapes_ssa.yml: G at 20x SSA-GAN's rate with the perceptual term (docs/shapes_experiments.md)
    g_lr, perceptual = (2e-3, 5.0) if name == "shapes_ssa" else (1e-4, 0.0)
    assert (cfg.SSA.GENERATOR_LR, cfg.SSA.DISCRIMINATOR_LR, cfg.SSA.BETA1, cfg.SSA.BETA2) == (g_lr, 4e-4, 0.0, 0.9)
    assert cfg.TRAIN.PERCEPTUAL_WEIGHT == perceptual
    assert (cfg.SSA.MAGP_P, cfg.SSA.MAGP_WEIGHT) == (6.0, 2.0)
    assert cfg.SSA.DAMSM_WEIGHT == (0.1 if name.startswith("shapes") else 0.05)  # shapes: main_finetune.py's value
    assert cfg.TRAIN.NET_E.endswith(".pth") and "text_encoder" in cfg.TRAIN.NET_E
    if name.startswith("shapes"):
        damsm = load_config(os.path.join(ROOT, "cfg", "DAMSM", "shapes.yml"))
        for key in ("EMBEDDING_DIM", "WORDS_NUM", "CAPTIONS_PER_IMAGE"):
            assert cfg.TEXT[key] == damsm.TEXT[key], key
        assert (cfg.DAMSM.IMAGE_ENCODER, cfg.DAMSM.IMAGE_SIZE) == (damsm.DAMSM.IMAGE_ENCODER, damsm.DAMSM.IMAGE_SIZE)
        assert cfg.TREE.BASE_SIZE == (32 if name == "shapes_ssa" else 64) and cfg.WORKERS == 0  # 32: a third the time
        assert cfg.TEXT.ENCODER == ("bert" if name.endswith("bert") else "rnn") and cfg.TEXT.BERT_PATH == ""
    else:
        assert (cfg.TREE.BASE_SIZE, cfg.TRAIN.NF, cfg.TRAIN.BATCH_SIZE, cfg.TEXT.EMBEDDING_DIM) == (256, 64, 24, 256)
        assert cfg.TRAIN.NET_E == {"bird_ssa": "DAMSMencoders/bird/text_encoder200.pth",
                                   "coco_ssa": "DAMSMencoders/coco/text_encoder100.pth"}[name]
    # shapes_ssa.yml: G reads the words on a 4x4 map (GAN.WORD_GRID, ours); the originals' configs do not
    assert (cfg.GAN.WORD_GRID, cfg.GAN.WORD_CONTEXT_LAYERS) == ((4, 1) if name == "shapes_ssa" else (0, 0))
    # and AttnGAN's shapes recipe with modulation per place; the originals train on the adversarial and DAMSM terms
    # (the anchor in the first 4 of its 11 epochs)
    recipe = (cfg.GAN.WORD_AFFINE, cfg.TRAIN.PAIRED_CANDIDATES, cfg.TRAIN.PIXEL_WEIGHT, cfg.TRAIN.PAIRED_ANCHOR,
              cfg.TRAIN.ANCHOR_POOL, cfg.TRAIN.PAIRED_ANCHOR_EPOCHS, cfg.TRAIN.COEFF.ADV)
    assert recipe == ((True, 4, 10.0, 0.3, 3, 4, 0.1) if name == "shapes_ssa" else (False, 1, 0.0, 0.0, 0, 0, 1.0))
    if name == "shapes_ssa":
        assert (cfg.TRAIN.MAX_EPOCH, cfg.TRAIN.SNAPSHOT_INTERVAL) == (11, 4)
        # NF 8 in pairs of steps, batches of 16, shape-swapped hard negatives, narrower mask predictors (ours)
        assert (cfg.TRAIN.NF, cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.PARALLEL_STEPS, cfg.SSA.MASK_HIDDEN) == (8, 16, 2, 32)
        assert (cfg.TRAIN.SMOOTH.SWAP_LAMBDA, cfg.DAMSM.SWAP_NEGATIVES) == (2.0, ["circle square triangle"])
    else:
        assert (cfg.TRAIN.PARALLEL_STEPS, cfg.SSA.MASK_HIDDEN, cfg.TRAIN.SMOOTH.SWAP_LAMBDA) == (1, 100, 0.0)
    # shapes_ssa.yml: D and the adversarial term every 4th step (ours); the originals step them every step
    assert cfg.TRAIN.ADV_INTERVAL == (4 if name == "shapes_ssa" else 1)


def test_resume_honours_new_rates_and_refuses_new_widths(tiny, tmp_path, capsys):
    from trainers.base import ResumeRefusedError

    SSAGANTrainer(_cfg(tiny), CPU, str(tmp_path), tiny["train_set"]).fit()
    capsys.readouterr()
    t = SSAGANTrainer(_cfg(tiny, SSA__GENERATOR_LR=1e-5, SSA__MAGP_WEIGHT=1.0), CPU, str(tmp_path), tiny["train_set"])
    t.resume()
    assert t.optG.param_groups[0]["lr"] == t.optG.param_groups[0]["initial_lr"] == 1e-5
    assert t.optD.param_groups[0]["lr"] == 4e-4
    out = capsys.readouterr().out
    assert "resume: SSA.GENERATOR_LR 0.0001 -> 1e-05" in out and "resume: SSA.MAGP_WEIGHT 2.0 -> 1.0" in out
    with pytest.raises(ResumeRefusedError, match=r"TRAIN\.NF 4 -> 8"):
        SSAGANTrainer(_cfg(tiny, TRAIN__NF=8), CPU, str(tmp_path), tiny["train_set"]).resume()


def test_paired_candidates_pick_the_noise_whose_image_is_nearest_the_real_one(tiny, tmp_path):
    """TRAIN.PAIRED_CANDIDATES (IMLE, as AttnGAN's): per caption, of k noise draws the one whose whole image (NetG
    has one stage) lies nearest the caption's real image; G renders the k draws with each caption's text."""
    t = SSAGANTrainer(_cfg(tiny), CPU, str(tmp_path), tiny["train_set"])
    calls = []

    class NoiseImage(torch.nn.Module):  # the image is made of the noise, so the nearest candidate is known
        def forward(self, noise, sent, words, mask):
            calls.append((noise.size(0), sent, words, mask))
            return noise[:, :12].reshape(-1, 3, 2, 2), []

    t.netG = NoiseImage()
    real = torch.randn(5, 3, 2, 2)
    sent, words = torch.randn(5, 8), torch.randn(5, 8, 3)
    mask = torch.tensor([[False, False, True]] * 5)
    torch.manual_seed(3)
    noise = t.nearest_noise(4, sent, words, mask, real)
    torch.manual_seed(3)
    z_all = torch.randn(4, 5, t.z_dim)
    dist = (z_all[..., :12] - real.flatten(1)).pow(2).mean(-1)  # [candidate, caption]
    assert noise.shape == (5, t.z_dim)
    for i in range(5):
        assert torch.equal(noise[i], z_all[int(dist[:, i].argmin()), i])
    assert len({int(dist[:, i].argmin()) for i in range(5)}) > 1  # chosen per caption, not once for the batch
    n, s, w, m = calls[-1]
    assert n == 20 and torch.equal(s, sent.repeat(4, 1)) and torch.equal(w, words.repeat(4, 1, 1))
    assert torch.equal(m, mask.repeat(4, 1))
    t.memory = DrawMemory()  # TRAIN.PAIRED_MEMORY: the chosen draws come back as candidate 0, so none is farther
    first = t.nearest_noise(4, sent, words, mask, real)
    second = t.nearest_noise(4, sent, words, mask, real)
    near = (second[:, :12] - real.flatten(1)).pow(2).mean(1) <= (first[:, :12] - real.flatten(1)).pow(2).mean(1)
    assert near.all() and len(t.memory) == 5


@pytest.mark.parametrize("pool", [0, 2])
def test_paired_anchor_renders_fresh_draws_and_adds_their_pixel_term(tiny, tmp_path, pool):
    """TRAIN.PAIRED_ANCHOR: one G forward holds the (IMLE-chosen) draws and, after them, fresh draws for the same
    captions; D sees the chosen images only; `pixel` is the chosen images' term, `anchor` the fresh images' (pooled
    to TRAIN.ANCHOR_POOL cells a side where > 0), and errG counts it PAIRED_ANCHOR x PIXEL_WEIGHT times (and the
    adversarial term TRAIN.COEFF.ADV times); TRAIN.PAIRED_ANCHOR_EPOCHS ends it after that many epochs."""
    cfg = _cfg(tiny, TRAIN__PAIRED_ANCHOR=0.5, TRAIN__PIXEL_WEIGHT=3.0, TRAIN__ANCHOR_POOL=pool,
               TRAIN__PAIRED_CANDIDATES=2, TRAIN__PAIRED_ANCHOR_EPOCHS=1, TRAIN__COEFF__ADV=0.25)
    t = SSAGANTrainer(cfg, CPU, str(tmp_path), tiny["train_set"])
    batch = _first_batch(t)
    b = batch.imgs[-1].size(0)
    seen, d_inputs = [], []
    t.netG.register_forward_hook(lambda m, args, out: seen.append((out[0].detach(), args)))
    t.netD.register_forward_hook(lambda m, args, out: d_inputs.append(args[0].size(0)))
    losses = t.train_step(batch)
    assert [f.size(0) for f, _ in seen] == [2 * b, 2 * b]  # the 2 candidates (no grad), then chosen + fresh
    fake, args = seen[-1]
    assert torch.equal(args[1][:b], args[1][b:]) and not torch.equal(args[0][:b], args[0][b:])
    assert set(d_inputs) == {b}
    mse = torch.nn.functional.mse_loss
    cells = (lambda x: torch.nn.functional.adaptive_avg_pool2d(x, pool) if pool else x)
    real = batch.imgs[-1].float()
    assert losses["pixel"].item() == pytest.approx(mse(fake[:b].float(), real).item(), rel=1e-5)
    anchor = mse(cells(fake[b:].float()), cells(real)).item()
    assert losses["anchor"].item() == pytest.approx(anchor, rel=1e-5)
    assert losses["errG_adv"].abs().item() > 1e-3
    rest = 0.25 * losses["errG_adv"] + losses["DAMSM_G"] + 3.0 * losses["pixel"]
    assert (losses["errG"] - rest).item() == pytest.approx(0.5 * 3.0 * anchor, rel=1e-4)
    t.epoch = 1  # past TRAIN.PAIRED_ANCHOR_EPOCHS: the chosen draws alone
    later = t.train_step(_first_batch(t))
    assert "anchor" not in later and seen[-1][0].size(0) == b
