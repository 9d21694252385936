"""AttnGAN trainer, sampling and example sentences on a tiny `shapes` set with untrained encoders (CPU, seconds)."""
import copy
import json
import os
import types

import pytest
import torch

from datasets import build_dataset
from main import main as main_entry
from miscc.checkpoint import load_checkpoint
from miscc.errors import InputError, MissingFileError
from models.attngan.trainer import AttnGANTrainer
from models.registry import get_family
from tests.helpers import small_config, tiny_encoders, tiny_shapes
from trainers.base import STATE_FILE, ResumeRefusedError
from trainers.common import load_damsm
from trainers.runtime import Runtime
from trainers.sampling import encode_sentences, generate_sentences, sample_test_set

CPU = Runtime(device=torch.device("cpu"))
TINY = {"GAN.GF_DIM": 4, "GAN.DF_DIM": 4, "TEXT.EMBEDDING_DIM": 32, "TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_EPOCH": 1,
        "DAMSM.IMAGE_SIZE": 32, "TRAIN.ADV_START_EPOCH": 0,  # the GAN from the first step (the shipped config: 16)
        "TRAIN.PAIRED_ANCHOR": 0.0,  # G renders B images, as the other terms' tests expect (the anchor's test sets it)
        "TRAIN.PERCEPTUAL_EXTRA": "",  # the shipped config's second image encoder is 128-d (its test sets one)
        "GAN.D_STAGES": 0}  # a D per stage, as AttnGAN (the shipped config's one D: its own test)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def attn_cfg(shapes, tmp_path_factory):
    cfg = small_config("cfg/shapes_attn.yml", shapes, **TINY)
    cfg.TRAIN.NET_E = tiny_encoders(cfg, tmp_path_factory.mktemp("damsm"))
    return cfg


def _params(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_one_step_finite_losses_and_snapshot_files(attn_cfg, tmp_path):
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.MAX_STEPS = 2
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    before = _params(trainer.netG).clone()
    trainer.fit()
    assert trainer.step == 2
    assert not torch.equal(before, _params(trainer.netG))
    names = sorted(os.listdir(tmp_path / "Model"))
    assert names == ["netD0.pth", "netD1.pth", "netG_epoch_1.pth", STATE_FILE]
    # the released format: a plain state dict holding the EMA weights
    ema = load_checkpoint(str(tmp_path / "Model" / "netG_epoch_1.pth"))
    assert all(torch.equal(ema[k], v) for k, v in trainer.ema.shadow.state_dict().items())
    log = (tmp_path / "Log" / "train.log").read_text()
    assert "train/errD0=" in log and "train/w_loss=" in log
    assert (tmp_path / "Image" / "G_epoch_1.png").exists()


def test_snapshot_batchnorm_statistics_are_the_emas_own(attn_cfg, tmp_path):
    """TRAIN.EMA_BN_BATCHES: the snapshot's BatchNorm statistics are recomputed for the EMA weights (AttnGAN saved
    the live G's); the weights, the live G and the training stream are the same either way."""
    runs = {}
    for n in (0, 2):
        cfg = copy.deepcopy(attn_cfg)
        cfg.TRAIN.MAX_STEPS, cfg.TRAIN.EMA_BN_BATCHES = 2, n
        torch.manual_seed(5)
        trainer = AttnGANTrainer(cfg, CPU, str(tmp_path / str(n)), build_dataset(cfg, "train"))
        trainer.fit()
        snap = load_checkpoint(str(tmp_path / str(n) / "Model" / "netG_epoch_1.pth"))
        runs[n] = trainer, snap, torch.rand(3)  # the global stream after the run
    (t0, snap0, after0), (t2, snap2, after2) = runs[0], runs[2]
    assert torch.equal(_params(t0.netG), _params(t2.netG)) and torch.equal(after0, after2)
    stats = [k for k in snap0 if k.endswith(("running_mean", "running_var"))]
    assert stats and all(k in snap2 for k in stats)
    live = t0.netG.state_dict()
    assert all(torch.equal(snap0[k], live[k]) for k in stats)  # AttnGAN's file: the live G's statistics
    assert not any(torch.equal(snap2[k], live[k]) for k in stats)
    weights = [k for k in snap0 if k not in stats and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(snap0[k], snap2[k]) for k in weights)


@pytest.mark.parametrize("overrides", [
    {"GAN.B_INIT_ATTENTION": True, "GAN.UPSAMPLE": "bilinear"},  # BERT-AttnGAN's generator
    {"GAN.B_DCGAN": True, "GAN.R_NUM": 0},
    {"TREE.BRANCH_NUM": 1},
    {"TRAIN.AMP": "bf16"},
])
def test_one_step_per_variant(attn_cfg, tmp_path, overrides):
    cfg = copy.deepcopy(attn_cfg)
    for k, v in overrides.items():
        section, key = k.split(".")
        cfg[section][key] = v
    cfg.TRAIN.MAX_STEPS = 1
    rt = Runtime(device=torch.device("cpu"), amp=cfg.TRAIN.AMP)
    trainer = AttnGANTrainer(cfg, rt, str(tmp_path), build_dataset(cfg, "train"))
    losses = trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(0)))))
    assert all(torch.isfinite(v) for v in losses.values()), losses


def test_d_stages_one_discriminator_on_the_last_stage(attn_cfg, tmp_path):
    """GAN.D_STAGES 1: one D, fed the real and generated images of the last stage only (its step and G's
    adversarial term); snapshots hold that one D as netD0.pth."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.GAN.D_STAGES, cfg.TRAIN.MAX_STEPS = 1, 1
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    assert len(trainer.netsD) == 1
    seen = []
    trainer.netsD[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].size(-1)))
    before = _params(trainer.netsD[0]).clone()
    batch = trainer.make_batch(next(iter(trainer.epoch_loader(0))))
    losses = trainer.train_step(batch)
    last = batch.imgs[-1].size(-1)
    assert seen == [last] * 3 and last > batch.imgs[0].size(-1)  # D's real, fake and G's adversarial forwards
    assert "errD0" in losses and "errD1" not in losses and losses["errG_adv"] > 0
    assert not torch.equal(before, _params(trainer.netsD[0]))
    trainer.save_snapshot(1)
    assert sorted(n for n in os.listdir(tmp_path / "Model") if n.startswith("netD")) == ["netD0.pth"]


def test_perceptual_and_kl_weights_enter_the_generator_loss(attn_cfg, tmp_path):
    """TRAIN.PERCEPTUAL_WEIGHT and TRAIN.PIXEL_WEIGHT add their terms (logged as `perceptual`, `pixel`),
    TRAIN.COEFF.KL scales KL: errG is the weighted sum of the logged terms."""
    results = {}
    for name, per, pix, kl in (("plain", 0.0, 0.0, 1.0), ("shapes", 5.0, 3.0, 0.0)):
        cfg = copy.deepcopy(attn_cfg)
        cfg.TRAIN.PERCEPTUAL_WEIGHT, cfg.TRAIN.PIXEL_WEIGHT, cfg.TRAIN.COEFF.KL = per, pix, kl
        torch.manual_seed(0)
        trainer = AttnGANTrainer(cfg, CPU, str(tmp_path / name), build_dataset(cfg, "train"))
        results[name] = trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(0)))))
    assert "perceptual" not in results["plain"] and "pixel" not in results["plain"]
    shapes = results["shapes"]
    assert shapes["perceptual"] > 0 and shapes["pixel"] > 0
    plain_terms = results["plain"]["errG"] - results["plain"]["w_loss"] - results["plain"]["s_loss"]
    adv_plain = plain_terms - results["plain"]["kl_loss"]
    adv_shapes = (shapes["errG"] - shapes["w_loss"] - shapes["s_loss"] - 5.0 * shapes["perceptual"]
                  - 3.0 * shapes["pixel"])
    # same seed, same first step: the adversarial term is the same; KL no longer counts, the perceptual term does
    assert adv_shapes.item() == pytest.approx(adv_plain.item(), rel=1e-4, abs=1e-5)


def test_coeff_adv_scales_the_adversarial_term(attn_cfg, tmp_path):
    """TRAIN.COEFF.ADV weights G's adversarial term (logged unweighted as `errG_adv`); the rest of errG is the same."""
    out = {}
    for w in (1.0, 0.1):
        cfg = copy.deepcopy(attn_cfg)
        cfg.TRAIN.COEFF.ADV = w
        torch.manual_seed(0)
        trainer = AttnGANTrainer(cfg, CPU, str(tmp_path / str(w)), build_dataset(cfg, "train"))
        out[w] = trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(0)))))
    adv = out[1.0]["errG_adv"]
    assert adv > 0 and out[0.1]["errG_adv"].item() == pytest.approx(adv.item(), rel=1e-5)
    assert (out[1.0]["errG"] - out[0.1]["errG"]).item() == pytest.approx(0.9 * adv.item(), rel=1e-4)


def test_swap_lambda_adds_the_hard_negative_term_and_needs_its_groups(attn_cfg, tmp_path):
    """TRAIN.SMOOTH.SWAP_LAMBDA: G's DAMSM word and sentence terms grow by the hard-negative term (softplus >= 0,
    log 2 where the encoders cannot tell the caption from its negative); it needs DAMSM.SWAP_NEGATIVES and names
    words missing from the vocabulary."""
    results = {}
    for lam in (0.0, 5.0):
        cfg = copy.deepcopy(attn_cfg)
        cfg.TRAIN.SMOOTH.SWAP_LAMBDA = lam
        cfg.DAMSM.SWAP_NEGATIVES = ["circle square triangle"]
        torch.manual_seed(0)
        trainer = AttnGANTrainer(cfg, CPU, str(tmp_path / str(lam)), build_dataset(cfg, "train"))
        assert (trainer.swap_groups is None) == (lam == 0.0)
        results[lam] = trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(0)))))
    for key in ("w_loss", "s_loss"):
        assert results[5.0][key] > results[0.0][key] + 1.0, (key, results)
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.SMOOTH.SWAP_LAMBDA = 1.0
    cfg.DAMSM.SWAP_NEGATIVES = []
    with pytest.raises(InputError, match="DAMSM.SWAP_NEGATIVES"):
        AttnGANTrainer(cfg, CPU, str(tmp_path / "none"), build_dataset(cfg, "train"))
    cfg.DAMSM.SWAP_NEGATIVES = ["circle hexagon"]
    with pytest.raises(InputError, match="hexagon"):
        AttnGANTrainer(cfg, CPU, str(tmp_path / "bad"), build_dataset(cfg, "train"))


def test_adv_start_epoch_trains_g_alone_and_leaves_d_untouched(attn_cfg, tmp_path):
    """Before TRAIN.ADV_START_EPOCH no discriminator steps and errG has no adversarial term; from it on, both."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PIXEL_WEIGHT, cfg.TRAIN.ADV_START_EPOCH = 1.0, 1
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    batch = trainer.make_batch(next(iter(trainer.epoch_loader(0))))
    d_before = [_params(d).clone() for d in trainer.netsD]
    g_before = _params(trainer.netG).clone()
    losses = trainer.train_step(batch)
    assert not any(k.startswith("errD") for k in losses)
    assert all(torch.equal(b, _params(d)) for b, d in zip(d_before, trainer.netsD))
    assert not torch.equal(g_before, _params(trainer.netG))
    g_only = (losses["w_loss"] + losses["s_loss"] + losses["pixel"] + cfg.TRAIN.PERCEPTUAL_WEIGHT * losses["perceptual"]
              + cfg.TRAIN.COEFF.KL * losses["kl_loss"])
    assert losses["errG"].item() == pytest.approx(g_only.item(), rel=1e-5)
    trainer.epoch = 1
    losses = trainer.train_step(batch)
    assert {"errD0", "errD1"} <= set(losses)
    assert not torch.equal(d_before[0], _params(trainer.netsD[0]))


def test_adv_interval_steps_d_and_the_adversarial_term_every_nth_step_at_n_times_its_weight(attn_cfg, tmp_path):
    """TRAIN.ADV_INTERVAL n: steps 0, n, 2n... step D and give G the adversarial term at n·COEFF.ADV; the others
    leave D untouched and errG has no adversarial term."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PIXEL_WEIGHT, cfg.TRAIN.ADV_INTERVAL, cfg.TRAIN.COEFF.ADV = 1.0, 2, 0.1
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    batch = trainer.make_batch(next(iter(trainer.epoch_loader(0))))

    def g_only(losses):
        return (losses["w_loss"] + losses["s_loss"] + losses["pixel"]
                + cfg.TRAIN.PERCEPTUAL_WEIGHT * losses["perceptual"] + cfg.TRAIN.COEFF.KL * losses["kl_loss"])

    for step in range(3):
        trainer.step = step
        d_before = [_params(d).clone() for d in trainer.netsD]
        losses = trainer.train_step(batch)
        d_moved = [not torch.equal(b, _params(d)) for b, d in zip(d_before, trainer.netsD)]
        if step % 2:
            assert not any(k.startswith("errD") for k in losses) and "errG_adv" not in losses
            assert not any(d_moved)
            assert losses["errG"].item() == pytest.approx(g_only(losses).item(), rel=1e-5)
        else:
            assert {"errD0", "errD1", "errG_adv"} <= set(losses) and all(d_moved)
            expected = g_only(losses) + 2 * 0.1 * losses["errG_adv"]
            assert losses["errG"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_adv_interval_must_be_a_whole_number_of_steps(attn_cfg, tmp_path, bad):
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.ADV_INTERVAL = bad
    with pytest.raises(InputError, match="TRAIN.ADV_INTERVAL"):
        AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))


def test_pixel_term_sums_every_stage_against_the_real_image_of_its_size(attn_cfg, tmp_path):
    """TRAIN.PIXEL_WEIGHT: the logged `pixel` is Σ_stages MSE(stage image, the caption's real image of that size),
    so stage 1 (what TRAIN.PAIRED_CANDIDATES compares) learns to show the caption too."""
    cfg = copy.deepcopy(attn_cfg)
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    batch = trainer.make_batch(next(iter(trainer.epoch_loader(0))))
    seen = []
    trainer.netG.register_forward_hook(lambda m, args, out: seen.append([x.detach() for x in out[0]]))
    losses = trainer.train_step(batch)
    fakes = seen[-1]
    assert [f.shape[-1] for f in fakes] == [r.shape[-1] for r in batch.imgs] == [16, 32]
    expected = sum(torch.nn.functional.mse_loss(f.float(), r.float()) for f, r in zip(fakes, batch.imgs))
    assert losses["pixel"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("pool", [0, 1, 4])
def test_paired_anchor_renders_fresh_draws_and_adds_their_pixel_term(attn_cfg, tmp_path, pool):
    """TRAIN.PAIRED_ANCHOR: one G forward holds the chosen draws and, after them, fresh draws for the same captions;
    the logged `pixel` is the chosen images' term, `anchor` the fresh images' (every stage; with TRAIN.ANCHOR_POOL
    n > 0 between the images average-pooled to n x n), and errG counts it PAIRED_ANCHOR x PIXEL_WEIGHT times (the
    rest of errG as without it); TRAIN.PAIRED_ANCHOR_EPOCHS ends it after that many epochs."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PAIRED_ANCHOR, cfg.TRAIN.PIXEL_WEIGHT, cfg.TRAIN.PERCEPTUAL_WEIGHT = 0.5, 3.0, 0.0
    cfg.TRAIN.ANCHOR_POOL, cfg.TRAIN.ANCHOR_STAGES = pool, 0  # every stage (the shipped config: stage 1 only)
    cfg.TRAIN.PAIRED_CANDIDATES = 2
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    batch = trainer.make_batch(next(iter(trainer.epoch_loader(0))))
    seen = []
    trainer.netG.register_forward_hook(lambda m, args, out: seen.append(([x.detach() for x in out[0]], args)))
    losses = trainer.train_step(batch)
    fakes, args = seen[-1]
    b = batch.imgs[0].size(0)
    assert fakes[0].size(0) == 2 * b and torch.equal(args[1][:b], args[1][b:])  # the captions twice
    assert not torch.equal(args[0][:b], args[0][b:])  # other noise
    mse = torch.nn.functional.mse_loss
    pixel = sum(mse(f[:b].float(), r.float()) for f, r in zip(fakes, batch.imgs))
    cells = (lambda x: torch.nn.functional.adaptive_avg_pool2d(x, pool) if pool else x)
    anchor = sum(mse(cells(f[b:].float()), cells(r.float())) for f, r in zip(fakes, batch.imgs))
    assert losses["pixel"].item() == pytest.approx(pixel.item(), rel=1e-5)
    assert losses["anchor"].item() == pytest.approx(anchor.item(), rel=1e-5)
    rest = (losses["w_loss"] + losses["s_loss"] + cfg.TRAIN.COEFF.ADV * losses["errG_adv"]
            + cfg.TRAIN.COEFF.KL * losses["kl_loss"] + 3.0 * losses["pixel"])
    assert (losses["errG"] - rest).item() == pytest.approx(0.5 * 3.0 * anchor.item(), rel=1e-4)
    trainer.cfg.TRAIN.PAIRED_ANCHOR_EPOCHS = 1  # from epoch 1 on: no fresh draws, no anchor term
    trainer.epoch = 1
    later = trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(1)))))
    assert "anchor" not in later and seen[-1][0][0].size(0) == b


def test_anchor_stages_render_the_fresh_draws_through_the_first_stages_only(attn_cfg, tmp_path):
    """TRAIN.ANCHOR_STAGES = 1: the fresh draws stop after stage 1 (G's 16-px image holds 2B rows, its 32-px image B)
    and the anchor compares the 16-px images alone; 0 or more than TREE.BRANCH_NUM, or G_DCGAN, are refused."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PAIRED_ANCHOR, cfg.TRAIN.PIXEL_WEIGHT, cfg.TRAIN.PERCEPTUAL_WEIGHT = 0.5, 3.0, 0.0
    cfg.TRAIN.ANCHOR_POOL, cfg.TRAIN.ANCHOR_STAGES = 3, 1
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    batch = trainer.make_batch(next(iter(trainer.epoch_loader(0))))
    seen = []
    trainer.netG.register_forward_hook(lambda m, args, out: seen.append([x.detach() for x in out[0]]))
    losses = trainer.train_step(batch)
    fakes, b = seen[-1], batch.imgs[0].size(0)
    assert [f.size(0) for f in fakes] == [2 * b, b]
    cells = (lambda x: torch.nn.functional.adaptive_avg_pool2d(x.float(), 3))
    anchor = torch.nn.functional.mse_loss(cells(fakes[0][b:]), cells(batch.imgs[0]))
    assert losses["anchor"].item() == pytest.approx(anchor.item(), rel=1e-5)
    pixel = sum(torch.nn.functional.mse_loss(f[:b].float(), r.float()) for f, r in zip(fakes, batch.imgs))
    assert losses["pixel"].item() == pytest.approx(pixel.item(), rel=1e-5)
    for bad in ({"TRAIN.ANCHOR_STAGES": 3}, {"TRAIN.ANCHOR_STAGES": -1}, {"GAN.B_DCGAN": True}):
        wrong = copy.deepcopy(cfg)
        for key, value in bad.items():
            setattr(getattr(wrong, key.split(".")[0]), key.split(".")[1], value)
        with pytest.raises(InputError, match="TRAIN.ANCHOR_STAGES"):
            AttnGANTrainer(wrong, CPU, str(tmp_path / "bad"), build_dataset(wrong, "train"))


def test_paired_candidates_pick_the_noise_whose_image_is_nearest_the_real_one(attn_cfg, tmp_path):
    """TRAIN.PAIRED_CANDIDATES: per caption, the z and conditioning-augmentation draw whose first image (G's
    `preview`) is nearest the real image of that size."""
    cfg = copy.deepcopy(attn_cfg)
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))

    class NoiseImage(torch.nn.Module):  # the image is made of the noise, so the nearest candidate is known
        ca_net = types.SimpleNamespace(c_dim=2)

        def preview(self, noise, sent, words, mask, ca_eps, candidates=1):
            assert noise.size(0) == candidates * sent.size(0)  # the text once, the draws k times
            return torch.cat((noise[:, :10], ca_eps), 1).view(-1, 3, 2, 2)

    trainer.netG = NoiseImage()
    real, larger = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 4, 4)
    sent, words, mask = torch.zeros(5, 8), torch.zeros(5, 8, 3), torch.zeros(5, 3, dtype=torch.bool)
    torch.manual_seed(3)
    noise, eps = trainer.nearest_noise(4, sent, words, mask, [real, larger])  # compares the 2x2 ones
    torch.manual_seed(3)
    z_all, eps_all = torch.randn(4, 5, trainer.z_dim), torch.randn(4, 5, 2)
    dist = (torch.cat((z_all[..., :10], eps_all), -1) - real.flatten(1)).pow(2).mean(-1)  # [candidate, caption]
    assert noise.shape == (5, trainer.z_dim) and eps.shape == (5, 2)
    for i in range(5):
        best = int(dist[:, i].argmin())
        assert torch.equal(noise[i], z_all[best, i]) and torch.equal(eps[i], eps_all[best, i])
    assert len({int(dist[:, i].argmin()) for i in range(5)}) > 1  # chosen per caption, not once for the batch


def test_paired_map_candidates_redraw_only_the_noise_map_of_the_chosen_draw(attn_cfg, tmp_path):
    """TRAIN.PAIRED_MAP_CANDIDATES: after the nearest of PAIRED_CANDIDATES draws, its noise map (the first g*g
    entries, GAN.GRID_NOISE) is drawn that many times more with the rest held, and the nearest of those is kept."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PAIRED_MAP_CANDIDATES = 3
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))

    class NoiseImage(torch.nn.Module):  # the image is made of the noise; its 2x2 noise map is the first 4 entries
        ca_net = types.SimpleNamespace(c_dim=2)
        h_net1 = types.SimpleNamespace(grid_size=2)

        def preview(self, noise, sent, words, mask, ca_eps, candidates=1):
            assert noise.size(0) == candidates * sent.size(0)  # the text once, the draws k times
            return torch.cat((noise[:, :10], ca_eps), 1).view(-1, 3, 2, 2)

    trainer.netG = NoiseImage()
    b, real = 5, torch.randn(5, 3, 2, 2)
    sent, words, mask = torch.zeros(b, 8), torch.zeros(b, 8, 3), torch.zeros(b, 3, dtype=torch.bool)
    torch.manual_seed(3)
    noise, eps = trainer.nearest_noise(4, sent, words, mask, [real])
    torch.manual_seed(3)
    z_all, eps_all, maps = torch.randn(4, b, trainer.z_dim), torch.randn(4, b, 2), torch.randn(3, b, 4)
    target = real.flatten(1)
    first = (torch.cat((z_all[..., :10], eps_all), -1) - target).pow(2).mean(-1).argmin(0)
    for i in range(b):
        z1, e1 = z_all[first[i], i], eps_all[first[i], i]
        d = [(torch.cat((maps[j, i], z1[4:10], e1)) - target[i]).pow(2).mean() for j in range(3)]
        best = int(torch.stack(d).argmin())
        assert torch.equal(noise[i, :4], maps[best, i]) and torch.equal(noise[i, 4:], z1[4:])
        assert torch.equal(eps[i], e1)
    cfg.GAN.GRID_NOISE = False
    with pytest.raises(InputError, match="TRAIN.PAIRED_MAP_CANDIDATES .* needs GAN.GRID_NOISE"):
        AttnGANTrainer(cfg, CPU, str(tmp_path / "bad"), build_dataset(cfg, "train"))


def test_paired_memory_offers_each_images_chosen_draw_again(attn_cfg, tmp_path):
    """TRAIN.PAIRED_MEMORY: at an image's next step its chosen draw is candidate 0, so the draw chosen then is the
    same or nearer (here G's image is its noise); images not seen before get fresh draws only."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PAIRED_MEMORY, cfg.TRAIN.PARALLEL_STEPS = True, 1  # (a store parallel steps would share)
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))

    class NoiseImage(torch.nn.Module):
        ca_net = types.SimpleNamespace(c_dim=2)

        def preview(self, noise, sent, words, mask, ca_eps, candidates=1):
            return torch.cat((noise[:, :10], ca_eps), 1).view(-1, 3, 2, 2)

    trainer.netG = NoiseImage()
    real = torch.randn(5, 3, 2, 2)
    sent, words, mask = torch.zeros(5, 8), torch.zeros(5, 8, 3), torch.zeros(5, 3, dtype=torch.bool)

    def dist(noise, eps):
        return (torch.cat((noise[:, :10], eps), 1) - real.flatten(1)).pow(2).mean(1)

    first = trainer.nearest_noise(3, sent, words, mask, [real])
    assert len(trainer.memory) == 5
    second = trainer.nearest_noise(3, sent, words, mask, [real])
    assert (dist(*second) <= dist(*first)).all()
    kept = [torch.equal(a, b) for a, b in zip(first[0], second[0])]
    assert any(kept) and all(torch.equal(a, b) for a, b, k in zip(first[1], second[1], kept) if k)
    other = torch.randn(5, 3, 2, 2)  # other images: nothing remembered, so the fresh draws as without memory
    torch.manual_seed(4)
    with_memory = trainer.nearest_noise(3, sent, words, mask, [other])
    trainer.memory = None
    torch.manual_seed(4)
    assert all(torch.equal(a, b) for a, b in zip(with_memory, trainer.nearest_noise(3, sent, words, mask, [other])))


@pytest.mark.parametrize("memory", [False, True])
def test_resume_equals_uninterrupted(attn_cfg, tmp_path, memory):
    """Also with TRAIN.PAIRED_MEMORY, whose draws travel in the training state (one step at a time: parallel steps
    refuse it); without it in the shipped config's pairs of steps (TRAIN.PARALLEL_STEPS 2)."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PAIRED_MEMORY, cfg.TRAIN.PARALLEL_STEPS = memory, 1 if memory else 2
    cfg.TRAIN.MAX_EPOCH = 2
    cfg.TRAIN.SNAPSHOT_INTERVAL = 1
    data = build_dataset(cfg, "train")
    torch.manual_seed(5)
    full = AttnGANTrainer(cfg, CPU, str(tmp_path / "full"), data)
    full.fit()
    cfg1 = copy.deepcopy(cfg)
    cfg1.TRAIN.MAX_EPOCH = 1
    torch.manual_seed(5)
    AttnGANTrainer(cfg1, CPU, str(tmp_path / "part"), data).fit()
    torch.manual_seed(77)
    resumed = AttnGANTrainer(cfg, CPU, str(tmp_path / "part"), data)
    resumed.resume()
    resumed.fit()
    for name, module in full.modules().items():
        assert torch.equal(_params(module), _params(resumed.modules()[name])), name


def test_net_g_resume_loads_release_files_and_epoch(attn_cfg, tmp_path):
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.MAX_STEPS = 1
    first = AttnGANTrainer(cfg, CPU, str(tmp_path / "a"), build_dataset(cfg, "train"))
    first.fit()
    cfg2 = copy.deepcopy(cfg)
    cfg2.TRAIN.NET_G = str(tmp_path / "a" / "Model" / "netG_epoch_1.pth")
    second = AttnGANTrainer(cfg2, CPU, str(tmp_path / "b"), build_dataset(cfg, "train"))
    assert second.epoch == 2
    assert torch.equal(_params(second.netG), _params(first.ema.shadow))
    assert torch.equal(_params(second.netsD[1]), _params(first.netsD[1]))


def test_sampling_writes_images_and_captions(attn_cfg, tmp_path):
    spec = get_family("attngan")
    cfg = attn_cfg
    netG = spec.build_generator(cfg).eval()
    test_set = build_dataset(cfg, "test")
    text_encoder, _ = load_damsm(cfg, test_set.n_words, "cpu", with_image_encoder=False)
    result = sample_test_set(lambda *a: spec.generate(netG, *a), text_encoder, test_set, str(tmp_path),
                             z_dim=cfg.GAN.Z_DIM, device="cpu", n_samples=20, batch_size=6, seed=1)
    records = json.load(open(result["captions"]))
    assert result["n"] == 20 == len(records)
    files = sorted(os.listdir(tmp_path / "single"))
    assert len(files) == 20 and files[0].endswith("_s0.png")
    assert any(f.endswith("_s2.png") for f in files)  # 8 test images: three passes for 20 samples
    assert {r["key"] for r in records} <= set(test_set.filenames)
    every = build_dataset(cfg, "test", every_caption=True)
    result = sample_test_set(lambda *a: spec.generate(netG, *a), text_encoder, every, str(tmp_path / "every"),
                             z_dim=cfg.GAN.Z_DIM, device="cpu", mode="every", batch_size=16)
    assert result["n"] == 8 * 10


def test_gen_example_and_unknown_words(attn_cfg, tmp_path):
    spec = get_family("attngan")
    netG = spec.build_generator(attn_cfg).eval()
    dataset = build_dataset(attn_cfg, "test")
    text_encoder, _ = load_damsm(attn_cfg, dataset.n_words, "cpu", with_image_encoder=False)
    sentences = ["a red circle in the top left corner", "a zebra green square", "big blue triangle"]
    with pytest.warns(UserWarning, match=r"sentence 1: dropping words not in the vocabulary: \['zebra'\]"):
        written = generate_sentences(lambda *a: spec.generate_stages(netG, *a), text_encoder, dataset, sentences,
                                     str(tmp_path), z_dim=attn_cfg.GAN.Z_DIM, device="cpu")
    names = sorted(os.path.basename(p) for p in written)
    assert "0_s_0_g0.png" in names and "0_s_2_g1.png" in names and "0_s_1_a0.png" in names
    with pytest.raises(ValueError, match="sentence 0 .*none of its words is in the vocabulary"):
        encode_sentences(["zebra giraffe"], dataset)


def test_main_trains_then_draws_examples(attn_cfg, tmp_path):
    out = tmp_path / "run"
    args = ["--cfg", "cfg/shapes_attn.yml", "--gpu", "-1", "--output_dir", str(out), "--set",
            f"DATA_DIR={attn_cfg.DATA_DIR}", f"TRAIN.NET_E={attn_cfg.TRAIN.NET_E}", "TRAIN.MAX_STEPS=1",
            "WORKERS=0"] + [f"{k}={v}" for k, v in TINY.items()]
    assert main_entry(args) == 0
    example_dir = out / "Model" / "netG_epoch_1" / "example_captions"
    assert (example_dir / "0_s_0_g1.png").exists() and (example_dir / "0_s_0_a0.png").exists()
    # sampling from the trained generator with B_VALIDATION
    net_g = str(out / "Model" / "netG_epoch_1.pth")
    assert main_entry(args + ["B_VALIDATION=True", f"TRAIN.NET_G={net_g}", "EVAL.N_SAMPLES=10",
                              "EVAL.PROTOCOLS=[rprec20]"]) == 0
    valid = out / "Model" / "netG_epoch_1" / "valid"
    assert len(os.listdir(valid / "single")) == 20  # the protocol's N, above EVAL.N_SAMPLES
    result = json.loads((valid / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["protocol"] == "rprec20" and result["n"] == 20 and 0.0 <= result["value"] <= 100.0
    assert result["checkpoint"] == net_g and "DAMSM" in result["feature_extractor"]
    report = (valid / "report.md").read_text()
    assert "rprec20" in report and (valid / "samples.png").exists()


def _g_update_after_resume(cfg, folder):
    """Resume `cfg` from `folder` and take one training step: the largest change of a G parameter."""
    data = build_dataset(cfg, "train")
    trainer = AttnGANTrainer(cfg, CPU, folder, data)
    trainer.resume()
    trainer.set_learning_rates(trainer.epoch)
    before = _params(trainer.netG).clone()
    trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(trainer.epoch)))))
    return trainer, float((_params(trainer.netG) - before).abs().max())


def test_resume_honours_a_new_learning_rate(attn_cfg, tmp_path, capsys):
    """`--set TRAIN.GENERATOR_LR=...` after `--resume` is written into the restored Adam (lr and initial_lr) and
    logged; one step then moves G by the new rate's amount (the unchanged rate moves it by ~1e-4)."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.MAX_STEPS = 2
    cfg.TRAIN.GENERATOR_LR = 2e-4  # AttnGAN's (the shapes config uses 1e-3)
    AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train")).fit()
    cfg_same = copy.deepcopy(cfg)
    cfg_same.TRAIN.MAX_STEPS = 0
    _, same_step = _g_update_after_resume(cfg_same, str(tmp_path))
    capsys.readouterr()
    cfg_low = copy.deepcopy(cfg_same)
    cfg_low.TRAIN.GENERATOR_LR = 1e-12
    cfg_low.TRAIN.BETA1 = 0.0
    trainer, low_step = _g_update_after_resume(cfg_low, str(tmp_path))
    out = capsys.readouterr().out
    assert "resume: TRAIN.GENERATOR_LR 0.0002 -> 1e-12" in out and "resume: TRAIN.BETA1 0.5 -> 0.0" in out
    g = trainer.optG.param_groups[0]
    assert g["lr"] == g["initial_lr"] == 1e-12 and g["betas"] == (0.0, cfg.TRAIN.BETA2)
    assert all(o.param_groups[0]["lr"] == 2e-4 and o.param_groups[0]["betas"] == (0.0, cfg.TRAIN.BETA2)
               for o in trainer.optsD)
    assert len(trainer.optG.state) > 0  # the moments were restored, not reset
    assert same_step > 1e-5 and low_step < 1e-9, (same_step, low_step)


def test_perceptual_extra_adds_the_term_in_a_second_encoders_features(attn_cfg, tmp_path):
    """TRAIN.PERCEPTUAL_EXTRA: the perceptual term again, in the region features of a second image encoder file,
    at PERCEPTUAL_WEIGHT (logged as `perceptual_extra`); given the DAMSM's own encoder it equals `perceptual`; with
    TRAIN.PERCEPTUAL_EXTRA_EPOCHS it ends after that many epochs. A missing file is named; without PERCEPTUAL_WEIGHT
    the key is refused."""
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.PERCEPTUAL_WEIGHT = 2.0
    cfg.TRAIN.PERCEPTUAL_EXTRA = cfg.TRAIN.NET_E.replace("text_encoder", "image_encoder")
    trainer = AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"))
    losses = trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(0)))))
    assert losses["perceptual_extra"].item() == pytest.approx(losses["perceptual"].item(), rel=1e-5)
    rest = (losses["w_loss"] + losses["s_loss"] + cfg.TRAIN.COEFF.ADV * losses["errG_adv"]
            + cfg.TRAIN.COEFF.KL * losses["kl_loss"] + 2.0 * losses["perceptual"]
            + cfg.TRAIN.PIXEL_WEIGHT * losses["pixel"])
    assert (losses["errG"] - rest).item() == pytest.approx(2.0 * losses["perceptual_extra"].item(), rel=1e-4)
    trainer.cfg.TRAIN.PERCEPTUAL_EXTRA_EPOCHS = 1  # from epoch 1 on the second term is gone
    trainer.epoch = 1
    later = trainer.train_step(trainer.make_batch(next(iter(trainer.epoch_loader(1)))))
    assert "perceptual_extra" not in later and "perceptual" in later

    missing = copy.deepcopy(cfg)
    missing.TRAIN.PERCEPTUAL_EXTRA = str(tmp_path / "image_encoder4.pth")
    with pytest.raises(MissingFileError, match="image encoder not found: .*image_encoder4.pth"):
        AttnGANTrainer(missing, CPU, str(tmp_path / "m"), build_dataset(cfg, "train"))
    cfg.TRAIN.PERCEPTUAL_WEIGHT = 0.0
    with pytest.raises(InputError, match="TRAIN.PERCEPTUAL_EXTRA .* needs TRAIN.PERCEPTUAL_WEIGHT > 0"):
        AttnGANTrainer(cfg, CPU, str(tmp_path / "z"), build_dataset(cfg, "train"))


def test_image_grids_and_snapshots_draw_nothing_from_the_training_randomness(attn_cfg, tmp_path):
    """A run's weights do not depend on how often it draws its image grids (TRAIN.IMAGE_INTERVAL) or snapshots
    (TRAIN.SNAPSHOT_INTERVAL): G's conditioning augmentation samples there too, from a fork of the RNG."""
    def trained(folder, interval):
        cfg = copy.deepcopy(attn_cfg)
        cfg.TRAIN.MAX_STEPS, cfg.TRAIN.IMAGE_INTERVAL, cfg.TRAIN.SNAPSHOT_INTERVAL = 4, interval, 1
        cfg.TRAIN.MAX_EPOCH = 3
        cfg.TRAIN.BATCH_SIZE = 8  # a few steps per epoch on the tiny data: a snapshot between steps
        trainer = AttnGANTrainer(cfg, CPU, str(tmp_path / folder), build_dataset(cfg, "train"))
        trainer.fit()
        return _params(trainer.netG)

    assert torch.equal(trained("every_step", 1), trained("never", 10_000))


def test_resume_refuses_a_changed_model_size(attn_cfg, tmp_path):
    cfg = copy.deepcopy(attn_cfg)
    cfg.TRAIN.MAX_STEPS = 1
    AttnGANTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train")).fit()
    bigger = copy.deepcopy(cfg)
    bigger.GAN.GF_DIM, bigger.GAN.DF_DIM = 8, 8
    trainer = AttnGANTrainer(bigger, CPU, str(tmp_path), build_dataset(cfg, "train"))
    with pytest.raises(ResumeRefusedError, match=r"training_state\.pth: cannot resume .*GAN\.DF_DIM 4 -> 8; "
                                                 r"GAN\.GF_DIM 4 -> 8\. Set them back"):
        trainer.resume()
