"""DF-GAN checkpoint files: the released `state_epoch_*.pth` and bare generator state dicts.

The 2022 code (tobran/DF-GAN `code/lib/utils.py`, `save_models` / `load_model_opt` / `load_model_weights`) writes
`state_epoch_%03d.pth` = `{'model': {'netG', 'netD', 'netC'}, 'optimizers': {'optimizer_G', 'optimizer_D'},
'epoch'}` (`optimizer_D` holds NetD's then NetC's parameters), keys prefixed `module.` when trained with
DistributedDataParallel; the 2021 code saved bare `netG_%03d.pth` / `netD_%03d.pth`. Everything here loads with
`torch.load(weights_only=True)` (`miscc.checkpoint.load_checkpoint`), removes a `module.` prefix and loads strictly;
a file that does not fit is an error naming the file, the network, the tensors that differ and the config values
the file's shapes imply (`looks like TRAIN.NF 32, config says 8`).
"""
from __future__ import annotations

import re

import torch

from miscc.checkpoint import load_checkpoint, load_state_dict_strict, strip_module_prefix
from miscc.errors import CheckpointError
from models.dfgan.networks import NetG2021

STATE_EPOCH_NAME = "state_epoch_%03d.pth"  # DF-GAN 2022's training state, % epoch
NETD_NAME_2021 = "netD_%03d.pth"  # DF-GAN 2021's discriminator, % epoch


def is_state_epoch(obj) -> bool:
    """Whether `obj` is DF-GAN's `state_epoch_*.pth` layout (a dict whose 'model' dict holds 'netG')."""
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "netG" in obj["model"]


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def generator_state(obj, path: str) -> dict:
    """NetG's state dict from a loaded `state_epoch_*.pth` or a bare generator state dict."""
    if is_state_epoch(obj):
        return obj["model"]["netG"]
    if _is_tensor_dict(obj):
        return obj
    found = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{path}: not a DF-GAN generator file: expected a state_epoch_*.pth dict "
                          f"({{'model': {{'netG', 'netD', 'netC'}}, 'optimizers', 'epoch'}}) or a netG state dict, "
                          f"found {found}")


def file_version(state: dict) -> str | None:
    """'2022' or '2021' from a generator state dict's keys (None: neither, e.g. an SSA-GAN or AttnGAN file)."""
    keys = strip_module_prefix(state).keys()
    if any(k.startswith("GBlocks.") for k in keys):
        return "2022"
    if "block0.affine1.fc_gamma.linear1.weight" in keys and not any(".conv_mask." in k for k in keys):
        return "2021"
    return None


def _dim(sd: dict, key: str, axis: int):
    t = sd.get(key)
    return int(t.shape[axis]) if isinstance(t, torch.Tensor) and t.dim() > axis else None


def generator_settings(state: dict) -> dict:
    """The config values a DF-GAN generator state dict implies: TRAIN.NF, GAN.Z_DIM, TEXT.EMBEDDING_DIM and the
    image size (None where the file does not tell)."""
    sd = strip_module_prefix(state)
    version = file_version(sd)
    if version == "2022":
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"GBlocks\.(\d+)\.", k))}
        z = _dim(sd, "fc.weight", 1)
        cond = _dim(sd, "GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight", 1)
        return {"TRAIN.NF": _dim(sd, "to_rgb.1.weight", 1), "GAN.Z_DIM": z,
                "TEXT.EMBEDDING_DIM": cond - z if cond is not None and z is not None else None,
                "image size": 2 ** (len(blocks) + 2) if blocks else None}
    if version == "2021":
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"block(\d+)\.", k))}
        return {"TRAIN.NF": _dim(sd, "conv_img.1.weight", 1), "GAN.Z_DIM": _dim(sd, "fc.weight", 1),
                "TEXT.EMBEDDING_DIM": _dim(sd, "block0.affine0.fc_gamma.linear1.weight", 1),
                "image size": 2 ** (len(blocks) + 1) if blocks else None}
    return {}


def _version_of(net) -> str:
    return "2021" if isinstance(net, NetG2021) else "2022"


def load_generator_state(net, state: dict, source: str) -> None:
    """Strict load of a DF-GAN generator state dict into `net` (2022 or 2021 NetG), with a clear error."""
    want = _version_of(net)
    have = file_version(state) if _is_tensor_dict(state) else None
    if have is not None and have != want:
        raise CheckpointError(f"{source} is a DF-GAN {have} generator, but the config builds a DF-GAN {want} one "
                              f"(DFGAN.VERSION {want}); set DFGAN.VERSION={have}")
    if _is_tensor_dict(state) and have is None and any(".conv_mask." in k for k in state):
        raise CheckpointError(f"{source} looks like an SSA-GAN generator (MODEL ssagan), not a DF-GAN one; check MODEL "
                              "and the checkpoint path")
    try:
        load_state_dict_strict(net, state, source)
    except CheckpointError as e:
        found, says = generator_settings(state), generator_settings(net.state_dict())
        diffs = [f"{k} {found[k]}, config says {says[k]}" for k in says
                 if found.get(k) is not None and says[k] is not None and found[k] != says[k]]
        if not diffs:
            raise
        lines = str(e).split("\n")
        lines[0] = lines[0].split(": looks like")[0] + ": looks like " + "; ".join(diffs)
        raise CheckpointError("\n".join(lines)) from e


def load_generator(net, path: str):
    """Load TRAIN.NET_G into `net`: a released or written `state_epoch_*.pth` (its netG) or a bare netG state dict
    (`netG_epoch_*.pth` of this project, `netG_*.pth` of DF-GAN 2021). Returns `net`."""
    obj = load_checkpoint(path, "DF-GAN generator (TRAIN.NET_G)")
    load_generator_state(net, generator_state(obj, path), f"{path} (netG)")
    return net


def state_epoch_dict(netG, netD, netC, optG, optD, epoch: int) -> dict:
    """DF-GAN 2022's `state_epoch_*.pth` content (plain state dicts, no `module.`)."""
    return {"model": {"netG": netG.state_dict(), "netD": netD.state_dict(), "netC": netC.state_dict()},
            "optimizers": {"optimizer_G": optG.state_dict(), "optimizer_D": optD.state_dict()},
            "epoch": int(epoch)}


def load_state_epoch(path: str, netG, netD, netC, optG=None, optD=None) -> int:
    """Load a DF-GAN 2022 `state_epoch_*.pth` into the three networks (strictly) and, when given, the optimisers;
    returns its epoch."""
    obj = load_checkpoint(path, "DF-GAN training state (state_epoch_*.pth)")
    if not is_state_epoch(obj):
        found = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a DF-GAN state_epoch_*.pth (expected keys 'model' with 'netG', 'netD', "
                              f"'netC', 'optimizers', 'epoch'), found {found}")
    models = obj["model"]
    missing = [k for k in ("netG", "netD", "netC") if k not in models]
    if missing:
        raise CheckpointError(f"{path}: 'model' has no {', '.join(missing)} (has {sorted(models)})")
    load_generator_state(netG, models["netG"], f"{path} (model.netG)")
    load_state_dict_strict(netD, models["netD"], f"{path} (model.netD)")
    load_state_dict_strict(netC, models["netC"], f"{path} (model.netC)")
    for name, opt in (("optimizer_G", optG), ("optimizer_D", optD)):
        if opt is None:
            continue
        states = obj.get("optimizers", {})
        if name not in states:
            raise CheckpointError(f"{path}: 'optimizers' has no {name} (has {sorted(states)})")
        try:
            opt.load_state_dict(states[name])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: optimizers.{name} does not fit this model's optimiser ({e})") from e
    epoch = obj.get("epoch")
    if not isinstance(epoch, int):
        raise CheckpointError(f"{path}: 'epoch' must be an int, got {epoch!r}")
    return epoch
