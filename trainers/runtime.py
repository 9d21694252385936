"""Where a run executes: device, processes (torchrun / DistributedDataParallel), mixed precision, seeds.

One code path for CPU and CUDA. A single process never touches `torch.distributed` (DF-GAN 2022 required a process
group even on one GPU, DF-GAN#31). Under `torchrun` the environment variables RANK / WORLD_SIZE / LOCAL_RANK start a
process group (NCCL on CUDA, gloo on CPU) and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from miscc.errors import InputError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp: str = "none"  # as TRAIN.AMP; 'auto' is resolved for the device (`resolve_amp`)
    # autocast keeps the low-precision copy of a weight for its later uses in a region; that cache is shared by the
    # process's threads, so steps in parallel threads (TRAIN.PARALLEL_STEPS) turn it off to stay repeatable
    autocast_cache: bool = True

    def __post_init__(self):
        self.amp = resolve_amp(self.amp, self.device)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """Autocast context for the configured precision (a no-op for 'none')."""
        dtype = AMP_DTYPES[self.amp]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype, cache_enabled=self.autocast_cache)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, active only for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX (read from /proc/cpuinfo; elsewhere bf16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: torch.device) -> str:
    """TRAIN.AMP for `device`: 'auto' becomes 'bf16' where the device has native bf16 (`native_bf16`), else 'none'."""
    if amp not in (*AMP_DTYPES, "auto"):
        raise InputError(f"TRAIN.AMP must be one of {sorted(AMP_DTYPES)} or 'auto', got '{amp}'")
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    return amp


def setup_runtime(gpu_id: int = 0, amp: str = "none") -> Runtime:
    """Pick the device and, under torchrun, join the process group. `gpu_id` < 0 forces the CPU; `amp` as
    `resolve_amp` (the Runtime resolves 'auto' for its device)."""
    resolve_amp(amp, torch.device("cpu"))  # a bad value fails before any process group starts
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = gpu_id >= 0 and torch.cuda.is_available()
    if world_size > 1:
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    else:
        device = torch.device("cuda", gpu_id) if use_cuda else torch.device("cpu")
    if amp == "fp16" and device.type == "cpu":
        raise InputError("TRAIN.AMP=fp16 needs a GPU; use bf16 on the CPU")
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank, amp=amp)


def shutdown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, numpy and torch; each rank gets its own stream (seed + rank) so noise differs across GPUs."""
    s = seed + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def start_runtime(cfg) -> Runtime:
    """`setup_runtime` for the config's GPU_ID and TRAIN.AMP, then `seed_everything` with its SEED (per rank)."""
    rt = setup_runtime(cfg.GPU_ID, cfg.TRAIN.AMP)
    seed_everything(cfg.SEED, rt.rank)
    return rt


def wrap_ddp(module: torch.nn.Module, rt: Runtime, sync_bn: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around `module` when distributed (SyncBatchNorm optional, CUDA only)."""
    if not rt.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    if sync_bn:
        if rt.device.type != "cuda":
            raise InputError("TRAIN.SYNC_BN needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU")
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (state dicts are always saved without `module.`)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def capture_rng_state() -> dict:
    """Every RNG a training step draws from (Python, numpy, torch, CUDA), in a form that
    `torch.load(weights_only=True)` accepts: tensors, lists, numbers and strings."""
    py = random.getstate()
    npy = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npy[0], torch.from_numpy(npy[1].astype(np.int64)), int(npy[2]), int(npy[3]), float(npy[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state`, for bit-identical resumption."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], npy[1].numpy().astype(np.uint32), int(npy[2]), int(npy[3]), float(npy[4])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def broadcast_parameters(module: torch.nn.Module, rt: Runtime) -> None:
    """Copy rank 0's parameters and buffers to every rank (what DDP does at construction)."""
    if rt.distributed:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(module: torch.nn.Module, rt: Runtime) -> None:
    """All-reduce-mean the gradients of `module` across ranks.

    Used for discriminators instead of DDP: a GAN discriminator runs several forwards (real, fake, mismatched) and
    its heads are called outside `forward`, which DDP's one-forward-one-backward reducer does not allow. The result
    is the same gradient DDP would produce. One all-reduce of the gradients flattened into one buffer (as DDP's
    buckets): a call per parameter cost a round trip each (tens of milliseconds a step with gloo on the CPU).
    """
    if not rt.distributed:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(rt.world_size)
    for g, averaged in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(averaged)
