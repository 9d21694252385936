"""Two (or n) training steps at once on a few CPU cores (TRAIN.PARALLEL_STEPS; ours, not in the originals).

On a 2-core CPU the small convolutions of a `shapes` step leave the second core of PyTorch's intra-op threads half
idle: one step on 2 threads took 122 ms, two independent steps on one thread each 175 ms together (a Zen 4). So,
with TRAIN.PARALLEL_STEPS = n, the loop hands n consecutive batches to n threads (each with 1/n of the cores): the
trainer itself takes the first batch as usual, and n - 1 replicas (copies of its trainable modules, sharing the
frozen encoders and caches) take the others, starting from the same weights. A replica's optimisers are
`GradCapture`s: they keep the gradients instead of stepping. When all are done, the trainer's own optimisers take
the replicas' steps in batch order (Adam, its moments and step counts as if sequential), the EMA follows each, and
the replicas copy the new weights. Every batch still gets its own optimiser step, so the learning per image stays
that of the batch size (a batch of 2B would take half the steps); what changes is that batch i + j's gradients are
computed on the weights before batch i's step (staleness < n, as asynchronous SGD), and a replica's G reads its D
before that D's update of the same batch.

Determinism: the replicas draw their noise from their own generator, seeded from (SEED, step) at every group, and
the trainer's draws keep the global RNG, so a run is repeatable and a resumed run (states are written between
groups) goes on exactly as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from miscc.errors import InputError
from trainers.runtime import unwrap


class GradCapture:
    """An optimiser stand-in for a replica: `zero_grad` clears, `step` keeps the parameters' gradients (one list per
    step: SSA-GAN's D steps twice in a step, on its hinge loss and on MA-GP)."""

    def __init__(self, params):
        self.params = list(params)
        self.param_groups = [{"params": self.params}]  # what GradScaler and learning-rate code look at
        self.steps: list[list] = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self, closure=None) -> None:
        self.steps.append([p.grad for p in self.params])


def new_replica(trainer):
    """A shallow copy of `trainer` for ParallelSteps, sharing everything but: no EMA, its own draw generator. The
    family's `make_replica` then gives it copies of the trainable modules (`copy_module`) and GradCaptures."""
    rep = copy.copy(trainer)
    rep.ema, rep.draw_generator = None, torch.Generator(device=trainer.rt.device)
    return rep


def copy_module(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(unwrap(module))


def check_parallel_steps(n, rt) -> int:
    """TRAIN.PARALLEL_STEPS as an int >= 1 for the runtime `rt`. Parallel steps share out one process's CPU cores:
    on a GPU (whose kernels run a step in parallel already), under torchrun, or with fp16's grad scaler a value > 1
    is set aside with a warning, so a CPU config runs there unchanged."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"TRAIN.PARALLEL_STEPS is {n!r}: expected an integer >= 1 (1: one step at a time)")
    why = ("on " + str(rt.device) if rt.device.type != "cpu" else "under torchrun" if rt.distributed
           else "with fp16 (TRAIN.AMP)" if rt.amp == "fp16" else "")
    if n > 1 and why:
        warnings.warn(f"TRAIN.PARALLEL_STEPS {n} is for the cores of one CPU process: {why} the steps run one at a "
                      "time")
        return 1
    return n


def optimizer_params(opt) -> list:
    return [p for group in opt.param_groups for p in group["params"]]


@torch.no_grad()
def copy_weights(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """dst's parameters and buffers (BatchNorm statistics, spectral-norm vectors) set to src's."""
    dst_t = list(dst.parameters()) + list(dst.buffers())
    src_t = list(unwrap(src).parameters()) + list(unwrap(src).buffers())
    if len(dst_t) != len(src_t):
        raise RuntimeError(f"replica of {type(src).__name__}: {len(dst_t)} tensors against {len(src_t)}")
    torch._foreach_copy_(dst_t, src_t)


def group_seed(seed: int, step: int) -> int:
    """The seed of the replica generator that takes `step` (a function of the run's SEED and the step only)."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + 12345) % (2 ** 63)


class ParallelSteps:
    """The replicas and worker threads of a trainer with TRAIN.PARALLEL_STEPS = n > 1 (see the module docstring).

    `run(batches)` takes 1..n prepared batches (the trainer's steps `trainer.step` ... `+ len - 1`) and returns each
    one's losses; on return the trainer's weights, optimisers and EMA hold every step. The trainer's `step` counter
    is left to the caller (the loop's bookkeeping counts each step)."""

    def __init__(self, trainer, n: int):
        self.trainer = trainer
        self.replicas = [trainer.make_replica() for _ in range(n - 1)]
        total = torch.get_num_threads()
        self.threads = max(1, total // n)
        self.total_threads = total
        self.pool = ThreadPoolExecutor(n - 1, thread_name_prefix="parallel-step",
                                       initializer=torch.set_num_threads, initargs=(self.threads,))

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    @contextlib.contextmanager
    def _threads(self):
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(self.total_threads)

    def run(self, batches) -> list:
        tr = self.trainer
        if len(batches) == 1:
            return [tr.train_step(batches[0])]
        futures, own = [], tr.modules()
        for j, (rep, batch) in enumerate(zip(self.replicas, batches[1:]), start=1):
            for name, module in rep.modules().items():
                copy_weights(module, own[name])
            rep.epoch, rep.step = tr.epoch, tr.step + j
            rep.draw_generator.manual_seed(group_seed(tr.seed, tr.step + j))
            futures.append(self.pool.submit(rep.train_step, batch))
        with self._threads():
            first = tr.train_step(batches[0])
            rest = [f.result() for f in futures]
        for j, rep in enumerate(self.replicas[:len(futures)], start=1):
            self._apply(rep, tr.step + j)
        return [first] + rest

    def _apply(self, rep, step: int) -> None:
        """The trainer's optimisers take the replica's captured step (batch `step`); then its EMA."""
        tr = self.trainer
        if tr.lr_cooldown:
            tr.set_learning_rates(tr.epoch, step)
        own = tr.optimizers()
        for name, capture in rep.optimizers().items():  # none captured: that optimiser did not step (ADV_INTERVAL)
            opt = own[name]
            for grads in capture.steps:
                for p, g in zip(optimizer_params(opt), grads, strict=True):
                    p.grad = g
                opt.step()
                opt.zero_grad(set_to_none=True)
            capture.steps = []
        ema = getattr(tr, "ema", None)
        if ema is not None:
            ema.update(tr.netG, step)
