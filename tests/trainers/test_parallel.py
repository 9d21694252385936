"""TRAIN.PARALLEL_STEPS (trainers.parallel): batches' steps at once in threads, each still its own optimiser step
(AttnGAN on a tiny `shapes` set with untrained encoders, CPU, seconds)."""
import copy
import types

import pytest
import torch

from datasets import build_dataset
from miscc.errors import InputError
from models.attngan.trainer import AttnGANTrainer
from tests.helpers import TINY_RUN, small_config, tiny_encoders, tiny_shapes
from trainers.base import BaseTrainer
from trainers.parallel import GradCapture, ParallelSteps, check_parallel_steps, group_seed
from trainers.runtime import Runtime

CPU = Runtime(device=torch.device("cpu"))
TINY = {"GAN.GF_DIM": 4, "GAN.DF_DIM": 4, "TEXT.EMBEDDING_DIM": 32, "TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_EPOCH": 1,
        "DAMSM.IMAGE_SIZE": 32, "TRAIN.PERCEPTUAL_EXTRA": "", "TRAIN.PARALLEL_STEPS": 2, "TRAIN.EMA_BN_BATCHES": 2}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    c = small_config("cfg/shapes_attn.yml", tiny_shapes(tmp_path_factory.mktemp("data")), **TINY)
    c.TRAIN.NET_E = tiny_encoders(c, tmp_path_factory.mktemp("damsm"))
    return c


def _tensors(trainer):
    out = {}
    for name, module in trainer.modules().items():
        out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    for name, opt in trainer.optimizers().items():
        for i, state in enumerate(opt.state_dict()["state"].values()):
            out.update({f"{name}.{i}.{k}": torch.as_tensor(v) for k, v in state.items()})
    return out


def test_a_group_is_each_batch_stepped_in_order_with_the_later_gradients_from_the_groups_first_weights(
        cfg, tmp_path, one_thread):
    """Steps 0 and 1 in one group: the trainer's step on batch 0 as usual; batch 1's gradients (G's and D's) taken
    by a replica on the weights before step 0, with noise from group_seed(SEED, 1), then the trainer's optimisers
    step with them and the EMA follows. The reference does that by hand, one after the other (on one thread, the
    workers' thread count here)."""
    train_set = build_dataset(cfg, "train")
    par = AttnGANTrainer(cfg, CPU, str(tmp_path / "par"), train_set)
    ref = AttnGANTrainer(cfg, CPU, str(tmp_path / "ref"), train_set)
    loader = iter(par.epoch_loader(0))
    b0, b1 = par.make_batch(next(loader)), par.make_batch(next(loader))

    torch.manual_seed(7)
    group = ParallelSteps(par, 2)
    try:
        losses = group.run([b0, b1])
    finally:
        group.close()

    rep = ref.make_replica()
    rep.step = 1
    rep.draw_generator.manual_seed(group_seed(ref.seed, 1))
    rep_losses = rep.train_step(b1)  # on the initial weights: the replica is a copy of them
    torch.manual_seed(7)
    ref_losses = ref.train_step(b0)
    for name, capture in rep.optimizers().items():
        opt = ref.optimizers()[name]
        (grads,) = capture.steps
        for p, g in zip([p for grp in opt.param_groups for p in grp["params"]], grads):
            p.grad = g
        opt.step()
    ref.ema.update(ref.netG, 1)

    assert [sorted(d) for d in losses] == [sorted(ref_losses), sorted(rep_losses)]
    for got, want in zip(losses, [ref_losses, rep_losses]):
        assert all(torch.equal(got[k], want[k]) for k in want)
    a, b = _tensors(par), _tensors(ref)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert all(int(s["step"]) == 2 for s in par.optG.state.values())  # two Adam steps, one per batch


def test_fit_in_groups_counts_every_step_and_repeats_exactly(cfg, tmp_path):
    """An odd TRAIN.MAX_STEPS with groups of 2: 5 steps, each logged, 5 Adam steps; two runs give the same bits."""
    c = copy.deepcopy(cfg)
    c.TRAIN.MAX_STEPS = 5
    runs = []
    for name in ("a", "b"):
        trainer = AttnGANTrainer(c, CPU, str(tmp_path / name), build_dataset(c, "train"))
        trainer.fit()
        assert trainer.step == 5
        assert all(int(s["step"]) == 5 for s in trainer.optG.state.values())
        log = (tmp_path / name / "Log" / "train.log").read_text()
        assert all(f"step {i} train/" in log for i in range(1, 6))
        runs.append(_tensors(trainer))
    assert [k for k in runs[0] if not torch.equal(runs[0][k], runs[1][k])] == []


def test_ssagan_groups_apply_every_captured_step(cfg, tmp_path):
    """SSA-GAN's D steps twice a step ('separate' MA-GP): a replica's two D steps both reach D's optimiser."""
    from models.ssagan.trainer import SSAGANTrainer

    c = small_config("cfg/shapes_ssa.yml", cfg.DATA_DIR, **{**TINY_RUN, "TRAIN.NET_E": cfg.TRAIN.NET_E},
                     **{"TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_STEPS": 4, "TRAIN.PARALLEL_STEPS": 2,
                        "TRAIN.EMA_BN_BATCHES": 2, "TRAIN.ADV_INTERVAL": 1, "SSA.MAGP_INTERVAL": 1,
                        "SSA.MAGP_MODE": "separate"})
    trainer = SSAGANTrainer(c, CPU, str(tmp_path), build_dataset(c, "train"))
    trainer.fit()
    assert trainer.step == 4
    assert {int(s["step"]) for s in trainer.optD.state.values()} == {8}
    assert {int(s["step"]) for s in trainer.optG.state.values()} == {4}


def test_grad_capture_keeps_gradients_instead_of_stepping():
    w = torch.nn.Parameter(torch.ones(3))
    cap = GradCapture([w])
    (2 * w).sum().backward()
    cap.step()
    assert torch.equal(w, torch.ones(3)) and torch.equal(cap.steps[0][0], torch.full((3,), 2.0))
    cap.zero_grad()
    assert w.grad is None and cap.param_groups[0]["params"] == [w]
    (3 * w).sum().backward()
    cap.step()  # a second step in the same train_step (SSA-GAN's MA-GP) is kept beside the first
    assert [g[0][0].item() for g in cap.steps] == [2.0, 3.0]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_parallel_steps_must_be_a_whole_number(bad):
    with pytest.raises(InputError, match="TRAIN.PARALLEL_STEPS"):
        check_parallel_steps(bad, CPU)


@pytest.mark.parametrize("rt, why", [(Runtime(device=torch.device("cuda")), "on cuda"),
                                     (Runtime(device=torch.device("cpu"), world_size=2), "under torchrun"),
                                     (Runtime(device=torch.device("cpu"), amp="fp16"), "with fp16")])
def test_parallel_steps_are_for_the_cores_of_one_cpu_process(rt, why):
    """A shipped CPU config (n = 2) still runs on a GPU, under torchrun or in fp16: one step at a time, said so."""
    assert check_parallel_steps(2, CPU) == 2 and check_parallel_steps(1, rt) == 1
    with pytest.warns(UserWarning, match=f"TRAIN.PARALLEL_STEPS 2 is for the cores of one CPU process: {why}"):
        assert check_parallel_steps(2, rt) == 1


def test_parallel_steps_refuse_what_the_threads_would_share(cfg, tmp_path):
    c = copy.deepcopy(cfg)
    c.TRAIN.PAIRED_CANDIDATES, c.TRAIN.PAIRED_MEMORY = 2, True
    with pytest.raises(InputError, match="TRAIN.PAIRED_MEMORY"):
        AttnGANTrainer(c, CPU, str(tmp_path), build_dataset(c, "train"))


def test_paired_memory_runs_where_the_runtime_sets_parallel_steps_aside(cfg, tmp_path):
    """The refusal reads the resolved TRAIN.PARALLEL_STEPS: in fp16 (or on a GPU, or under torchrun) the steps run
    one at a time, so the store of chosen draws is kept."""
    c = copy.deepcopy(cfg)
    c.TRAIN.PAIRED_CANDIDATES, c.TRAIN.PAIRED_MEMORY = 2, True
    with pytest.warns(UserWarning, match="TRAIN.PARALLEL_STEPS 2 is for the cores of one CPU process: with fp16"):
        trainer = AttnGANTrainer(c, Runtime(device=torch.device("cpu"), amp="fp16"), str(tmp_path),
                                 build_dataset(c, "train"))
    assert trainer.parallel_steps == 1 and trainer.memory is not None


def test_a_family_without_replicas_refuses_parallel_steps():
    with pytest.raises(InputError, match="does not support parallel steps"):
        BaseTrainer.make_replica(types.SimpleNamespace())


def test_the_cpu_shapes_config_runs_parallel_steps_and_the_originals_do_not():
    from miscc.config import load_config

    assert load_config("cfg/shapes_attn.yml").TRAIN.PARALLEL_STEPS == 2
    for name in ("bird_attn2", "coco_attn2", "bird_bert_attn2", "bird_ssa", "coco_ssa", "bird_dfgan"):
        assert load_config(f"cfg/{name}.yml").TRAIN.PARALLEL_STEPS == 1, name
