"""Markdown reports of evaluation results (JSONL written by `eval.protocols`) and captioned sample grids."""
from __future__ import annotations

import json
import os

import torch
from PIL import Image, ImageDraw, ImageFont

from eval.images import to_uint8
from miscc.errors import InputError, MissingFileError


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap to `width` pixels (a single over-long word gets its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(lines[-1] + " " + word, font=font) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def save_caption_grid(images, captions: list[str] | None, path: str, columns: int = 4, cell: int = 128,
                      font_size: int = 11, max_lines: int = 4) -> str:
    """Save images [N, 3, H, W] (uint8 or float [-1, 1]) as a grid, each caption wrapped under its image."""
    images = to_uint8(torch.as_tensor(images)).cpu()
    n = images.shape[0]
    if captions is not None and len(captions) != n:
        raise ValueError(f"save_caption_grid: {len(captions)} captions for {n} images")
    if n == 0:
        raise ValueError("save_caption_grid: no images")
    columns = max(1, min(columns, n))
    rows = (n + columns - 1) // columns
    font = _font(font_size)
    line_h = font_size + 3
    text_h = (max_lines * line_h + 4) if captions is not None else 0
    pad = 4
    canvas = Image.new("RGB", (columns * (cell + pad) + pad, rows * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        x = pad + (i % columns) * (cell + pad)
        y = pad + (i // columns) * (cell + text_h + pad)
        tile = Image.fromarray(images[i].permute(1, 2, 0).numpy(), "RGB").resize((cell, cell), Image.BICUBIC)
        canvas.paste(tile, (x, y))
        draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=(190, 190, 190))  # white images need an edge
        if captions is not None:
            lines = _wrap(str(captions[i]), font, cell, draw)
            if len(lines) > max_lines:
                lines = lines[:max_lines]
                while " " in lines[-1] and draw.textlength(lines[-1] + " ...", font=font) > cell:
                    lines[-1] = lines[-1].rsplit(" ", 1)[0]
                lines[-1] += " ..."
            for j, line in enumerate(lines):
                draw.text((x, y + cell + 2 + j * line_h), line, fill="black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)
    return path


def read_jsonl(path: str) -> list[dict]:
    """All records of a results file; a malformed line is an error naming the file and line number."""
    if not os.path.isfile(path):
        raise MissingFileError(f"results file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{i}: not a JSON line ({e})") from e
    return records


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def _short(v, n: int = 12) -> str:
    return "" if not v else str(v)[:n]


def write_report(jsonl_path: str, out_md: str, samples_grid_png: str | None = None) -> str:
    """Markdown: a table of the latest result per (protocol, checkpoint) with its provenance, then the sample grid.

    The grid path (given, or the `samples_grid` of the latest result) is linked relative to the report.
    """
    records = read_jsonl(jsonl_path)
    latest: dict[tuple, dict] = {}
    for r in records:
        latest[(r.get("protocol"), r.get("checkpoint"))] = r
    rows = sorted(latest.values(), key=lambda r: r.get("time", ""), reverse=True)
    lines = ["# Evaluation report", "", f"Source: `{os.path.abspath(jsonl_path)}` ({len(records)} records; the "
             "latest per protocol and checkpoint below).", ""]
    if rows:
        lines += ["| protocol | value | std | N | real set | extractor (sha256) | dtype | seed | checkpoint | time |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            real = r.get("real_statistics") or r.get("real") or ""
            if r.get("real_split") and real:
                real = f"{os.path.basename(str(real))} ({r['real_split']}, N={r.get('real_n')})"
            ext = r.get("feature_extractor") or ""
            if r.get("feature_extractor_sha256"):
                ext += f" ({_short(r['feature_extractor_sha256'])})"
            lines.append(" | ".join([
                f"| {r.get('protocol')}", _fmt(r.get("value")), _fmt(r.get("std")), str(r.get("n")), real, ext,
                str(r.get("dtype") or ""), _fmt(r.get("seed")), os.path.basename(str(r.get("checkpoint") or "")),
                f"{r.get('time', '')} |"]))
        lines += ["", "## Provenance", ""]
        for r in rows:
            keep = {k: v for k, v in r.items() if k not in ("value", "std", "details")}
            lines.append(f"- **{r.get('protocol')}**: " + ", ".join(f"{k}=`{v}`" for k, v in sorted(keep.items())
                                                                      if v is not None))
            if r.get("details"):
                lines.append("  - details: " + ", ".join(f"{k}={_fmt(v)}" for k, v in r["details"].items()))
    else:
        lines.append("No results yet.")
    grid = samples_grid_png or next((r.get("samples_grid") for r in rows if r.get("samples_grid")), None)
    if grid:
        rel = os.path.relpath(os.path.abspath(grid), os.path.dirname(os.path.abspath(out_md)))
        lines += ["", "## Samples", "", f"![samples with their captions]({rel})"]
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
    with open(out_md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return out_md
