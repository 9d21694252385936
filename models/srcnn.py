"""SRCNN super-resolution (Dong et al., "Image Super-Resolution Using Deep Convolutional Networks", ECCV 2014 /
TPAMI 2016), 9-5-5 on the luma channel, as in yjn870/SRCNN-pytorch, whose released `srcnn_x{2,3,4}.pth` state dicts
(`conv{1,2,3}.{weight,bias}`) load strictly with `load_srcnn`.

`upscale` enlarges images: bicubic upsampling by `scale` first, then SRCNN restores detail on Y (BT.601 studio
range, yjn870's `utils.py`), with Cb/Cr taken from the bicubic image. The GAN-INT-CLS fork that used these weights
(kmeagle1515/T2I `resolution_test.py`) instead followed yjn870's `test.py` evaluation recipe, which first
bicubic-DOWNscales by the scale (64 -> 21 px) and restores a 63x63 image, and it converted the generator's [-1, 1]
output with `(x * 255).astype(uint8)`, wrapping negative values around; here [-1, 1] input is mapped with
`round((x + 1) * 127.5)`. Back to RGB we use the exact inverse of yjn870's RGB->YCbCr (its own inverse is off by up
to ~1.2 levels) and round (yjn870 truncates with `astype(uint8)`), so outputs can differ from yjn870's by 1-2 levels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from miscc.checkpoint import load_checkpoint, load_state_dict_strict
from miscc.errors import CheckpointError, InputError


class SRCNN(nn.Module):
    """conv1 9x9 (c -> 64), ReLU, conv2 5x5 (64 -> 32), ReLU, conv3 5x5 (32 -> c), 'same' padding; 57,281 parameters
    for c = 1. Input and output are luma in [0, 1], already at the target size."""

    def __init__(self, num_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(num_channels, 64, kernel_size=9, padding=4)
        self.conv2 = nn.Conv2d(64, 32, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(32, num_channels, kernel_size=5, padding=2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x)))))


def load_srcnn(path: str, device="cpu") -> SRCNN:
    """An SRCNN in eval mode with the weights of a yjn870 state dict (`srcnn_x3.pth`; saved from CUDA, loaded on
    the CPU first); the channel count is read from `conv1.weight`."""
    state = load_checkpoint(path, "SRCNN weights")
    if not isinstance(state, dict) or "conv1.weight" not in {k.replace("module.", "", 1) for k in state}:
        keys = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an SRCNN state dict (expected conv1/conv2/conv3 weights, found {keys})")
    conv1 = next(v for k, v in state.items() if k.endswith("conv1.weight"))
    model = SRCNN(num_channels=conv1.shape[1])
    load_state_dict_strict(model, state, source=path)
    return model.to(device).eval()


# yjn870's `convert_rgb_to_ycbcr` (its weights were trained on this Y). Its R coefficient of Y, 64.738, differs from
# BT.601's 65.738 (white maps to Y = 234, not 235); we keep it, since the model expects it.
_RGB_TO_YCBCR = np.array([[64.738, 129.057, 25.064],
                          [-37.945, -74.494, 112.439],
                          [112.439, -94.154, -18.285]]) / 256.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
# The exact inverse. yjn870's `convert_ycbcr_to_rgb` uses BT.601's own inverse (298.082/256, ...), which does not
# invert the typo'd forward matrix: its round trip darkens colours by up to ~1.2 levels (at white).
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Studio-range YCbCr (Y in [16, 235]) from RGB in [0, 255], float [..., 3], as yjn870's `utils.py`."""
    return (rgb @ _RGB_TO_YCBCR.T.astype(rgb.dtype)) + _YCBCR_OFFSET.astype(rgb.dtype)


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_ycbcr` (exact, see above); not clipped."""
    return (ycbcr - _YCBCR_OFFSET.astype(ycbcr.dtype)) @ _YCBCR_TO_RGB.T.astype(ycbcr.dtype)


def _to_uint8_nhwc(images) -> tuple[np.ndarray, str]:
    """uint8 [N, H, W, 3] from a PIL image, a uint8 array [H, W, 3]/[N, H, W, 3], or a tensor [3, H, W]/[B, 3, H, W]
    (uint8, or float in [-1, 1] mapped with round((x + 1) * 127.5)); also returns how to give the result back."""
    if isinstance(images, Image.Image):
        return np.asarray(images.convert("RGB"))[None], "pil"
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(f"expected a uint8 array [H, W, 3] or [N, H, W, 3], got {images.dtype} {images.shape}")
        return (images[None] if images.ndim == 3 else images), ("hwc" if images.ndim == 3 else "nhwc")
    if torch.is_tensor(images):
        if images.dim() not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(f"expected a tensor [3, H, W] or [B, 3, H, W], got shape {tuple(images.shape)}")
        kind = "chw" if images.dim() == 3 else "bchw"
        x = images.detach().cpu()
        x = x[None] if x.dim() == 3 else x
        if x.dtype != torch.uint8:
            if not x.is_floating_point():
                raise TypeError(f"expected uint8 or float images in [-1, 1], got dtype {x.dtype}")
            lo, hi = float(x.min()), float(x.max())
            if lo < -1.01 or hi > 1.01:
                raise ValueError(f"float images must be in [-1, 1] (generator output), got range [{lo:.3g}, {hi:.3g}]")
            x = ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().numpy(), kind
    raise TypeError(f"expected a PIL image, a uint8 numpy array or a tensor, got {type(images).__name__}")


@torch.no_grad()
def upscale(images, model: SRCNN, scale: int = 3):
    """Enlarge images `scale` times: PIL bicubic upsampling, then `model` on Y/255 (prediction clamped to [0, 1]),
    Cb/Cr from the bicubic image, back to RGB, clipped and rounded to uint8.

    Accepts a PIL image (returns PIL), a uint8 array [H, W, 3] / [N, H, W, 3] (returns the same layout), or a tensor
    [3, H, W] / [B, 3, H, W], uint8 or float in [-1, 1] (returns uint8 tensor of the same layout, on the input's
    device). The model runs on its own device.
    """
    if not isinstance(scale, int) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    batch, kind = _to_uint8_nhwc(images)
    n, h, w, _ = batch.shape
    bicubic = np.stack([np.asarray(Image.fromarray(im).resize((w * scale, h * scale), resample=Image.BICUBIC))
                        for im in batch]).astype(np.float32)
    ycbcr = rgb_to_ycbcr(bicubic)
    param = next(model.parameters())
    y = torch.from_numpy(ycbcr[..., 0] / 255.0).to(device=param.device, dtype=param.dtype)[:, None]
    pred = model(y).clamp(0.0, 1.0)[:, 0].float().cpu().numpy() * 255.0
    ycbcr[..., 0] = pred
    out = np.clip(ycbcr_to_rgb(ycbcr), 0.0, 255.0).round().astype(np.uint8)
    if kind == "pil":
        return Image.fromarray(out[0])
    if kind in ("hwc", "nhwc"):
        return out[0] if kind == "hwc" else out
    t = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)
    return t[0] if kind == "chw" else t
