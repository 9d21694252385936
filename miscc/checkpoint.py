"""Checkpoint files: atomic writes, data-only loads, and the originals' state-dict quirks.

Every `.pth` is loaded with `torch.load(..., weights_only=True)`: a checkpoint is data, never code. Writes go to a
temporary file `.tmp_<8 random characters>.pth` in the same folder, flushed to disk, and are renamed into place, so an
interrupted save never leaves a truncated file under the real name; `remove_stale_temporaries` deletes the
temporary files a killed process left behind.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict

import torch

from miscc.errors import CheckpointError, MissingFileError
from miscc.files import TMP_PREFIX, atomic_path


TMP_SUFFIX = ".pth"
# exactly what `tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX)` names a file: 8 of [a-z0-9_]
TMP_PATTERN = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}" + re.escape(TMP_SUFFIX))


def atomic_save(obj, path: str) -> None:
    """`torch.save` to `path` via a temporary file and `os.replace`, fsync'ed (file, then folder)."""
    with atomic_path(path, TMP_SUFFIX, durable=True) as tmp:
        torch.save(obj, tmp)


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the temporary files of `atomic_save` that a killed process left in `folder` (only names matching
    `TMP_PATTERN`, only plain files); returns their paths. Call it before this process writes there."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if TMP_PATTERN.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed.append(path)
    return removed


def load_checkpoint(path: str, what: str = "checkpoint", map_location="cpu"):
    """Load a `.pth` file as data (`weights_only=True`). A missing file, a file that is no checkpoint and one that
    holds code (refused by the weights-only unpickler) are errors naming the file and `what` it should be."""
    if not path:
        raise MissingFileError(f"no path given for the {what}")
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = _load_failure_reason(e)
        if "GLOBAL" in reason:
            raise CheckpointError(f"{path}: refusing to load the {what}: it holds code or objects other than tensors "
                                  f"({reason}); checkpoints are loaded as data only (torch.load weights_only=True)"
                                  ) from e
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint for the {what} ({reason})") from e


def _load_failure_reason(e: Exception) -> str:
    """The reason in a `torch.load` error, without PyTorch's advice to load with weights_only=False and its URL."""
    text = str(e).strip()
    if "Weights only load failed" not in text:
        return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    lines = [line.strip() for line in text.split("\n")[1:] if line.strip()]
    lines = [line.split("WeightsUnpickler error:", 1)[-1].strip() for line in lines
             if not line.startswith("Check the documentation")]
    return " ".join(line for line in lines if line).rstrip(".") or "weights-only unpickler refused it"


def strip_module_prefix(state_dict: dict) -> OrderedDict:
    """Remove the `module.` prefix that (Distributed)DataParallel adds to every key (SSA-GAN, GAN-INT-CLS)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict, source: str = "state dict") -> None:
    """`load_state_dict(strict=True)` after removing a `module.` prefix; a file that does not fit is a
    `CheckpointError` naming `source`, the tensors that differ and the config keys that would explain them.

    Torch-0.3-era checkpoints (the released AttnGAN files) lack BatchNorm `num_batches_tracked`; current PyTorch
    fills those in itself, so they load strictly.
    """
    name = type(module).__name__
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        keys = sorted(map(str, state_dict))[:6] if isinstance(state_dict, dict) else []
        hint = (": it is a training state (for --resume), not a weights file" if isinstance(state_dict, dict)
                and "models" in state_dict and "optimizers" in state_dict else f" (found {keys or type(state_dict).__name__})")
        raise CheckpointError(f"{source} does not fit {name}: expected a state dict (parameter name -> tensor){hint}")
    state_dict = strip_module_prefix(state_dict)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(describe_mismatch(module, state_dict, source)) from e


# ----------------------------------------------------------------------------------------------------------------
# Why a state dict does not fit: which tensors differ, which architecture and config keys the file's shapes imply
# ----------------------------------------------------------------------------------------------------------------

def _dim(sd: dict, key: str, axis: int):
    t = sd.get(key)
    return int(t.shape[axis]) if isinstance(t, torch.Tensor) and t.dim() > axis else None


def _count(sd: dict, pattern: str):
    found = {m.group(1) for k in sd if (m := re.match(pattern, k))}
    return len(found) or None


def _sub(a, b):
    return a - b if a is not None and b is not None else None


def _div(a, b):
    return a // b if a is not None and b and a % b == 0 else None


def _attngan_g(sd):
    gf = _div(_dim(sd, "h_net1.upsample4.1.weight", 0), 2)  # GLU upBlock to ngf/16 = GF_DIM: 2·GF_DIM rows
    cond = _div(_dim(sd, "ca_net.fc.weight", 0), 4)
    fc_rows = _dim(sd, "h_net1.fc.0.weight", 0)
    base = {gf * 16 * 16 * 2: 64, gf * 16 * 4 * 2: 32}.get(fc_rows) if gf else None
    branches = _count(sd, r"h_net(\d+)\.")
    return {"GAN.GF_DIM": gf, "TEXT.EMBEDDING_DIM": _dim(sd, "ca_net.fc.weight", 1), "GAN.CONDITION_DIM": cond,
            "GAN.Z_DIM": _sub(_dim(sd, "h_net1.fc.0.weight", 1), cond), "TREE.BASE_SIZE": base,
            "TREE.BRANCH_NUM": branches,
            "GAN.R_NUM": (_count(sd, r"h_net2\.residual\.(\d+)\.") or 0) if branches and branches > 1 else None,
            "GAN.B_INIT_ATTENTION": any(k.startswith("h_net1.att.") for k in sd),
            "GAN.GRID_ATTENTION": _dim(sd, "h_net1.grid_pos", 2) or _dim(sd, "h_net1.grid_place", 2) or 0,
            "GAN.GRID_PLACE_FEATURES": "h_net1.grid_place" in sd,
            "GAN.GRID_NOISE": "h_net1.grid_noise.weight" in sd,
            "GAN.GRID_HEADS": "> 0" if "h_net1.grid_att.mha.q_proj_weight" in sd else 0,  # the count is not in shapes
            "GAN.POSITION_QUERIES": "h_net2.pos" in sd if branches and branches > 1 else None,
            "GAN.WORD_CONTEXT_LAYERS": _count(sd, r"word_context\.encoder\.layers\.(\d+)\.") or 0}


def _attngan_d(sd):
    ndf = _dim(sd, "img_code_s16.0.weight", 0)
    return {"GAN.DF_DIM": ndf, "TEXT.EMBEDDING_DIM": _sub(_dim(sd, "COND_DNET.jointConv.0.weight", 1), 8 * ndf)
            if ndf else None,
            "GAN.D_WORD_CONTEXT_LAYERS": _count(sd, r"COND_DNET\.word_grid\.context\.encoder\.layers\.(\d+)\.") or 0}


def _ssagan_g(sd):
    blocks = _count(sd, r"block(\d+)\.")
    return {"TRAIN.NF": _dim(sd, "conv_img.2.weight", 1), "GAN.Z_DIM": _dim(sd, "fc.weight", 1),
            "TEXT.EMBEDDING_DIM": _dim(sd, "block0.affine0.fc_gamma.linear1.weight", 1),
            "image size (TREE.BASE_SIZE·2^(TREE.BRANCH_NUM-1))": 2 ** (blocks + 1) if blocks else None}


def _ssagan_d(sd):
    nf = _dim(sd, "conv_img.weight", 0)
    return {"TRAIN.NF": nf,
            "TEXT.EMBEDDING_DIM": _sub(_dim(sd, "COND_DNET.joint_conv.0.weight", 1), 16 * nf) if nf else None,
            "image size (TREE.BASE_SIZE·2^(TREE.BRANCH_NUM-1))": 2 ** (_count(sd, r"block(\d+)\.") + 2)
            if _count(sd, r"block(\d+)\.") else None}


def _intcls_g(sd):
    convs = sorted((int(m.group(1)), k) for k in sd if (m := re.fullmatch(r"netG\.(\d+)\.weight", k))
                   and sd[k].dim() == 4)
    proj = _dim(sd, "projection.0.weight", 0) or 0
    return {"INTCLS.NGF": _dim(sd, convs[-2][1], 1) if len(convs) > 1 else None,
            "GAN.Z_DIM": _sub(_dim(sd, "netG.0.weight", 0), proj),
            "INTCLS.PROJECTED_DIM": proj or None, "text embedding size": _dim(sd, "projection.0.weight", 1)}


def _intcls_d(sd):
    return {"INTCLS.NDF": _dim(sd, "netD_1.0.weight", 0),
            "INTCLS.PROJECTED_DIM": _dim(sd, "projector.projection.0.weight", 0),
            "text embedding size": _dim(sd, "projector.projection.0.weight", 1)}


def _rnn_text(sd):
    hidden = _dim(sd, "rnn.weight_hh_l0", 1)
    gates = _div(_dim(sd, "rnn.weight_ih_l0", 0), hidden)
    return {"TEXT.EMBEDDING_DIM": 2 * hidden if hidden else None, "RNN_TYPE": {4: "LSTM", 3: "GRU"}.get(gates),
            "vocabulary size (n_words of captions.pickle)": _dim(sd, "encoder.weight", 0)}


def _image_encoder(sd):
    return {"TEXT.EMBEDDING_DIM": _dim(sd, "emb_cnn_code.weight", 0),
            "DAMSM.IMAGE_ENCODER": "inception" if any(k.startswith("Mixed_") for k in sd) else "small"}


# family: (what a file of it is, model classes, signature test on the keys, probe of config values)
_FAMILIES = {
    "attngan_g": ("an AttnGAN generator (MODEL attngan)", ("G_NET", "G_DCGAN"),
                  lambda ks: "ca_net.fc.weight" in ks, _attngan_g),
    "attngan_d": ("an AttnGAN discriminator", ("D_NET", "D_NET64", "D_NET128", "D_NET256"),
                  lambda ks: "img_code_s16.0.weight" in ks, _attngan_d),
    "ssagan_g": ("an SSA-GAN generator (MODEL ssagan)", ("NetG",),
                 lambda ks: "fc.weight" in ks and "conv_img.2.weight" in ks, _ssagan_g),
    "ssagan_d": ("an SSA-GAN discriminator", ("NetD",),
                 lambda ks: "conv_img.weight" in ks and any(k.startswith("COND_DNET.joint_conv") for k in ks),
                 _ssagan_d),
    "intcls_g": ("a GAN-INT-CLS generator (MODEL gan_int_cls)", ("generator",),
                 lambda ks: "netG.0.weight" in ks, _intcls_g),
    "intcls_d": ("a GAN-INT-CLS discriminator", ("discriminator",), lambda ks: "netD_1.0.weight" in ks, _intcls_d),
    "rnn_text": ("a DAMSM RNN text encoder (text_encoder*.pth)", ("RNN_ENCODER",),
                 lambda ks: "encoder.weight" in ks and "rnn.weight_ih_l0" in ks, _rnn_text),
    "bert_text": ("a BERT text encoder", ("BERT_ENCODER",), lambda ks: any(k.startswith("embedder.") for k in ks),
                  lambda sd: {}),
    "image": ("a DAMSM image encoder (image_encoder*.pth)", ("CNN_ENCODER", "SMALL_CNN_ENCODER"),
              lambda ks: "emb_cnn_code.weight" in ks, _image_encoder),
    "srcnn": ("an SRCNN (INTCLS.SRCNN_WEIGHTS)", ("SRCNN",), lambda ks: {"conv1.weight", "conv3.weight"} <= ks,
              lambda sd: {}),
}


def _family_of_state(sd: dict) -> str | None:
    keys = set(sd)
    return next((f for f, (_, _, sig, _) in _FAMILIES.items() if sig(keys)), None)


def _family_of_module(module: torch.nn.Module) -> str | None:
    name = type(module).__name__
    return next((f for f, (_, classes, _, _) in _FAMILIES.items() if name in classes), None)


def _fmt_shape(t) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def describe_mismatch(module: torch.nn.Module, state_dict: dict, source: str, shown: int = 3) -> str:
    """Why `state_dict` does not load into `module`: a headline naming `source`, the architecture or the config keys
    whose values the file's shapes imply (`looks like GAN.GF_DIM 32, config says 16`), then the tensors that differ
    (the first `shown` of each kind, with counts)."""
    name = type(module).__name__
    own = module.state_dict()
    file_family, model_family = _family_of_state(state_dict), _family_of_module(module)
    if file_family and model_family and file_family != model_family:
        return (f"{source} does not fit {name}: the file looks like {_FAMILIES[file_family][0]}, but the config builds "
                f"{_FAMILIES[model_family][0]} ({name}); check MODEL and the checkpoint path")
    mismatched = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    counts = ", ".join(f"{n} {what}" for n, what in [(len(mismatched), "of different size"),
                                                      (len(missing), "missing from the file"),
                                                      (len(unexpected), "unexpected in the file")] if n)
    headline = f"{source} does not fit {name} ({counts or 'tensors differ'})"
    if model_family:
        probe = _FAMILIES[model_family][3]
        found, says = probe(state_dict), probe(own)
        diffs = [f"{k} {found[k]}, config says {says[k]}" for k in says
                 if found.get(k) is not None and says[k] is not None and found[k] != says[k]]
        if diffs:
            headline += ": looks like " + "; ".join(diffs)
    lines = [headline]
    for k in mismatched[:shown]:
        lines.append(f"  size mismatch for {k}: file {_fmt_shape(state_dict[k])}, model {_fmt_shape(own[k])}")
    if len(mismatched) > shown:
        lines.append(f"  ... and {len(mismatched) - shown} more tensors of different size")
    for what, keys in (("missing from the file", missing), ("unexpected in the file", unexpected)):
        if keys:
            more = f" ... and {len(keys) - shown} more" if len(keys) > shown else ""
            lines.append(f"  {what}: {', '.join(keys[:shown])}{more}")
    return "\n".join(lines)
