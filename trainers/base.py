"""The training infrastructure every trainer shares (DAMSM, AttnGAN, SSA-GAN, GAN-INT-CLS).

A trainer subclasses `BaseTrainer` and fills in four things: its modules and optimisers, one `train_step`, and the
release-format files it writes at a snapshot (`netG_epoch_%d.pth`, `text_encoder%d.pth`, ...). The base class owns
the loop and its phases — data order, logging, non-finite checks, snapshots, resumption — so that they are written
once:

- one training-state file (`Model/training_state.pth`: models, EMA, optimisers, grad scaler, epoch, step, position
  in the epoch, RNG states, the config it was written with), written atomically at every snapshot and, in between,
  every TRAIN.CHECKPOINT_MINUTES / CHECKPOINT_STEPS (a rolling state, also mid-epoch); `resume()` continues so that
  the next step is identical to an uninterrupted run (data order is a function of (SEED, epoch); a mid-epoch resume
  replays the epoch's loader up to its position, then restores the RNG states);
- on resume, changed config keys are honoured and logged (learning rates and betas go into the restored optimisers)
  or refused with one error naming each key (model sizes, data, text encoder): `miscc.config.resume_rule`;
- temporary files of an interrupted snapshot write are removed when a run starts in the folder;
- torchrun / DDP: a DistributedSampler, only rank 0 writes files or logs;
- logging: a tqdm bar with the losses, TensorBoard scalars and image grids, a plain-text log;
- a non-finite loss stops the run with an error naming the step and the loss, before anything is saved, so the
  last snapshot stays the last good one.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import os
import time

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from miscc.checkpoint import atomic_save, load_checkpoint, load_state_dict_strict, remove_stale_temporaries
from miscc.config import ConfigError, plain_config, resume_changes
from miscc.errors import InputError, MissingFileError, MissingKeyError, UserError, ensure_output_dir
from miscc.modules import freeze
from trainers.parallel import ParallelSteps, check_parallel_steps
from trainers.runtime import Runtime, capture_rng_state, restore_rng_state, unwrap

STATE_FILE = "training_state.pth"


class ResumeRefusedError(ConfigError):
    """The config changed in a way a training state cannot honour (model sizes, data, text encoder)."""


class NonFiniteLossError(UserError, RuntimeError):
    """A loss became NaN or infinite; training stops and the last snapshot is kept."""


class EMA:
    """Exponential moving average of a model's parameters (AttnGAN: avg = 0.999·avg + 0.001·p).

    Buffers (BatchNorm running statistics) are copied from the live model at every update, as AttnGAN's saved
    `netG_epoch_%d.pth` holds EMA parameters with the live model's buffers: statistics of other weights, which cost
    its samples (ours: `recalibrate_batchnorm` before each snapshot, TRAIN.EMA_BN_BATCHES). Given the optimiser
    step, the decay warms up as min(decay, (1 + step) / (10 + step)) (as TensorFlow's ExponentialMovingAverage with
    num_updates): AttnGAN's fixed 0.999 still weights the random initial G by 0.999^600 = 55% after 600 steps, which
    ruins the samples of short runs; after a few thousand steps the two agree.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = freeze(copy.deepcopy(unwrap(model)))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        model = unwrap(model)
        decay = self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))
        for avg, p in zip(self.shadow.parameters(), model.parameters()):
            avg.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for avg, b in zip(self.shadow.buffers(), model.buffers()):
            avg.copy_(b)

    @torch.no_grad()
    def recalibrate_batchnorm(self, forward, batches) -> int:
        """Recompute the copy's BatchNorm running statistics for its own (averaged) weights: reset, then the
        cumulative mean and variance over `forward(copy, batch)` for each of `batches` in training mode (SWA's
        `update_bn`, Izmailov et al. 2018). Returns the number of batches; 0 (nothing changed) for a copy without
        BatchNorm or an empty `batches`. The next `update` copies the live buffers back, so this is for sampling
        and saving only."""
        norms = [m for m in self.shadow.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        batches = iter(batches)
        first = next(batches, None) if norms else None
        if first is None:
            return 0
        momenta, training = [m.momentum for m in norms], self.shadow.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        self.shadow.train()
        n = 0
        try:
            for batch in itertools.chain((first,), batches):
                forward(self.shadow, batch)
                n += 1
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            self.shadow.train(training)
        return n

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)


class RunLogger:
    """Plain-text log + TensorBoard (rank 0 only)."""

    def __init__(self, log_dir: str, enabled: bool = True):
        self.enabled = enabled
        self.writer = None
        self.text = None
        if enabled:
            os.makedirs(log_dir, exist_ok=True)
            self.text = open(os.path.join(log_dir, "train.log"), "a", encoding="utf-8")
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(log_dir)
            except ImportError:  # tensorboard is optional at run time
                self.writer = None

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(prefix + k, v, step)
        self.line(f"step {step} " + " ".join(f"{prefix}{k}={v:.4f}" for k, v in values.items()))

    def image(self, step: int, tag: str, grid: torch.Tensor) -> None:
        """`grid`: [3, H, W] in [0, 1]."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, grid, step)

    def line(self, msg: str) -> None:
        if self.enabled:
            self.text.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")
            self.text.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.text is not None:
            self.text.close()


def loop_settings(cfg) -> dict:
    """The loop's keyword arguments from the config: TRAIN.BATCH_SIZE, MAX_EPOCH, SNAPSHOT_INTERVAL, MAX_STEPS,
    LOG_INTERVAL, IMAGE_INTERVAL, LR_DECAY, LR_DECAY_EPOCHS, LR_COOLDOWN, CHECKPOINT_MINUTES, CHECKPOINT_STEPS,
    EMA_BN_BATCHES, PARALLEL_STEPS, WORKERS, SEED."""
    t = cfg.TRAIN
    return dict(batch_size=t.BATCH_SIZE, max_epoch=t.MAX_EPOCH, snapshot_interval=t.SNAPSHOT_INTERVAL,
                max_steps=t.MAX_STEPS, workers=cfg.WORKERS, seed=cfg.SEED, log_interval=t.LOG_INTERVAL,
                image_interval=t.IMAGE_INTERVAL, lr_decay=t.LR_DECAY, lr_decay_epochs=t.LR_DECAY_EPOCHS,
                lr_cooldown=t.LR_COOLDOWN,
                checkpoint_minutes=t.CHECKPOINT_MINUTES, checkpoint_steps=t.CHECKPOINT_STEPS,
                ema_bn_batches=t.EMA_BN_BATCHES, parallel_steps=t.PARALLEL_STEPS)


def data_fingerprint(dataset) -> dict:
    """What identifies the training data in a training state: item count, vocabulary size, a hash of the keys."""
    out = {"items": len(dataset) if dataset is not None else 0}
    if getattr(dataset, "n_words", None) is not None:
        out["n_words"] = int(dataset.n_words)
    if getattr(dataset, "filenames", None) is not None:
        out["keys_sha1"] = hashlib.sha1("\n".join(dataset.filenames).encode("utf-8")).hexdigest()
    return out


class BaseTrainer:
    """One training loop with clear phases; subclasses define the models and one step.

    Subclass API: `modules()`, `optimizers()`, `train_step(batch) -> {name: scalar tensor}`, `save_snapshot(epoch)`;
    optionally `end_of_epoch(epoch) -> {name: float}` (validation), `log_images(step)`, `make_batch(raw)`, and
    `extra_state()` / `load_extra_state()`.
    """

    memory = None  # IMLE's kept draws (trainers.common.DrawMemory, TRAIN.PAIRED_MEMORY) where a trainer keeps them
    draw_generator = None  # a TRAIN.PARALLEL_STEPS replica's generator for its step's draws (None: the global RNG)

    def __init__(self, cfg, rt: Runtime, output_dir: str, train_set, *, batch_size: int, max_epoch: int,
                 snapshot_interval: int, max_steps: int = 0, workers: int = 0, seed: int = 100,
                 log_interval: int = 100, image_interval: int = 1000, lr_decay: float = 1.0, lr_decay_epochs: int = 1,
                 lr_cooldown: float = 0.0, checkpoint_minutes: float = 0.0, checkpoint_steps: int = 0,
                 ema_bn_batches: int = 0, parallel_steps: int = 1, collate_fn=None, drop_last: bool = True):
        self.cfg = cfg
        self.rt = rt
        self.parallel_steps = check_parallel_steps(parallel_steps, rt)  # 1 where the runtime sets it aside
        if self.parallel_steps > 1 and self.memory is not None:
            raise InputError("TRAIN.PAIRED_MEMORY keeps one store of chosen draws, which the steps of "
                             f"TRAIN.PARALLEL_STEPS {self.parallel_steps} would all write: it needs TRAIN.PARALLEL_STEPS 1")
        if self.parallel_steps > 1:  # see Runtime.autocast_cache: other threads would drop a step's casts
            self.rt = dataclasses.replace(rt, autocast_cache=False)
        self.output_dir = output_dir
        self.model_dir = os.path.join(output_dir, "Model")
        self.image_dir = os.path.join(output_dir, "Image")
        self.train_set = train_set
        self.batch_size = batch_size
        self.max_epoch = max_epoch
        self.snapshot_interval = max(1, snapshot_interval)
        self.max_steps = max_steps
        self.workers = workers
        self.seed = seed
        self.log_interval = max(1, log_interval)
        self.image_interval = max(1, image_interval)
        self.lr_decay = lr_decay
        self.lr_decay_epochs = max(1, lr_decay_epochs)
        if not 0.0 <= float(lr_cooldown) <= 1.0:
            raise InputError(f"TRAIN.LR_COOLDOWN is {lr_cooldown}: expected a fraction of the run's steps in [0, 1]")
        self.lr_cooldown = float(lr_cooldown)
        self.checkpoint_seconds = max(0.0, float(checkpoint_minutes)) * 60.0
        self.checkpoint_steps = max(0, int(checkpoint_steps))
        self.ema_bn_batches = max(0, int(ema_bn_batches))
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self._total_steps = self.total_steps() if self.lr_cooldown else 0  # what the cooldown is a fraction of
        self.epoch = 0  # the next epoch to run
        self.epoch_batch = 0  # batches of `epoch` already trained (> 0 after a mid-epoch resume)
        self.step = 0  # optimiser steps done
        self.scaler = rt.grad_scaler()
        self._resume_rng = None  # RNG states to restore once a mid-epoch loader has been replayed
        self._last_checkpoint = time.monotonic()
        if rt.is_main:
            ensure_output_dir(output_dir, "run folder (--output_dir)")
            os.makedirs(self.model_dir, exist_ok=True)
            os.makedirs(self.image_dir, exist_ok=True)
        self.logger = RunLogger(os.path.join(output_dir, "Log"), enabled=rt.is_main)
        if rt.is_main:
            for path in remove_stale_temporaries(self.model_dir):
                self.note(f"removed {path}: the temporary file of a snapshot write that was interrupted")

    # ---- to be provided by subclasses -------------------------------------------------------------------------
    def modules(self) -> dict:
        raise NotImplementedError

    def optimizers(self) -> dict:
        raise NotImplementedError

    def train_step(self, batch) -> dict:
        raise NotImplementedError

    def save_snapshot(self, epoch: int) -> None:
        """Write the release-format files for `epoch` (rank 0 only is guaranteed by the caller)."""

    def sampling_generator(self):
        """A generator trainer's (`netG`, `ema`) weights to sample and save: the EMA copy when TRAIN.EMA, else G."""
        return self.ema.shadow if self.ema is not None else unwrap(self.netG)

    def sampling_forward(self, net, batch) -> None:
        """One forward of `net` (G or its EMA copy) on a prepared training batch, as sampling runs it (fresh noise,
        no gradients): what TRAIN.EMA_BN_BATCHES recomputes the EMA copy's BatchNorm statistics from. A family
        whose generator has BatchNorm layers and keeps an EMA provides it."""
        raise NotImplementedError(f"{type(self).__name__} has no sampling_forward: set TRAIN.EMA_BN_BATCHES to 0")

    def refresh_ema_statistics(self) -> int:
        """TRAIN.EMA_BN_BATCHES > 0: the EMA copy's BatchNorm statistics recomputed for its own weights from that
        many training batches (`EMA.recalibrate_batchnorm`), the loader and noise drawn apart from the training
        stream. Returns the batches used (0: no EMA, no BatchNorm, or the key is 0)."""
        ema = getattr(self, "ema", None)
        per_pass = len(self.epoch_loader(self.epoch)) if ema is not None and self.ema_bn_batches else 0
        if not per_pass:
            return 0
        passes = -(-self.ema_bn_batches // per_pass)  # the next epoch's order, a function of (SEED, epoch), each pass
        batches = itertools.islice(itertools.chain.from_iterable(self.epoch_loader(self.epoch) for _ in range(passes)),
                                   self.ema_bn_batches)
        with self.rng_isolated():
            return ema.recalibrate_batchnorm(lambda net, raw: self.sampling_forward(net, self.make_batch(raw)),
                                             batches)

    def in_first_epochs(self, n: int) -> bool:
        """Whether this epoch is one of the first `n` (a term's *_EPOCHS key; 0: every epoch)."""
        return not n or self.epoch < n

    def end_of_epoch(self, epoch: int) -> dict:
        return {}

    def log_images(self, step: int) -> None:
        """Write an image grid (rank 0 only is guaranteed by the caller)."""

    def make_batch(self, raw):
        return raw

    def total_steps(self) -> int:
        """The run's optimiser steps: TRAIN.MAX_STEPS where set and shorter, else MAX_EPOCH full epochs."""
        per_epoch = len(self.epoch_loader(0))
        total = self.max_epoch * per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    def cooldown_scale(self, step: int) -> float:
        """TRAIN.LR_COOLDOWN's factor for the step after `step` optimiser steps: 1, then a linear fall over the last
        LR_COOLDOWN of the run's steps (to 1 / (LR_COOLDOWN · steps) at the last step; warmup-stable-decay's
        decay, Hägele et al. 2024), so a run of a fixed length ends on small steps. 1 throughout where it is 0."""
        if not self.lr_cooldown:
            return 1.0
        return min(1.0, max(0.0, (self._total_steps - step) / (self.lr_cooldown * self._total_steps)))

    def set_learning_rates(self, epoch: int, step: int = 0) -> None:
        """Every optimiser's rate for the coming step: initial lr × LR_DECAY^(epoch // LR_DECAY_EPOCHS) (BERT-AttnGAN:
        0.98 every 10 epochs; 1.0, no decay, is AttnGAN's and SSA-GAN's constant rate) × `cooldown_scale(step)`.
        The initial rate is kept in each parameter group, so it travels with the optimiser's state through a
        resume; the rate is a function of (epoch, step) alone, so a resumed run gets the same rates."""
        scale = self.lr_decay ** (epoch // self.lr_decay_epochs) * self.cooldown_scale(step)
        for optimizer in self.optimizers().values():
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale

    def extra_state(self) -> dict:
        """What a resumed run needs beyond models, optimisers and RNG: IMLE's kept draws (`self.memory`) where the
        trainer keeps them."""
        return {"paired_memory": self.memory.state_dict()} if self.memory is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.memory is not None and "paired_memory" in state:
            self.memory.load_state_dict(state["paired_memory"])

    # ---- data ---------------------------------------------------------------------------------------------------
    def epoch_loader(self, epoch: int) -> DataLoader:
        """The loader for one epoch; its order depends only on (seed, epoch), which makes resumption exact."""
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        if self.rt.distributed:
            sampler = DistributedSampler(self.train_set, num_replicas=self.rt.world_size, rank=self.rt.rank,
                                         shuffle=True, seed=self.seed, drop_last=self.drop_last)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(self.train_set, generator=generator)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last,
                          num_workers=self.workers, collate_fn=self.collate_fn, generator=generator,
                          pin_memory=self.rt.device.type == "cuda", persistent_workers=False)

    # ---- state --------------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> str:
        return os.path.join(self.model_dir, STATE_FILE)

    def note(self, msg: str) -> None:
        """A line for the user (stdout) and the text log (rank 0 only)."""
        if self.rt.is_main:
            print(msg, flush=True)
            self.logger.line(msg)

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "epoch_batch": self.epoch_batch,
            "step": self.step,
            "models": {k: unwrap(m).state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "extra": self.extra_state(),
            "config": plain_config(self.cfg) if self.cfg is not None else None,
            "data": data_fingerprint(self.train_set),
        }

    def save_state(self) -> None:
        if self.rt.is_main:
            atomic_save(self.state_dict(), self.state_path)

    def resume(self, path: str | None = None) -> None:
        """Load a training state (default: this run's `Model/training_state.pth`) and continue after it.

        The current config's optimisation settings apply (each change is logged); a change that the state cannot
        honour raises `ResumeRefusedError` naming every such key with its old and new value, before anything loads.
        """
        path = path or self.state_path
        if not os.path.isfile(path):
            raise MissingFileError(f"--resume: no training state at {path} (a run writes it with its first snapshot; "
                                   "start without --resume, or name the state file: --resume PATH)")
        state = load_checkpoint(path, "training state", map_location=self.rt.device)
        epoch_batch = int(state.get("epoch_batch", 0))
        self.check_resume_config(path, state, mid_epoch=epoch_batch > 0)
        for k, m in self.modules().items():
            if k not in state["models"]:
                raise MissingKeyError(f"{path}: training state has no model '{k}' (has {sorted(state['models'])})")
            load_state_dict_strict(unwrap(m), state["models"][k], f"{path} (model '{k}')")
        for k, o in self.optimizers().items():
            # the restored optimiser keeps its moments; its hyperparameters (lr, betas, ...) are the current
            # config's, which the freshly built optimiser holds: the decay schedule restarts from them (initial_lr)
            current = [{h: v for h, v in g.items() if h not in ("params", "initial_lr")} for g in o.param_groups]
            o.load_state_dict(state["optimizers"][k])
            for group, hyper in zip(o.param_groups, current):
                group.update(hyper)
                group["initial_lr"] = hyper["lr"]
        if state["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        else:
            self.note("resume: the state has no fp16 grad-scaler state (TRAIN.AMP changed); starting a new scaler")
        self.epoch = int(state["epoch"])
        self.epoch_batch = epoch_batch
        self.step = int(state["step"])
        self.load_extra_state(state.get("extra", {}))
        restore_rng_state(state["rng"])
        self._resume_rng = state["rng"] if epoch_batch else None
        where = f", batch {epoch_batch} of the epoch" if epoch_batch else ""
        self.logger.line(f"resumed from {path} at epoch {self.epoch}{where}, step {self.step}")

    def check_resume_config(self, path: str, state: dict, mid_epoch: bool) -> None:
        """Refuse (one error, every key) or log the config changes since the state was written."""
        old = state.get("config")
        if old is None or self.cfg is None:
            if self.cfg is not None:
                self.note(f"resume: {path} records no config (written by an older version); config changes since "
                          "cannot be checked, the current config's optimiser settings apply")
            return
        changes = resume_changes(old, plain_config(self.cfg))
        refused = changes["refused"] + (changes["epoch_boundary"] if mid_epoch else [])
        if not mid_epoch:
            changes["honoured"] += changes["epoch_boundary"]
        refused = [f"{k} {a!r} -> {b!r}" for k, a, b in refused]
        if mid_epoch and changes["epoch_boundary"]:
            refused[-1] += " (the state was written mid-epoch: its loader position counts batches of the old order)"
        data_old, data_new = state.get("data"), data_fingerprint(self.train_set)
        if data_old is not None and data_old != data_new:
            refused.append(f"DATA_DIR {_flat_get(old, 'DATA_DIR')!r} ({_describe_data(data_old)}) -> "
                           f"{self.cfg.get('DATA_DIR')!r} ({_describe_data(data_new)})")
        if refused:
            raise ResumeRefusedError(
                f"{path}: cannot resume with a changed config, the training state was built with other values: "
                + "; ".join(refused) + ". Set them back to resume, or start a new run (another --output_dir).")
        for key, a, b in changes["honoured"]:
            self.note(f"resume: {key} {a!r} -> {b!r}")

    # ---- the loop -----------------------------------------------------------------------------------------------
    def check_finite(self, losses: dict) -> None:
        for name, value in losses.items():
            if not math.isfinite(value):
                last = self.state_path if os.path.exists(self.state_path) else "none written yet"
                raise NonFiniteLossError(
                    f"loss '{name}' is {value} at step {self.step} (epoch {self.epoch}); training stopped. "
                    f"The last good snapshot is kept: {last}. Try a lower learning rate, TRAIN.AMP=none, "
                    f"or resume from the snapshot with another seed."
                )

    def _resume_position(self, loader: DataLoader):
        """An iterator over `loader` after the `epoch_batch` batches a mid-epoch state had trained; they are drawn
        (so that workers' and the main process's random streams advance as in the uninterrupted run) and dropped,
        then the state's RNG states are restored."""
        batches = iter(loader)
        for i in range(self.epoch_batch):
            try:
                next(batches)
            except StopIteration:
                raise RuntimeError(f"the training state is at batch {self.epoch_batch} of epoch {self.epoch}, but "
                                   f"this epoch has only {i} batches") from None
        if self._resume_rng is not None:
            restore_rng_state(self._resume_rng)
            self._resume_rng = None
        return batches

    def rng_isolated(self):
        """A fork of the torch RNGs (the CPU's and this process's GPU's) for image grids and snapshots: what they
        draw (AttnGAN's conditioning augmentation samples there) leaves the training stream as it was, so a run's
        weights do not depend on TRAIN.IMAGE_INTERVAL or SNAPSHOT_INTERVAL."""
        device = self.rt.device
        return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def checkpoint_due(self, steps_done: int = 1) -> bool:
        """A rolling training state is due (TRAIN.CHECKPOINT_STEPS steps or CHECKPOINT_MINUTES since the last), after
        `steps_done` steps (a group of TRAIN.PARALLEL_STEPS) that ended at `self.step`."""
        k = self.checkpoint_steps
        if k and self.step // k > (self.step - steps_done) // k:
            return True
        return bool(self.checkpoint_seconds) and time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds

    def make_replica(self):
        """A copy of this trainer for TRAIN.PARALLEL_STEPS (`trainers.parallel`): its own trainable modules (as
        `modules()` names them, no EMA) with `GradCapture` optimisers (as `optimizers()` names them) and a
        `draw_generator` for every random draw of its step; frozen encoders and caches shared. A family that
        supports parallel steps provides it."""
        raise InputError(f"TRAIN.PARALLEL_STEPS > 1: {type(self).__name__} does not support parallel steps; use 1")

    def fit(self) -> None:
        from tqdm import tqdm

        done = False
        self._last_checkpoint = time.monotonic()
        first_epoch, started = self.epoch, time.monotonic()
        parallel = ParallelSteps(self, self.parallel_steps) if self.parallel_steps > 1 else None
        try:
            while self.epoch < self.max_epoch and not done:
                epoch = self.epoch
                self.set_learning_rates(epoch, self.step)
                for m in self.modules().values():
                    if any(p.requires_grad for p in m.parameters()):
                        m.train()
                loader = self.epoch_loader(epoch)
                bar = tqdm(total=len(loader), desc=f"epoch {epoch}", initial=self.epoch_batch,
                           disable=not self.rt.is_main, leave=False, dynamic_ncols=True)
                try:  # (the bar's line is cleared before an error message, too)
                    done = self._run_epoch(epoch, self._resume_position(loader), parallel, bar)
                finally:
                    bar.close()
                metrics = self.end_of_epoch(epoch)
                if self.rt.is_main and metrics:
                    self.logger.scalars(self.step, metrics, prefix="valid/")
                    print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
                self.epoch = epoch + 1
                self.epoch_batch = 0
                last = done or self.epoch >= self.max_epoch
                if self.epoch % self.snapshot_interval == 0 or last:
                    self.snapshot()
                if self.rt.is_main:
                    print(progress_line(self.epoch, self.max_epoch, first_epoch, time.monotonic() - started),
                          flush=True)
        finally:
            if parallel is not None:
                parallel.close()
            self.logger.close()

    def _run_epoch(self, epoch: int, raws, parallel, bar) -> bool:
        """The steps of one epoch over the loader's `raws`, in groups of TRAIN.PARALLEL_STEPS (`parallel`: the
        ParallelSteps, or None for one step at a time); True when TRAIN.MAX_STEPS ended the run."""
        done = False
        while not done:
            group = list(itertools.islice(raws, self.parallel_steps))
            if self.max_steps:
                group = group[:max(1, self.max_steps - self.step)]
            if not group:
                break
            if self.lr_cooldown:
                self.set_learning_rates(epoch, self.step)
            batches = [self.make_batch(raw) for raw in group]
            results = parallel.run(batches) if parallel else [self.train_step(batches[0])]
            for out in results:
                done = self._after_step({k: float(v) for k, v in out.items()}, bar) or done
            if not done and self.checkpoint_due(len(results)):
                self.save_state()
                self._last_checkpoint = time.monotonic()
                self.logger.line(f"rolling state at epoch {epoch}, batch {self.epoch_batch}, step {self.step}")
        return done

    def _after_step(self, losses: dict, bar) -> bool:
        """One step's bookkeeping (non-finite check, counters, bar, scalars, image grid); True at TRAIN.MAX_STEPS."""
        self.check_finite(losses)
        self.step += 1
        self.epoch_batch += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        if self.rt.is_main and self.step % self.log_interval == 0:
            self.logger.scalars(self.step, losses, prefix="train/")
        if self.rt.is_main and self.step % self.image_interval == 0:
            with self.rng_isolated():
                self.log_images(self.step)
        return bool(self.max_steps) and self.step >= self.max_steps

    def snapshot(self) -> None:
        """The EMA copy's BatchNorm statistics (TRAIN.EMA_BN_BATCHES; on every rank, as SyncBatchNorm needs), then
        the release-format files and the training state (both atomically, rank 0 only)."""
        n = self.refresh_ema_statistics()
        if n:
            self.logger.line(f"EMA BatchNorm statistics from {n} batches at epoch {self.epoch}")
        if self.rt.is_main:
            with self.rng_isolated():
                self.save_snapshot(self.epoch)
            self.save_state()
            self._last_checkpoint = time.monotonic()
            self.logger.line(f"snapshot at epoch {self.epoch}, step {self.step}: {self.model_dir}")


def progress_line(epoch: int, max_epoch: int, first_epoch: int, elapsed: float) -> str:
    """'epoch 4 of 12 done, 41 s an epoch in this run (snapshots included): about 5.5 min left', printed after
    each epoch (the bar shows the epoch's own steps): what remains, from the epochs this process has run."""
    per_epoch = elapsed / max(1, epoch - first_epoch)
    return (f"epoch {epoch} of {max_epoch} done, {per_epoch:.0f} s an epoch in this run (snapshots included): "
            f"about {duration_text(per_epoch * max(0, max_epoch - epoch))} left")


def duration_text(seconds: float) -> str:
    """'42 s' below 90 seconds, else '5.5 min' (the progress line's and the demo plan's times)."""
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _flat_get(tree: dict, dotted: str):
    """The value at a dotted key of a nested config (None where absent)."""
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _describe_data(fp: dict) -> str:
    parts = [f"{fp.get('items')} items"]
    if "n_words" in fp:
        parts.append(f"vocabulary {fp['n_words']}")
    if "keys_sha1" in fp:
        parts.append(f"keys sha1 {fp['keys_sha1'][:8]}")
    return ", ".join(parts)
