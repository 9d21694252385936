"""The training infrastructure every trainer shares (DAMSM, AttnGAN, SSA-GAN, GAN-INT-CLS).

A trainer subclasses `BaseTrainer` and fills in four things: its modules and optimisers, one `train_step`, and the
release-format files it writes at a snapshot (`netG_epoch_%d.pth`, `text_encoder%d.pth`, ...). The base class owns
the loop and its phases — data order, logging, non-finite checks, snapshots, resumption — so that they are written
once:

- one training-state file (`Model/training_state.pth`: models, EMA, optimisers, grad scaler, epoch, step, RNG states),
  written atomically at every snapshot; `resume()` continues so that the next step is identical to an
  uninterrupted run (data order is a function of (SEED, epoch); RNG states are restored);
- torchrun / DDP: a DistributedSampler, only rank 0 writes files or logs;
- logging: a tqdm bar with the losses, TensorBoard scalars and image grids, a plain-text log;
- a non-finite loss stops the run with an error naming the step and the loss, before anything is saved, so the
  last snapshot stays the last good one.
"""
from __future__ import annotations

import copy
import math
import os
import time

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from miscc.checkpoint import atomic_save, load_checkpoint, load_state_dict_strict
from miscc.errors import MissingFileError, MissingKeyError, UserError, ensure_output_dir
from trainers.runtime import Runtime, capture_rng_state, restore_rng_state, unwrap

STATE_FILE = "training_state.pth"


class NonFiniteLossError(UserError, RuntimeError):
    """A loss became NaN or infinite; training stops and the last snapshot is kept."""


class EMA:
    """Exponential moving average of a model's parameters (AttnGAN: avg = 0.999·avg + 0.001·p).

    Buffers (BatchNorm running statistics) are copied from the live model, as AttnGAN's saved `netG_epoch_%d.pth`
    holds EMA parameters with the live model's buffers. Given the optimiser step, the decay warms up as
    min(decay, (1 + step) / (10 + step)) (as TensorFlow's ExponentialMovingAverage with num_updates): AttnGAN's
    fixed 0.999 still weights the random initial G by 0.999^600 = 55% after 600 steps, which ruins the samples of
    short runs; after a few thousand steps the two agree.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(unwrap(model)).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        model = unwrap(model)
        decay = self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))
        for avg, p in zip(self.shadow.parameters(), model.parameters()):
            avg.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for avg, b in zip(self.shadow.buffers(), model.buffers()):
            avg.copy_(b)

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
    LOG_INTERVAL, IMAGE_INTERVAL, LR_DECAY, LR_DECAY_EPOCHS, WORKERS and SEED."""
    t = cfg.TRAIN
    return dict(batch_size=t.BATCH_SIZE, max_epoch=t.MAX_EPOCH, snapshot_interval=t.SNAPSHOT_INTERVAL,
                max_steps=t.MAX_STEPS, workers=cfg.WORKERS, seed=cfg.SEED, log_interval=t.LOG_INTERVAL,
                image_interval=t.IMAGE_INTERVAL, lr_decay=t.LR_DECAY, lr_decay_epochs=t.LR_DECAY_EPOCHS)


class BaseTrainer:
    """One training loop with clear phases; subclasses define the models and one step.

    Subclass API: `modules()`, `optimizers()`, `train_step(batch) -> {name: scalar tensor}`, `save_snapshot(epoch)`;
    optionally `end_of_epoch(epoch) -> {name: float}` (validation), `log_images(step)`, `make_batch(raw)`, and
    `extra_state()` / `load_extra_state()`.
    """

    def __init__(self, cfg, rt: Runtime, output_dir: str, train_set, *, batch_size: int, max_epoch: int,
                 snapshot_interval: int, max_steps: int = 0, workers: int = 0, seed: int = 100,
                 log_interval: int = 100, image_interval: int = 1000, lr_decay: float = 1.0, lr_decay_epochs: int = 1,
                 collate_fn=None, drop_last: bool = True):
        self.cfg = cfg
        self.rt = rt
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
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.epoch = 0  # the next epoch to run
        self.step = 0  # optimiser steps done
        self.scaler = rt.grad_scaler()
        if rt.is_main:
            ensure_output_dir(output_dir, "run folder (--output_dir)")
            os.makedirs(self.model_dir, exist_ok=True)
            os.makedirs(self.image_dir, exist_ok=True)
        self.logger = RunLogger(os.path.join(output_dir, "Log"), enabled=rt.is_main)

    # ---- to be provided by subclasses -------------------------------------------------------------------------
    def modules(self) -> dict:
        raise NotImplementedError

    def optimizers(self) -> dict:
        raise NotImplementedError

    def train_step(self, batch) -> dict:
        raise NotImplementedError

    def save_snapshot(self, epoch: int) -> None:
        """Write the release-format files for `epoch` (rank 0 only is guaranteed by the caller)."""

    def end_of_epoch(self, epoch: int) -> dict:
        return {}

    def log_images(self, step: int) -> None:
        """Write an image grid (rank 0 only is guaranteed by the caller)."""

    def make_batch(self, raw):
        return raw

    def set_learning_rates(self, epoch: int) -> None:
        """Step decay of every optimiser: lr = initial lr × LR_DECAY^(epoch // LR_DECAY_EPOCHS) (BERT-AttnGAN:
        0.98 every 10 epochs; 1.0, no decay, is AttnGAN's and SSA-GAN's constant rate). The initial rate is kept
        in each parameter group, so it travels with the optimiser's state through a resume."""
        scale = self.lr_decay ** (epoch // self.lr_decay_epochs)
        for optimizer in self.optimizers().values():
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

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

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "models": {k: unwrap(m).state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "extra": self.extra_state(),
        }

    def save_state(self) -> None:
        if self.rt.is_main:
            atomic_save(self.state_dict(), self.state_path)

    def resume(self, path: str | None = None) -> None:
        """Load a training state (default: this run's `Model/training_state.pth`) and continue after it."""
        path = path or self.state_path
        if not os.path.isfile(path):
            raise MissingFileError(f"--resume: no training state at {path} (a run writes it with its first snapshot; "
                                   "start without --resume, or name the state file: --resume PATH)")
        state = load_checkpoint(path, "training state", map_location=self.rt.device)
        for k, m in self.modules().items():
            if k not in state["models"]:
                raise MissingKeyError(f"{path}: training state has no model '{k}' (has {sorted(state['models'])})")
            load_state_dict_strict(unwrap(m), state["models"][k], f"{path} (model '{k}')")
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.load_extra_state(state.get("extra", {}))
        restore_rng_state(state["rng"])
        self.logger.line(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

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

    def fit(self) -> None:
        from tqdm import tqdm

        done = False
        while self.epoch < self.max_epoch and not done:
            epoch = self.epoch
            self.set_learning_rates(epoch)
            for m in self.modules().values():
                if any(p.requires_grad for p in m.parameters()):
                    m.train()
            loader = self.epoch_loader(epoch)
            bar = tqdm(loader, desc=f"epoch {epoch}", disable=not self.rt.is_main, leave=False, dynamic_ncols=True)
            for raw in bar:
                losses = {k: float(v) for k, v in self.train_step(self.make_batch(raw)).items()}
                self.check_finite(losses)
                self.step += 1
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
                if self.rt.is_main and self.step % self.log_interval == 0:
                    self.logger.scalars(self.step, losses, prefix="train/")
                if self.rt.is_main and self.step % self.image_interval == 0:
                    self.log_images(self.step)
                if self.max_steps and self.step >= self.max_steps:
                    done = True
                    break
            bar.close()
            metrics = self.end_of_epoch(epoch)
            if self.rt.is_main and metrics:
                self.logger.scalars(self.step, metrics, prefix="valid/")
                print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
            self.epoch = epoch + 1
            last = done or self.epoch >= self.max_epoch
            if self.epoch % self.snapshot_interval == 0 or last:
                self.snapshot()
        self.logger.close()

    def snapshot(self) -> None:
        """Release-format files, then the training state (both atomically, rank 0 only)."""
        if self.rt.is_main:
            self.save_snapshot(self.epoch)
            self.save_state()
            self.logger.line(f"snapshot at epoch {self.epoch}, step {self.step}: {self.model_dir}")
