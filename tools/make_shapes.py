"""Generate the built-in synthetic `shapes` dataset (see shared/reference/shapes_spec.md).

Every image shows one or two filled shapes (circle, square, upright equilateral triangle) of six colours, two sizes
and nine grid positions on a white, black or gray background, with ten template captions. Because the content of
every image is known exactly (`attributes.json`), a generator's faithfulness to its caption can be measured
(`parse_caption` recovers what a caption asks for). The files follow AttnGAN's birds/COCO layout, so every data code
path is exercised: `images/<key>.png`, `text/<key>.txt`, `{train,test}/filenames.pickle`,
`{train,test}/class_info.pickle`, `captions.pickle`, `example_filenames.txt`, `example_captions.txt`.

All randomness comes from one `numpy.random.Generator(seed)` and PNGs are written by PIL without timestamps, so the
same arguments give byte-identical files.

    python -m tools.make_shapes --out data/shapes --n_train 4000 --n_test 1000 --seed 0
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import pickle
import re
import sys
import time

import numpy as np
from PIL import Image

from miscc.errors import InputError, add_debug_argument, run_cli
from miscc.shapes_spec import (  # noqa: F401 (parse_caption, caption_lexicon: still importable from here)
    BACKGROUND_WORDS, BACKGROUNDS, CAPTIONS_PER_IMAGE, CAPTIONS_WITHOUT_POSITION, COLORS, EXAMPLE_CAPTIONS, LEADS,
    N_CLASSES, P_BACKGROUND, P_SIZE_WORD, PLAIN_TEMPLATES, POSITION_PHRASES, POSITION_TEMPLATES, POSITIONS, SHAPES,
    SIZE_WORDS, SIZES, caption_lexicon, class_id, parse_caption)
from miscc.text import build_vocabulary, encode_tokens, read_caption_file, tokenize_caption

HALF_EXTENT = {"small": 0.11, "large": 0.22}  # fraction of the width, before the +-10% jitter
SIZE_JITTER = 0.10
CELL_JITTER = 0.03  # fraction of the width
P_TWO_OBJECTS = 0.4
SUPERSAMPLE = 4  # coverage samples per pixel side, for anti-aliased edges
MIN_IMAGE_SIZE = 32
MAX_PLACEMENT_TRIES = 10_000



# --------------------------------------------------------------------------------------------------- scene sampling
def _sample_object(rng: np.random.Generator, width: int, colors: list[str], cells: list[int]) -> dict:
    """One object with its float geometry: centre (cx, cy), half-width h, half-height hy (triangle: sqrt(3)/2 h)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    color = colors[rng.integers(len(colors))]
    size = SIZES[rng.integers(len(SIZES))]
    cell = cells[rng.integers(len(cells))]
    h = HALF_EXTENT[size] * width * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
    hy = h * math.sqrt(3) / 2 if shape == "triangle" else h
    row, col = divmod(cell, 3)
    jx, jy = rng.uniform(-CELL_JITTER, CELL_JITTER, size=2) * width
    # Shift just enough to keep the shape inside the canvas.
    cx = min(max((2 * col + 1) / 6 * width + jx, h), width - h)
    cy = min(max((2 * row + 1) / 6 * width + jy, hy), width - hy)
    bbox = [math.floor(cx - h), math.floor(cy - hy), math.ceil(cx + h), math.ceil(cy + hy)]
    return {"shape": shape, "color": color, "size": size, "position": POSITIONS[cell], "bbox": bbox,
            "cx": cx, "cy": cy, "h": h, "hy": hy}


def _boxes_disjoint(a: list[int], b: list[int]) -> bool:
    """Half-open pixel boxes [x0, x1) x [y0, y1) share no pixel."""
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _sample_scene(rng: np.random.Generator, width: int) -> tuple[str, list[dict]]:
    """Background and 1-2 objects; a second object is resampled until its colour, cell and box differ."""
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    objects = [_sample_object(rng, width, list(COLORS), list(range(len(POSITIONS))))]
    if rng.random() < P_TWO_OBJECTS:
        first = objects[0]
        colors = [c for c in COLORS if c != first["color"]]
        cells = [i for i, p in enumerate(POSITIONS) if p != first["position"]]
        for _ in range(MAX_PLACEMENT_TRIES):
            second = _sample_object(rng, width, colors, cells)
            if _boxes_disjoint(first["bbox"], second["bbox"]):
                objects.append(second)
                break
        else:
            raise RuntimeError(f"could not place two disjoint objects on a {width}px canvas")
    return background, objects


def _coverage(obj: dict) -> np.ndarray:
    """Fraction of each pixel in the object's bbox that the shape covers (SUPERSAMPLE^2 samples per pixel)."""
    x0, y0, x1, y1 = obj["bbox"]
    s = SUPERSAMPLE
    xs = x0 + (np.arange((x1 - x0) * s) + 0.5) / s - obj["cx"]
    ys = y0 + (np.arange((y1 - y0) * s) + 0.5) / s - obj["cy"]
    h, hy = obj["h"], obj["hy"]
    if obj["shape"] == "circle":
        inside = xs[None, :] ** 2 + ys[:, None] ** 2 <= h * h
    elif obj["shape"] == "square":
        inside = (np.abs(ys) <= h)[:, None] & (np.abs(xs) <= h)[None, :]
    else:  # upright equilateral triangle: apex at -hy, base at +hy; half-width grows by 1/sqrt(3) per unit depth
        depth = ys + hy
        inside = (depth >= 0)[:, None] & (ys <= hy)[:, None] & (np.abs(xs)[None, :] <= depth[:, None] / math.sqrt(3))
    return inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))


def render_scene(background: str, objects: list[dict], image_size: int) -> np.ndarray:
    """uint8 [H, W, 3] image: background filled, each object alpha-blended by its anti-aliased coverage."""
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = BACKGROUNDS[background]
    for obj in objects:
        x0, y0, x1, y1 = obj["bbox"]
        alpha = _coverage(obj)[:, :, None]
        patch = img[y0:y1, x0:x1].astype(np.float64)
        img[y0:y1, x0:x1] = np.rint(patch + (np.asarray(COLORS[obj["color"]], dtype=np.float64) - patch) * alpha)
    return img


# ------------------------------------------------------------------------------------------------------- captions
def _noun_phrase(rng: np.random.Generator, obj: dict, definite: bool) -> str:
    words = []
    if rng.random() < P_SIZE_WORD:
        options = SIZE_WORDS[obj["size"]]
        words.append(options[rng.integers(len(options))])
    words += [obj["color"], obj["shape"]]
    article = "the" if definite else ("an" if words[0][0] in "aeiou" else "a")
    return " ".join([article, *words])


def _clause(rng: np.random.Generator, template: str, obj: dict) -> str:
    fields = {"np": "", "np_def": "", "pos": "", "lead": ""}
    if "{np}" in template:
        fields["np"] = _noun_phrase(rng, obj, definite=False)
    if "{np_def}" in template:
        fields["np_def"] = _noun_phrase(rng, obj, definite=True)
    if "{pos}" in template:
        phrases = POSITION_PHRASES[obj["position"]]
        fields["pos"] = phrases[rng.integers(len(phrases))]
    if "{lead}" in template:
        fields["lead"] = LEADS[rng.integers(len(LEADS))]
    return template.format(**fields)


def _caption(rng: np.random.Generator, background: str, objects: list[dict], with_position: bool) -> str:
    """One caption naming every object's colour and shape (and position if `with_position`), objects shuffled."""
    templates = POSITION_TEMPLATES if with_position else PLAIN_TEMPLATES
    first, rest = templates[rng.integers(len(templates))]
    order = rng.permutation(len(objects))
    text = " and ".join(_clause(rng, first if k == 0 else rest, objects[i]) for k, i in enumerate(order))
    if rng.random() < P_BACKGROUND:
        options = BACKGROUND_WORDS[background]
        bg = options[rng.integers(len(options))]
        forms = [f"{text} on a {bg} background", f"{text} and the background is {bg}"]
        if text.startswith("there is"):
            forms.append(f"on a {bg} background {text}")
        last = first if len(objects) == 1 else rest
        if with_position and last.endswith("{pos}"):
            forms.append(f"{text} of a {bg} background")
        text = forms[rng.integers(len(forms))]
    return text


def _captions(rng: np.random.Generator, background: str, objects: list[dict]) -> list[str]:
    plain = set(rng.choice(CAPTIONS_PER_IMAGE, CAPTIONS_WITHOUT_POSITION, replace=False).tolist())
    return [_caption(rng, background, objects, with_position=j not in plain) for j in range(CAPTIONS_PER_IMAGE)]


# ------------------------------------------------------------------------------------------------------- writing
def _write_pickle(path: str, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _keys(split: str, n: int) -> list[str]:
    digits = max(5, len(str(n - 1)))
    return [f"{split}_{i:0{digits}d}" for i in range(n)]


def _remove_stale(folder: str, ext: str, keep: set[str]) -> None:
    """Delete files a previous run named like ours (train_00012.png) that this run does not write."""
    for name in os.listdir(folder):
        stem, e = os.path.splitext(name)
        if e == ext and re.fullmatch(r"(train|test)_\d+", stem) and stem not in keep:
            os.remove(os.path.join(folder, name))


def generate_shapes(out_dir: str | os.PathLike, n_train: int = 4000, n_test: int = 1000, seed: int = 0,
                    image_size: int = 256) -> dict:
    """Write the shapes dataset under `out_dir` and return a summary dict.

    Files named like this generator's (`train_00012.png`) left in `out_dir` by an earlier, larger run are removed,
    so the folder holds exactly one dataset. Summary keys: out_dir, n_train, n_test, seed, image_size, n_words,
    n_files, total_bytes, example_oov (example-caption words missing from the vocabulary; empty unless the set is
    tiny).
    """
    for name, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1), ("image_size", image_size,
                                                                            MIN_IMAGE_SIZE)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"generate_shapes: {name} must be an integer >= {low}, got {value!r}")
    out_dir = os.fspath(out_dir)
    image_size = int(image_size)
    rng = np.random.default_rng(seed)
    dirs = {d: os.path.join(out_dir, d) for d in ("images", "text", "train", "test")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)

    splits = {"train": _keys("train", n_train), "test": _keys("test", n_test)}
    all_keys = set(splits["train"]) | set(splits["test"])
    _remove_stale(dirs["images"], ".png", all_keys)
    _remove_stale(dirs["text"], ".txt", all_keys)

    def write_image(key, background, objects):
        Image.fromarray(render_scene(background, objects, image_size), "RGB").save(
            os.path.join(dirs["images"], key + ".png"), format="PNG")

    # the scenes and captions are drawn in order from one RNG; the images are rendered and PNG-encoded on two
    # threads (numpy and zlib release the GIL): the same files in about two thirds of the time on 2 cores
    attributes, written = {}, []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for split, keys in splits.items():
            class_info = []
            for key in keys:
                background, objects = _sample_scene(rng, image_size)
                captions = _captions(rng, background, objects)
                written.append(pool.submit(write_image, key, background, objects))
                with open(os.path.join(dirs["text"], key + ".txt"), "w", encoding="ascii", newline="\n") as f:
                    f.write("\n".join(captions) + "\n")
                attributes[key] = {
                    "background": background,
                    "objects": [{k: o[k] for k in ("shape", "color", "size", "position", "bbox")} for o in objects],
                }
                class_info.append(class_id(objects[0]["shape"], objects[0]["color"]))
            _write_pickle(os.path.join(dirs[split], "filenames.pickle"), list(keys))
            _write_pickle(os.path.join(dirs[split], "class_info.pickle"), class_info)
        for future in written:
            future.result()  # an image that failed to write raises here

    # captions.pickle exactly as AttnGAN's load_text_data builds it: re-read the text files, vocab over train+test.
    tokens = {split: [cap for key in keys
                      for cap in read_caption_file(os.path.join(dirs["text"], key + ".txt"), CAPTIONS_PER_IMAGE)]
              for split, keys in splits.items()}
    ixtoword, wordtoix = build_vocabulary(tokens["train"] + tokens["test"])
    encoded = [[encode_tokens(t, wordtoix) for t in tokens[split]] for split in ("train", "test")]
    _write_pickle(os.path.join(out_dir, "captions.pickle"), [encoded[0], encoded[1], ixtoword, wordtoix])

    with open(os.path.join(out_dir, "attributes.json"), "w", encoding="ascii", newline="\n") as f:
        json.dump(attributes, f, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, "example_filenames.txt"), "w", encoding="ascii", newline="\n") as f:
        f.write("example_captions\n")
    with open(os.path.join(out_dir, "example_captions.txt"), "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(EXAMPLE_CAPTIONS) + "\n")

    n_files, total_bytes = 0, 0
    for root, _, files in os.walk(out_dir):
        n_files += len(files)
        total_bytes += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    example_oov = sorted({w for c in EXAMPLE_CAPTIONS for w in tokenize_caption(c)} - set(wordtoix))
    return {"out_dir": out_dir, "n_train": n_train, "n_test": n_test, "seed": seed, "image_size": image_size,
            "n_words": len(ixtoword), "n_files": n_files, "total_bytes": total_bytes, "example_oov": example_oov}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Generate the synthetic captioned `shapes` dataset.")
    parser.add_argument("--out", default="data/shapes", help="output folder (default: data/shapes)")
    parser.add_argument("--n_train", type=int, default=4000)
    parser.add_argument("--n_test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=256)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = generate_shapes(args.out, args.n_train, args.n_test, args.seed, args.image_size)
    except ValueError as e:
        parser.error(str(e))
    elapsed = time.perf_counter() - start
    out = summary["out_dir"]
    print(f"wrote {summary['n_train']} train + {summary['n_test']} test images ({summary['image_size']}px, "
          f"seed {summary['seed']}) to {out} in {elapsed:.1f}s")
    print(f"  {os.path.join(out, 'images')}/<key>.png, {os.path.join(out, 'text')}/<key>.txt "
          f"({CAPTIONS_PER_IMAGE} captions each)")
    print(f"  train|test/filenames.pickle, train|test/class_info.pickle ({N_CLASSES} classes), captions.pickle "
          f"({summary['n_words']} words incl. <end>), attributes.json, example_filenames.txt, example_captions.txt")
    print(f"  {summary['n_files']} files, {summary['total_bytes'] / 2**20:.1f} MiB")
    if summary["example_oov"]:
        print(f"  warning: example_captions.txt words not in the vocabulary (set too small): "
              f"{' '.join(summary['example_oov'])}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
