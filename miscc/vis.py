"""Pictures: image grids and AttnGAN-style word-attention maps (`build_super_images` in A/code/miscc/utils.py).

The original drew with a relative font path (`Pillow/Tests/fonts/FreeMono.ttf`) and bound its batch size and word
count at import time; here the font is Pillow's built-in one and every size is an argument.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float [B, 3, H, W] → uint8 [B, H, W, 3], rounded ((x+1)·127.5; the originals truncated)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def pil_to_chw(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float [3, H, W] tensor in [0, 1] (what loggers take)."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def save_png(image: torch.Tensor, path: str) -> None:
    """Save one [3, H, W] image in [-1, 1]."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(to_uint8(image[None])[0]).save(path)


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def image_grid(images: torch.Tensor, captions: list[str] | None = None, ncol: int = 8, caption_height: int = 0,
               min_tile: int = 128, title: str | None = None) -> Image.Image:
    """A grid of [-1, 1] images (small ones upscaled to `min_tile`), each optionally with its caption underneath,
    and optionally a `title` (wrapped) above the grid."""
    if images.shape[-1] < min_tile:
        images = F.interpolate(images.float(), size=(min_tile, min_tile), mode="nearest")
    arr = to_uint8(images)
    n, h, w, _ = arr.shape
    wrap = max(8, w // 6)
    ncol = max(1, min(ncol, n))
    nrow = (n + ncol - 1) // ncol
    lines = [_wrap(c, wrap) for c in captions] if captions else None
    text_h = caption_height or (12 * max(len(ls) for ls in lines) + 4 if lines else 0)
    title_lines = _wrap(title, max(8, ncol * (w + 2) // 7)) if title else []
    top = 14 * len(title_lines) + 6 if title_lines else 0
    canvas = Image.new("RGB", (ncol * (w + 2), top + nrow * (h + text_h + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if title_lines:
        draw.multiline_text((3, 3), "\n".join(title_lines), fill=(0, 0, 0), font=_font(13), spacing=1)
    for i in range(n):
        r, c = divmod(i, ncol)
        x, y = c * (w + 2), top + r * (h + text_h + 2)
        canvas.paste(Image.fromarray(arr[i]), (x, y))
        if lines:
            draw.multiline_text((x + 1, y + h + 1), "\n".join(lines[i]), fill=(0, 0, 0), font=font, spacing=1)
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def attention_tile(base: Image.Image, attn_map: torch.Tensor) -> Image.Image:
    """One word's attention [h, w] over the square image `base`, as AttnGAN draws it: the map normalised to [0, 1],
    upsampled (bilinear) to the image size, grey, pasted over the image with alpha 210/255."""
    size = base.width
    m = attn_map.detach().float().cpu()
    m = (m - m.min()) / (m.max() - m.min() + 1e-12)
    m = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    heat = Image.fromarray((m.numpy() * 255).round().astype(np.uint8)).convert("RGB")
    return Image.composite(heat, base, Image.new("L", (size, size), 210))


def build_super_images(images: torch.Tensor, words: list[list[str]], attn_maps: list[torch.Tensor],
                       tile: int = 96, max_rows: int = 8, top_k: int | None = None) -> Image.Image:
    """Word-attention picture: per sample, the image followed by one tile per word showing where it attends.

    `images`: [B, 3, H, W] in [-1, 1]; `words[i]`: the words of caption i; `attn_maps[i]`: [T_i', h, w] attention of
    sample i (T_i' ≥ len(words[i])). As AttnGAN, each map is normalised to [0, 1], upsampled and pasted over the
    image with alpha 210/255, and the word is written above its tile. `top_k` keeps the k words with the highest
    peak attention (AttnGAN's `build_super_images2` for example sentences keeps 5).
    """
    rows = []
    font = _font(12)
    for i in range(min(len(words), max_rows)):
        img = F.interpolate(images[i:i + 1].float(), size=(tile, tile), mode="bilinear", align_corners=False)
        base = Image.fromarray(to_uint8(img)[0])
        maps = attn_maps[i][: len(words[i])].detach().float().cpu()
        order = list(range(len(words[i])))
        if top_k is not None:
            order = sorted(order, key=lambda j: -float(maps[j].max()))[:top_k]
            order.sort()
        row = Image.new("RGB", ((len(order) + 1) * (tile + 2), tile + 16), (255, 255, 255))
        row.paste(base, (0, 16))
        draw = ImageDraw.Draw(row)
        for col, j in enumerate(order, start=1):
            x = col * (tile + 2)
            row.paste(attention_tile(base, maps[j]), (x, 16))
            draw.text((x + 2, 1), words[i][j][:14], fill=(0, 0, 0), font=font)
        rows.append(row)
    width = max(r.width for r in rows)
    canvas = Image.new("RGB", (width, sum(r.height + 2 for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + 2
    return canvas
