"""Reading any image file as the RGB picture a viewer shows."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def open_rgb(path: str, exif_orientation: bool = True) -> Image.Image:
    """An image file as 8-bit RGB, whatever its kind: CMYK and palette images converted, 16-bit greyscale scaled to
    8 bits (PIL's plain conversion clips it to white), transparency composited on white, and (with
    `exif_orientation`) the EXIF orientation tag applied, as a photo viewer shows the picture. Errors are PIL's."""
    with Image.open(path) as im:
        im.load()
        if exif_orientation:
            im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            scale = 1 / 256 if im.mode != "I" or np.asarray(im).max() > 255 else 1
            im = Image.fromarray(np.clip(np.asarray(im, dtype=np.float64) * scale, 0, 255).astype(np.uint8))
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB")
