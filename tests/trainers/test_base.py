"""Shared training infrastructure: exact resumption, non-finite stop, atomic snapshots, DDP (gloo) equivalence."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from miscc.checkpoint import atomic_save, load_checkpoint
from miscc.config import load_config
from trainers.base import EMA, STATE_FILE, BaseTrainer, NonFiniteLossError, ResumeRefusedError, progress_line
from trainers.runtime import Runtime, average_gradients, setup_runtime, shutdown_runtime, unwrap, wrap_ddp


class NoisyData(Dataset):
    """Each item draws from the global RNG (like random crops and caption choice do)."""

    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, 4, 4, generator=g)
        self.y = torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(2, 4, 4), self.y[i]


class ToyNet(nn.Module):
    def __init__(self, dropout=0.2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(4 * 16, 1)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


class ToyTrainer(BaseTrainer):
    def __init__(self, rt, out, data, dropout=0.2, lr=1e-2, nan_at=None, cfg=None, **kw):
        torch.manual_seed(1)
        self.net = wrap_ddp(ToyNet(dropout).to(rt.device), rt)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.ema = EMA(self.net, 0.9)
        self.nan_at = nan_at
        super().__init__(cfg, rt, str(out), data, **kw)

    def modules(self):
        return {"net": self.net, "ema": self.ema.shadow}

    def optimizers(self):
        return {"opt": self.opt}

    def train_step(self, batch):
        x, y = (t.to(self.rt.device) for t in batch)
        loss = nn.functional.mse_loss(self.net(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.ema.update(self.net)
        if self.nan_at is not None and self.step + 1 == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss.detach()}

    def save_snapshot(self, epoch):
        atomic_save(unwrap(self.net).state_dict(), os.path.join(self.model_dir, f"net_epoch_{epoch}.pth"))

    def sampling_forward(self, net, batch):
        net(batch[0].to(self.rt.device))


CPU = Runtime(device=torch.device("cpu"))


def _params(module):
    return torch.cat([p.detach().flatten() for p in unwrap(module).parameters()])


def _buffers(module):
    return torch.cat([b.detach().float().flatten() for b in unwrap(module).buffers()])


@pytest.mark.parametrize("ema_bn_batches", [0, 3])
def test_resume_continues_exactly(tmp_path, ema_bn_batches):
    data = NoisyData()
    kw = dict(batch_size=4, snapshot_interval=1, seed=7, ema_bn_batches=ema_bn_batches)
    full = ToyTrainer(CPU, tmp_path / "full", data, max_epoch=3, **kw)
    torch.manual_seed(123)
    full.fit()

    part = ToyTrainer(CPU, tmp_path / "part", data, max_epoch=2, **kw)
    torch.manual_seed(123)
    part.fit()
    torch.manual_seed(999)  # whatever happens between the runs must not matter
    resumed = ToyTrainer(CPU, tmp_path / "part", data, max_epoch=3, **kw)
    resumed.resume()
    assert (resumed.epoch, resumed.step) == (2, 12)
    resumed.fit()
    assert torch.equal(_params(full.net), _params(resumed.net))
    assert torch.equal(_params(full.ema.shadow), _params(resumed.ema.shadow))
    assert torch.equal(_buffers(full.ema.shadow), _buffers(resumed.ema.shadow))
    # the EMA's statistics are its own (recomputed before each snapshot) or, with 0, the live net's (AttnGAN)
    assert torch.equal(_buffers(full.ema.shadow), _buffers(full.net)) == (ema_bn_batches == 0)
    assert sorted(os.listdir(tmp_path / "part" / "Model")) == [
        "net_epoch_1.pth", "net_epoch_2.pth", "net_epoch_3.pth", STATE_FILE]


def test_max_steps_stops_and_snapshots(tmp_path):
    t = ToyTrainer(CPU, tmp_path, NoisyData(), batch_size=4, max_epoch=100, snapshot_interval=50, max_steps=8)
    t.fit()
    assert t.step == 8 and t.epoch == 2
    state = load_checkpoint(str(tmp_path / "Model" / STATE_FILE))
    assert state["step"] == 8 and set(state["models"]) == {"net", "ema"}
    assert (tmp_path / "Log" / "train.log").exists()


def test_each_epoch_prints_what_is_left(tmp_path, capsys):
    """After each epoch the run prints its epochs done and the time left, from this process's own epochs (a resumed
    run counts from where it resumed)."""
    assert progress_line(4, 12, 0, 160.0) == ("epoch 4 of 12 done, 40 s an epoch in this run (snapshots included): "
                                              "about 5.3 min left")
    assert progress_line(10, 12, 8, 70.0).endswith("35 s an epoch in this run (snapshots included): about 70 s left")
    assert progress_line(12, 12, 0, 500.0).endswith("about 0 s left")
    t = ToyTrainer(CPU, tmp_path, NoisyData(), batch_size=4, max_epoch=3, snapshot_interval=2)
    t.fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if " done, " in line]
    assert [line.split(",")[0] for line in lines] == ["epoch 1 of 3 done", "epoch 2 of 3 done", "epoch 3 of 3 done"]


def test_step_lr_decay_and_resume(tmp_path):
    """LR_DECAY every LR_DECAY_EPOCHS epochs (BERT-AttnGAN's 0.98 per 10), continued exactly after a resume."""
    kw = dict(batch_size=4, snapshot_interval=1, lr=0.1, lr_decay=0.5, lr_decay_epochs=2)
    t = ToyTrainer(CPU, tmp_path, NoisyData(), max_epoch=3, **kw)
    t.fit()
    assert t.opt.param_groups[0]["lr"] == pytest.approx(0.05)  # epochs 0,1 at 0.1; epoch 2 at 0.05
    resumed = ToyTrainer(CPU, tmp_path, NoisyData(), max_epoch=5, **kw)
    resumed.resume()
    resumed.fit()
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(0.025)  # epoch 4


class RateLog(ToyTrainer):
    """Records the learning rate every step trains with; `stop_at` interrupts the run before that step."""

    def __init__(self, *a, stop_at=None, **kw):
        self.rates, self.stop_at = [], stop_at
        super().__init__(*a, **kw)

    def train_step(self, batch):
        if self.step == self.stop_at:
            raise KeyboardInterrupt
        self.rates.append(self.opt.param_groups[0]["lr"])
        return super().train_step(batch)


def test_lr_cooldown_falls_linearly_and_resumes_exactly(tmp_path):
    """TRAIN.LR_COOLDOWN 0.5 on 3 epochs of 6 steps: 9 steps at the initial rate, then 9/9 ... 1/9 of it; a run
    interrupted inside the cooldown and resumed trains with the same rates and ends on the same weights."""
    data, kw = NoisyData(), dict(batch_size=4, snapshot_interval=1, seed=3, lr=0.1, lr_cooldown=0.5)
    full = RateLog(CPU, tmp_path / "full", data, max_epoch=3, **kw)
    torch.manual_seed(5)
    full.fit()
    assert full.rates == pytest.approx([0.1] * 9 + [0.1 * k / 9 for k in range(9, 0, -1)])
    part = RateLog(CPU, tmp_path / "part", data, max_epoch=3, checkpoint_steps=13, stop_at=14, **kw)
    torch.manual_seed(5)
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    assert part.rates == full.rates[:14]  # the rolling state holds step 13
    resumed = RateLog(CPU, tmp_path / "part", data, max_epoch=3, **kw)
    resumed.resume()
    assert resumed.step == 13
    resumed.fit()
    assert resumed.rates == pytest.approx(full.rates[13:])
    assert torch.equal(_params(full.net), _params(resumed.net))
    with pytest.raises(ValueError, match=r"TRAIN.LR_COOLDOWN is 1.5: expected a fraction"):
        RateLog(CPU, tmp_path / "bad", data, max_epoch=3, batch_size=4, snapshot_interval=1, lr_cooldown=1.5)


def test_non_finite_loss_stops_and_keeps_last_snapshot(tmp_path):
    t = ToyTrainer(CPU, tmp_path, NoisyData(), batch_size=4, max_epoch=5, snapshot_interval=1, nan_at=9)
    with pytest.raises(NonFiniteLossError, match=r"loss 'loss' is nan at step 8 \(epoch 1\)") as e:
        t.fit()
    assert STATE_FILE in str(e.value)
    state = load_checkpoint(str(tmp_path / "Model" / STATE_FILE))
    assert state["epoch"] == 1 and state["step"] == 6  # the snapshot before the bad step survives


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.pth"
    atomic_save({"a": torch.ones(1)}, str(path))

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"a": Boom()}, str(path))
    assert torch.equal(load_checkpoint(str(path))["a"], torch.ones(1))
    assert os.listdir(tmp_path) == ["x.pth"]


@pytest.mark.parametrize("step, decay", [(None, 0.999), (0, 0.1), (10**6, 0.999)])
def test_ema_update_rule(step, decay):
    """avg = d·avg + (1 - d)·p with d = min(decay, (1 + step)/(10 + step)): 1/10 at step 0, the configured decay
    without a step or past the warm-up."""
    net = nn.Linear(2, 1)
    ema = EMA(net, decay=0.999)
    before = _params(ema.shadow).clone()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, step=step)
    assert torch.allclose(_params(ema.shadow), decay * before + (1 - decay) * _params(net))


def test_ema_batchnorm_recalibration():
    """EMA.recalibrate_batchnorm: the copy's running mean / variance become the mean over the batches of each
    batch's mean and unbiased variance of the BatchNorm's input under the copy's own weights; momentum and mode
    are restored, parameters untouched; a copy without BatchNorm (or no batches) is left alone."""
    torch.manual_seed(0)
    net = ToyNet(dropout=0.0)
    ema = EMA(net, 0.9)
    with torch.no_grad():
        for p in ema.shadow.parameters():
            p.mul_(1.5)  # averaged weights: other statistics than the live net's
    params = _params(ema.shadow).clone()
    batches = [torch.randn(5, 2, 4, 4) for _ in range(3)]
    assert ema.recalibrate_batchnorm(lambda m, x: m(x), batches) == 3
    bn = ema.shadow.body[1]
    with torch.no_grad():
        acts = [ema.shadow.body[0](x).transpose(0, 1).flatten(1) for x in batches]  # [C, N·H·W] each
    assert torch.allclose(bn.running_mean, torch.stack([a.mean(1) for a in acts]).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack([a.var(1) for a in acts]).mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and not ema.shadow.training and int(bn.num_batches_tracked) == 3
    assert torch.equal(_params(ema.shadow), params)
    before = _buffers(ema.shadow).clone()
    assert ema.recalibrate_batchnorm(lambda m, x: m(x), []) == 0
    assert torch.equal(_buffers(ema.shadow), before)
    plain = EMA(nn.Linear(2, 1))
    assert plain.recalibrate_batchnorm(lambda m, x: m(x), [torch.randn(3, 2)]) == 0


def test_ema_batchnorm_needs_the_family_forward(tmp_path):
    class NoForward(ToyTrainer):
        sampling_forward = BaseTrainer.sampling_forward

    t = NoForward(CPU, tmp_path, NoisyData(), batch_size=4, max_epoch=1, snapshot_interval=1, ema_bn_batches=2)
    with pytest.raises(NotImplementedError, match="NoForward has no sampling_forward: set TRAIN.EMA_BN_BATCHES to 0"):
        t.fit()


def test_cpu_runtime_needs_no_process_group():
    rt = setup_runtime(gpu_id=-1)
    assert rt.device.type == "cpu" and not rt.distributed and rt.is_main
    assert not torch.distributed.is_initialized()
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        setup_runtime(gpu_id=-1, amp="fp16")
    with pytest.raises(ValueError, match="TRAIN.AMP must be one of .* or 'auto', got 'bf8'"):
        setup_runtime(gpu_id=-1, amp="bf8")


def test_amp_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch, tmp_path):
    """TRAIN.AMP 'auto' reads the CPU flags: bf16 with avx512_bf16 or amx_bf16, float32 (none) without."""
    import builtins

    import trainers.runtime as runtime

    real_open = builtins.open
    for flags, expected in (("fpu sse avx2 avx512f", "none"), ("fpu avx512f avx512_bf16", "bf16"),
                            ("fpu amx_bf16 amx_tile", "bf16")):
        fake = tmp_path / "cpuinfo"
        fake.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p,
                                                                           *a, **k))
        assert runtime.setup_runtime(gpu_id=-1, amp="auto").amp == expected
        monkeypatch.setattr(builtins, "open", real_open)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, out, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    rt = setup_runtime(gpu_id=-1)
    torch.manual_seed(5 + rank)
    t = ToyTrainer(rt, out, _FixedData(), dropout=0.0, batch_size=2, max_epoch=1, snapshot_interval=1, seed=3)
    t.fit()
    if rt.is_main:
        torch.save(_params(t.net), result_path)
    shutdown_runtime(rt)


class _FixedData(NoisyData):
    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_ddp_two_processes_equal_single_process_on_combined_batch(tmp_path):
    """Two gloo processes with batch 2 each == one process with batch 4 whose loss is the mean of the two halves'.

    BatchNorm statistics are per process (PyTorch's SyncBatchNorm needs CUDA), so the single-process reference
    normalises each half separately, exactly as the two processes do; gradients are averaged by DDP.
    """
    result = tmp_path / "ddp.pt"
    for attempt in range(2):  # gloo on a busy 2-core VM has aborted a worker at its first all-reduce (once in ~13
        try:                  # CI runs, "terminate called without an active exception"): one more try, on a new port
            mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path / f"run{attempt}"), str(result)), nprocs=2,
                     join=True)
            break
        except mp.ProcessExitedException as e:
            if e.signal_name != "SIGABRT" or attempt:
                raise
    ddp_params = torch.load(result, weights_only=True)

    data = _FixedData()
    torch.manual_seed(1)
    net = ToyNet(dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(3 + 0)).tolist()  # DistributedSampler
    shards = [order[r::2] for r in range(2)]
    for s in range(len(data) // 4):
        losses = []
        for shard in shards:
            idx = shard[s * 2:(s + 1) * 2]
            losses.append(nn.functional.mse_loss(net(data.x[idx]), data.y[idx]))
        opt.zero_grad()
        (sum(losses) / 2).backward()
        opt.step()
    assert torch.allclose(ddp_params, _params(net), atol=1e-6)


def _average_worker(rank, port, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    rt = setup_runtime(gpu_id=-1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    for i, p in enumerate(net.parameters()):
        p.grad = None if i == 1 else torch.full_like(p, float(rank + 1)) * (i + 1)
    average_gradients(net, rt)
    if rt.is_main:
        torch.save([p.grad for p in net.parameters()], result_path)
    shutdown_runtime(rt)


def test_average_gradients_is_the_mean_over_ranks(tmp_path):
    """A discriminator's gradients (averaged outside DDP, in one flattened all-reduce): every gradient becomes the
    mean over the ranks, in place; a parameter without a gradient stays without one."""
    result = tmp_path / "grads.pt"
    for attempt in range(2):  # gloo's rare abort on a busy 2-core VM: as the DDP test above
        try:
            mp.spawn(_average_worker, args=(_free_port(), str(result)), nprocs=2, join=True)
            break
        except mp.ProcessExitedException as e:
            if e.signal_name != "SIGABRT" or attempt:
                raise
    grads = torch.load(result, weights_only=True)
    assert grads[1] is None
    for i, g in enumerate(grads):
        if g is not None:
            assert torch.equal(g, torch.full_like(g, 1.5 * (i + 1)))  # ranks 1 and 2 times (i + 1)


class Crash(Exception):
    """Stands for a killed process: raised before the step that would follow `at`."""


class CrashingTrainer(ToyTrainer):
    def __init__(self, *a, crash_after=None, **kw):
        self.crash_after = crash_after
        super().__init__(*a, **kw)

    def train_step(self, batch):
        if self.crash_after is not None and self.step == self.crash_after:
            raise Crash(self.step)
        return super().train_step(batch)


@pytest.mark.parametrize("workers", [0, 2])
def test_rolling_state_mid_epoch_resumes_exactly(tmp_path, workers):
    """A rolling state every 4 steps; the run dies after step 9 (epoch 1, batch 3 of 6): the resume continues from
    step 8 (epoch 1, batch 2) and ends bit-identical to an uninterrupted run, also with loader workers whose items
    draw random numbers."""
    data = NoisyData()
    kw = dict(batch_size=4, max_epoch=3, snapshot_interval=10, seed=7, workers=workers)
    torch.manual_seed(123)
    full = ToyTrainer(CPU, tmp_path / "full", data, **kw)
    full.fit()

    torch.manual_seed(123)
    part = CrashingTrainer(CPU, tmp_path / "part", data, crash_after=9, checkpoint_steps=4, **kw)
    with pytest.raises(Crash):
        part.fit()
    state = load_checkpoint(str(tmp_path / "part" / "Model" / STATE_FILE))
    assert (state["epoch"], state["epoch_batch"], state["step"]) == (1, 2, 8)
    torch.manual_seed(999)
    resumed = ToyTrainer(CPU, tmp_path / "part", data, **kw)
    resumed.resume()
    assert (resumed.epoch, resumed.epoch_batch, resumed.step) == (1, 2, 8)
    resumed.fit()
    assert resumed.step == full.step == 18
    assert torch.equal(_params(full.net), _params(resumed.net))
    assert torch.equal(_params(full.ema.shadow), _params(resumed.ema.shadow))
    assert "rolling state at epoch 1, batch 2, step 8" in (tmp_path / "part" / "Log" / "train.log").read_text()


def test_rolling_state_by_minutes(tmp_path, monkeypatch):
    """CHECKPOINT_MINUTES: a state whenever that much time has passed since the last one (the clock is faked)."""
    clock = iter(range(0, 10**6, 30))  # every reading of the clock advances 30 s
    monkeypatch.setattr("trainers.base.time.monotonic", lambda: next(clock))
    t = CrashingTrainer(CPU, tmp_path, NoisyData(), crash_after=5, batch_size=4, max_epoch=3, snapshot_interval=10,
                        checkpoint_minutes=1.0)
    with pytest.raises(Crash):
        t.fit()
    assert load_checkpoint(str(tmp_path / "Model" / STATE_FILE))["step"] in (4, 5)


def test_stale_temporaries_removed_on_start(tmp_path):
    """Only names `atomic_save` makes (.tmp_ + 8 of [a-z0-9_] + .pth), only in Model/, are removed."""
    model = tmp_path / "Model"
    model.mkdir()
    stale = [".tmp_k3j_9x0a.pth", ".tmp_00000000.pth"]
    kept = [".tmp_short.pth", "a.tmp_k3j_9x0a.pth", ".tmp_k3j_9x0a.pth.bak", ".tmp_K3J_9X0A.pth", "net.pth"]
    for name in stale + kept:
        (model / name).write_bytes(b"")
    (tmp_path / ".tmp_k3j_9x0b.pth").write_bytes(b"")  # not in Model/
    ToyTrainer(CPU, tmp_path, NoisyData(), batch_size=4, max_epoch=1, snapshot_interval=1)
    assert sorted(os.listdir(model)) == sorted(kept)
    assert (tmp_path / ".tmp_k3j_9x0b.pth").exists()
    log = (tmp_path / "Log" / "train.log").read_text()
    assert all(f"removed {model / name}" in log for name in stale)


def test_resume_applies_current_learning_rate(tmp_path):
    """The restored optimiser keeps its moments but takes the current lr (and decays from it)."""
    kw = dict(batch_size=4, max_epoch=1, snapshot_interval=1, lr_decay=0.5, lr_decay_epochs=1)
    ToyTrainer(CPU, tmp_path, NoisyData(), lr=0.1, **kw).fit()
    resumed = ToyTrainer(CPU, tmp_path, NoisyData(), lr=0.001, **{**kw, "max_epoch": 2})
    resumed.resume()
    group = resumed.opt.param_groups[0]
    assert group["lr"] == group["initial_lr"] == 0.001
    assert len(resumed.opt.state) > 0  # Adam moments restored
    resumed.fit()
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(0.0005)  # epoch 1: ×0.5


def test_resume_refuses_or_logs_config_changes(tmp_path, capsys):
    """The state records its config: optimisation changes are logged, model/data changes refused (all keys in one
    error), TRAIN.BATCH_SIZE only at an epoch boundary; a state without a config still resumes, with a note."""
    kw = dict(batch_size=4, max_epoch=1, snapshot_interval=1)
    ToyTrainer(CPU, tmp_path, NoisyData(), cfg=load_config(), **kw).fit()
    state_path = tmp_path / "Model" / STATE_FILE
    assert load_checkpoint(str(state_path))["config"]["GAN"]["GF_DIM"] == 128  # plain data, weights-only

    def resume(overrides, data=None):
        t = ToyTrainer(CPU, tmp_path, data or NoisyData(), cfg=load_config(None, overrides), **kw)
        t.resume()
        return t

    with pytest.raises(ResumeRefusedError, match=r"GAN\.GF_DIM 128 -> 16; TEXT\.EMBEDDING_DIM 256 -> 32\. Set") as e:
        resume({"GAN.GF_DIM": 16, "TEXT.EMBEDDING_DIM": 32, "TRAIN.GENERATOR_LR": 1e-5, "WORKERS": 0})
    assert str(state_path) in str(e.value) and "GENERATOR_LR" not in str(e.value)
    with pytest.raises(ResumeRefusedError, match=r"DATA_DIR '' \(24 items\) -> '' \(20 items\)"):
        resume({}, data=NoisyData(20))
    capsys.readouterr()
    resume({"TRAIN.GENERATOR_LR": 1e-5, "TRAIN.BATCH_SIZE": 8, "TRAIN.LOG_INTERVAL": 7})
    out = capsys.readouterr().out
    assert "resume: TRAIN.GENERATOR_LR 0.0002 -> 1e-05" in out and "resume: TRAIN.BATCH_SIZE 64 -> 8" in out
    assert "LOG_INTERVAL" not in out

    state = load_checkpoint(str(state_path))
    state["epoch_batch"] = 3  # as a rolling state written mid-epoch
    torch.save(state, state_path)
    with pytest.raises(ResumeRefusedError, match=r"TRAIN\.BATCH_SIZE 64 -> 8 \(the state was written mid-epoch"):
        resume({"TRAIN.BATCH_SIZE": 8})
    del state["config"]
    torch.save(state, state_path)
    resume({"GAN.GF_DIM": 16})
    assert "records no config" in capsys.readouterr().out
